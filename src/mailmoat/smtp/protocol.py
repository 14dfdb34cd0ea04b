"""aiosmtpd's SMTP protocol with what a public MX needs on top.

- connection limits, overall and per client address, answered with 421;
- the ``AUTH=`` parameter Exchange adds to MAIL FROM is accepted and ignored
  (RFC 4954 allows a server without AUTH to ignore it; aiosmtpd would refuse
  the command with 555);
- bare CR and LF in message content are turned into CRLF, so that the bytes
  mailmoat relays can never be read as an end of data by a later server (SMTP
  smuggling). aiosmtpd itself ends DATA only on CRLF.CRLF;
- no AUTH: mailmoat authenticates nobody, so the command gets 502;
- an error limit, as Postfix's ``smtpd_hard_error_limit``: a client that has had
  that many error replies since it last got mail accepted is told ``421`` and
  disconnected, so that refused commands cannot be sent for free forever.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope

from mailmoat import metrics
from mailmoat.domain.policy import Profile
from mailmoat.services.intake import RecipientContext

_AUTH_PARAM = re.compile(r"\s+AUTH=\S*", re.IGNORECASE)
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# The common case of a path: <dot-atom@ldh-domain>, ASCII. Anything else goes to
# aiosmtpd's full RFC 5322 parser, which gives the same answer more slowly.
_PLAIN_PATH = re.compile(
    rf"\s*<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>\s*+(?!\()(.*)", re.DOTALL
)
_BARE_NEWLINE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
TOO_MANY_ERRORS = "421 4.7.0 Too many errors, closing the connection"
NO_AUTH = "502 5.5.1 AUTH is not available: this server receives mail without authentication"

log = logging.getLogger(__name__)


def counts_as_error(reply: str) -> bool:
    """A final 4xx or 5xx line, except 421 (the session ends anyway) and 452: a
    recipient asked to come back in another transaction did nothing wrong."""
    return (
        len(reply) >= 4
        and reply[0] in "45"
        and reply[3] != "-"
        and not reply.startswith(("421", "452"))
    )


class TransactionEnvelope(Envelope):
    """The envelope plus what RCPT learnt about each accepted recipient."""

    def __init__(self) -> None:
        super().__init__()
        self.contexts: list[RecipientContext] = []
        self.profile: Profile | None = None


class ConnectionLimits:
    def __init__(self, total: int, per_ip: int) -> None:
        self.total = total
        self.per_ip = per_ip
        self.open = 0
        self.by_ip: Counter[str] = Counter()

    def acquire(self, ip: str | None) -> str | None:
        """Take a place; returns the refusal text when there is none.

        ``ip`` is None behind a PROXY-protocol load balancer, where every
        connection comes from the balancer: only the overall limit applies then,
        and per-client limits belong in the balancer.
        """
        if self.open >= self.total:
            return "421 4.7.0 Too many connections, try again later"
        if ip is not None and self.by_ip[ip] >= self.per_ip:
            return "421 4.7.0 Too many connections from your address, try again later"
        self.open += 1
        if ip is not None:
            self.by_ip[ip] += 1
        return None

    def release(self, ip: str | None) -> None:
        self.open -= 1
        if ip is not None:
            self.by_ip[ip] -= 1
            if self.by_ip[ip] <= 0:
                del self.by_ip[ip]


def normalize_newlines(data: bytes) -> bytes:
    crlf = data.count(b"\r\n")
    if data.count(b"\n") == crlf and data.count(b"\r") == crlf:
        return data  # the usual case, found without a regular expression
    return _BARE_NEWLINE.sub(b"\r\n", data)


class GatewaySMTP(SMTP):
    def __init__(
        self, handler: Any, *, limits: ConnectionLimits, max_errors: int = 20, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits
        self.max_errors = max_errors
        self.errors = 0  # error replies since mail was last accepted in this session
        self._last_reply = ""

    async def push(self, status: AnyStr) -> None:
        await super().push(status)
        reply = status if isinstance(status, str) else status.decode("utf-8", "replace")
        self._last_reply = reply
        if not counts_as_error(reply):
            return
        self.errors += 1
        transport = self.transport
        if self.max_errors and self.errors >= self.max_errors and transport is not None:
            if transport.is_closing():
                return
            assert self.session is not None
            log.info("closing the session of %s after %d errors", self.session.peer, self.errors)
            await super().push(TOO_MANY_ERRORS)
            transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        await super().smtp_DATA(arg)
        if self._last_reply.startswith("250"):
            self.errors = 0

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push(NO_AUTH)

    def _create_envelope(self) -> Envelope:
        return TransactionEnvelope()

    async def _handle_client(self) -> None:
        assert self.session is not None
        peer = self.session.peer
        ip = None if self._proxy_timeout else str(peer[0] if isinstance(peer, tuple) else peer)
        refusal = self.limits.acquire(ip)
        if refusal is not None:
            await self.push(refusal)
            if self.transport is not None:
                self.transport.close()
            return
        metrics.SMTP_SESSIONS.inc()
        try:
            await super()._handle_client()
        finally:
            metrics.SMTP_SESSIONS.dec()
            self.limits.release(ip)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = _PLAIN_PATH.fullmatch(arg) if arg else None
        if plain is not None:
            address = plain.group(1)
            local = address.rpartition("@")[0]
            if not self.local_part_limit or len(local) <= self.local_part_limit:
                return address, plain.group(2)
        return super()._getaddr(arg)

    async def smtp_MAIL(self, arg: str) -> None:
        if arg:
            arg = _AUTH_PARAM.sub("", arg)
        await super().smtp_MAIL(arg)
