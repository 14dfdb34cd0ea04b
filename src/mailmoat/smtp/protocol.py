"""aiosmtpd's SMTP protocol with what a public MX needs on top.

- connection limits, overall and per client address, answered with 421;
- the ``AUTH=`` parameter Exchange adds to MAIL FROM is accepted and ignored
  (RFC 4954 allows a server without AUTH to ignore it; aiosmtpd would refuse
  the command with 555);
- DATA is read by smtp/data.py rather than aiosmtpd: long lines and bare LF
  are accepted, large messages go to a temporary file, whole-message refusals
  reach the handler (which records them). DATA still ends only on CRLF.CRLF;
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
from mailmoat.smtp.data import IncomingFiles, Received, Refusal, read_data

_AUTH_PARAM = re.compile(r"\s+AUTH=\S*", re.IGNORECASE)
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# The common case of a path: <dot-atom@ldh-domain>, ASCII. Anything else goes to
# aiosmtpd's full RFC 5322 parser, which gives the same answer more slowly.
_PLAIN_PATH = re.compile(
    rf"\s*<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>\s*+(?!\()(.*)", re.DOTALL
)
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
        # Set by DATA: the content as received, or why it was refused as a whole.
        self.received: Received | None = None
        self.refusal: Refusal | None = None


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


class GatewaySMTP(SMTP):
    def __init__(
        self,
        handler: Any,
        *,
        limits: ConnectionLimits,
        incoming: IncomingFiles,
        max_line_length: int,
        max_errors: int = 20,
        **kwargs: Any,
    ) -> None:
        # aiosmtpd sizes its stream reader by this; a longer line arrives in parts.
        self.line_length_limit = max_line_length + 2
        super().__init__(handler, **kwargs)
        self.limits = limits
        self.incoming = incoming
        self.max_line_length = max_line_length
        self.max_errors = max_errors
        self.errors = 0  # error replies since mail was last accepted in this session

    async def push(self, status: AnyStr) -> None:
        await super().push(status)
        reply = status if isinstance(status, str) else status.decode("utf-8", "replace")
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

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, reading the content with bounded memory (smtp/data.py).

        A message refused as a whole (too big, a line too long) still goes to the
        handler, with ``envelope.refusal`` set, so that its refusal is recorded."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert isinstance(envelope, TransactionEnvelope)
        if not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        outcome = await read_data(
            self._reader,
            self.incoming,
            size_limit=self.data_size_limit,
            max_line=self.max_line_length,
        )
        try:
            if isinstance(outcome, Received):
                envelope.received = outcome
            else:
                envelope.refusal = outcome
            status = await self._call_handler_hook("DATA")
        finally:
            if isinstance(outcome, Received):
                outcome.discard()
        self.envelope = self._create_envelope()  # as aiosmtpd does after DATA
        if status.startswith("250"):
            self.errors = 0
        await self.push(status)
