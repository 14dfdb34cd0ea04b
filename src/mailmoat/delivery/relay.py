"""SMTP relay client: hands queued mail to a customer's downstream mail servers.

One ``send`` is one SMTP transaction at one destination (an address already
resolved by the caller). The outcome is a reply per recipient, so the queue can
finish, retry or bounce each recipient on its own; ``DestinationUnusable`` means
no transaction could even start there and the caller should try the next
destination. Connections are kept and reused per (address, port), because a
gateway relays most of its mail to a handful of servers and a new TCP + TLS
session for each message would cost more than the message itself.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib import (
    SMTPConnectResponseError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPResponseException,
)

from mailmoat.delivery.smtp_pool import ConnectionPool

log = logging.getLogger(__name__)

# DATA may take longer than a command: the body must travel first. A downstream
# slower than this rate (bytes per second) is treated as stuck.
_SLOWEST_DATA_RATE = 32 * 1024
_QUIT_TIMEOUT = 5.0
_QUOTED_LOCAL_PART = re.compile(r'^"(?:[^"\\\r\n]|\\.)*"')
_UNSAFE_IN_PATH = re.compile(r'[\s<>"]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Errors that leave the connection in an unknown state: drop it.
_LINK_ERRORS = (SMTPException, OSError)  # timeouts are OSErrors too


class TlsMode(enum.StrEnum):
    NONE = "none"  # never STARTTLS
    OPPORTUNISTIC = "opportunistic"  # STARTTLS when offered, certificate not verified
    REQUIRED = "required"  # STARTTLS must succeed, certificate not verified
    VERIFY = "verify"  # STARTTLS must succeed, certificate verified against the name


@dataclass(frozen=True, slots=True)
class Destination:
    address: str  # IP address to connect to
    port: int
    name: str  # the target as configured: hostname (maybe with a final dot) or IP literal

    @property
    def server_name(self) -> str:
        """The name TLS checks the certificate against: no final dot, no brackets."""
        return self.name.rstrip(".").strip("[]")

    def __str__(self) -> str:
        host = f"[{self.address}]:{self.port}"
        return host if _same_ip(self.server_name, self.address) else f"{self.name}{host}"


def _same_ip(name: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(name) == ipaddress.ip_address(address)
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str  # without the code, e.g. "2.0.0 Ok: queued"

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    def __str__(self) -> str:
        return f"{self.code} {' '.join(self.text.splitlines())}".rstrip()


def _reply(code: int, text: str) -> Reply:
    """A server reply; aiosmtplib joins the lines of a multi-line reply with newlines."""
    return Reply(code, " ".join(line.strip() for line in text.splitlines()))


@dataclass(frozen=True, slots=True)
class Envelope:
    mail_from: str  # "" is the null sender <>
    recipients: Sequence[str]
    data: bytes  # the whole message, CRLF line endings


class DestinationUnusable(Exception):
    """No transaction could start at this destination: try the next one."""

    def __init__(self, reply: Reply, destination: Destination | None = None) -> None:
        super().__init__(f"{destination}: {reply}" if destination else str(reply))
        self.reply = reply
        self.destination = destination


@dataclass(frozen=True, slots=True)
class RelayOptions:
    helo: str
    tls: TlsMode = TlsMode.OPPORTUNISTIC
    connect_timeout: float = 30.0
    command_timeout: float = 60.0  # each command; DATA gets more for a large message
    per_destination: int = 10  # connections (busy + idle) per (address, port)
    idle_timeout: float = 30.0
    messages_per_connection: int = 100
    tls_context: ssl.SSLContext | None = None  # trust for VERIFY; system default otherwise


class _StaleConnection(Exception):
    """A reused connection died while idle; nothing was sent, so retry on a new one."""


class _Connection:
    """An open, greeted SMTP session and what the relay remembers about it."""

    def __init__(self, smtp: aiosmtplib.SMTP, destination: Destination, limit: int) -> None:
        self.smtp = smtp
        self.server_name = destination.server_name
        self.limit = limit
        self.transactions = 0
        self.needs_reset = False  # a transaction did not end with DATA: RSET before the next

    @property
    def usable(self) -> bool:
        return self.smtp.is_connected and self.transactions < self.limit

    def abort(self) -> None:
        self.smtp.close()

    async def aclose(self) -> None:
        try:
            if self.smtp.is_connected:
                await self.smtp.execute_command(b"QUIT", timeout=_QUIT_TIMEOUT)
        except _LINK_ERRORS:
            pass
        finally:
            self.smtp.close()


class Relay:
    def __init__(self, options: RelayOptions) -> None:
        self.options = options
        self._pool: ConnectionPool[_Connection] = ConnectionPool(
            limit=options.per_destination, idle_timeout=options.idle_timeout
        )
        self._verifying_context = options.tls_context
        self._unverified_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._unverified_context.check_hostname = False
        self._unverified_context.verify_mode = ssl.CERT_NONE

    async def send(self, destination: Destination, envelope: Envelope) -> dict[str, Reply]:
        """Run one transaction. Returns the final reply per recipient: the RCPT refusal
        for a refused recipient, otherwise the DATA reply.

        Raises DestinationUnusable when connecting, the greeting, EHLO/HELO or a
        required STARTTLS fails, whatever the code, so the caller tries the next
        destination.
        """
        if not envelope.recipients:
            return {}
        key = (destination.address, destination.port)
        connection = await self._pool.checkout(key)
        try:
            if connection is not None and not self._fits(connection, destination):
                connection.abort()
            elif connection is not None:
                log.debug("reusing connection to %s", destination)
                try:
                    return await self._deliver(connection, destination, envelope, reused=True)
                except _StaleConnection as stale:
                    log.debug("pooled connection to %s was dead: %s", destination, stale)
            connection = await self._connect(destination)
            return await self._deliver(connection, destination, envelope, reused=False)
        except BaseException:
            if connection is not None:
                connection.abort()  # failed or cancelled half-way: its state is unknown
            raise
        finally:
            if connection is not None and connection.usable:
                self._pool.checkin(key, connection)
            else:
                if connection is not None:
                    connection.abort()
                self._pool.release(key)

    def _fits(self, connection: _Connection, destination: Destination) -> bool:
        """A connection verified for one name must not carry mail meant for another."""
        return (
            self.options.tls is not TlsMode.VERIFY
            or connection.server_name == destination.server_name
        )

    async def close(self) -> None:
        """Close every pooled connection (QUIT); the relay cannot send afterwards."""
        await self._pool.close()

    # -- one transaction ---------------------------------------------------------

    async def _deliver(
        self, connection: _Connection, destination: Destination, envelope: Envelope, reused: bool
    ) -> dict[str, Reply]:
        replies = await self._transaction(connection, destination, envelope, reused)
        if connection.transactions >= connection.limit:
            await connection.aclose()  # errors here cannot change what was delivered
        return replies

    async def _transaction(
        self, connection: _Connection, destination: Destination, envelope: Envelope, reused: bool
    ) -> dict[str, Reply]:
        replies: dict[str, Reply] = {}
        pending: list[str] = []
        for recipient in dict.fromkeys(envelope.recipients):
            if _unsafe_path(recipient):
                replies[recipient] = Reply(553, "5.1.3 invalid recipient address syntax")
            else:
                pending.append(recipient)
        refusal = self._envelope_refusal(connection, envelope, pending)
        if refusal is not None:
            return {**replies, **dict.fromkeys(pending, refusal)}
        if not pending:
            return replies

        mail = await self._start(connection, destination, envelope, pending, reused)
        if not mail.ok:
            log.info("%s refused MAIL FROM:<%s>: %s", destination, envelope.mail_from, mail)
            return {**replies, **dict.fromkeys(pending, mail)}
        accepted: list[str] = []
        try:
            for recipient in pending:
                reply = await self._command(connection, b"RCPT", b"TO:" + _path(recipient))
                if reply.ok:
                    accepted.append(recipient)
                else:
                    replies[recipient] = reply
            if accepted:
                final = await self._data(connection, envelope.data)
                replies.update(dict.fromkeys(accepted, final))
        except SMTPDataError as refused:
            replies.update(dict.fromkeys(accepted, _reply(refused.code, refused.message)))
        except _LINK_ERRORS as error:
            connection.abort()
            lost = Reply(451, f"4.4.2 connection lost with {destination}: {_reason(error)}")
            replies.update({r: lost for r in pending if r not in replies})
        self._log_outcome(destination, envelope, replies)
        return replies

    def _envelope_refusal(
        self, connection: _Connection, envelope: Envelope, recipients: list[str]
    ) -> Reply | None:
        """A refusal decided without asking the server, or None."""
        if _unsafe_path(envelope.mail_from):
            return Reply(553, "5.1.7 invalid sender address syntax")
        needs_utf8 = not all(a.isascii() for a in (envelope.mail_from, *recipients))
        if needs_utf8 and not connection.smtp.supports_extension("smtputf8"):
            return Reply(553, "5.6.7 downstream does not support SMTPUTF8")
        return None

    async def _start(
        self,
        connection: _Connection,
        destination: Destination,
        envelope: Envelope,
        recipients: list[str],
        reused: bool,
    ) -> Reply:
        """RSET if needed, then MAIL FROM. A failure here means nothing was handed over."""
        smtp = connection.smtp
        parameters = []
        if smtp.supports_extension("size"):
            parameters.append(f"SIZE={len(envelope.data)}".encode())
        if not envelope.data.isascii() and smtp.supports_extension("8bitmime"):
            parameters.append(b"BODY=8BITMIME")
        if not all(a.isascii() for a in (envelope.mail_from, *recipients)):
            parameters.append(b"SMTPUTF8")
        try:
            if connection.needs_reset:
                reset = await self._command(connection, b"RSET")
                if not reset.ok:
                    raise SMTPResponseException(reset.code, reset.text)
            connection.needs_reset = True
            connection.transactions += 1
            mail = await self._command(
                connection, b"MAIL", b"FROM:" + _path(envelope.mail_from), *parameters
            )
            if reused and mail.code == 421:
                raise SMTPResponseException(mail.code, mail.text)  # the server is hanging up
        except _LINK_ERRORS as error:
            connection.abort()
            if reused:
                raise _StaleConnection(_reason(error)) from error
            reply = Reply(421, f"4.4.2 connection lost with {destination}: {_reason(error)}")
            raise DestinationUnusable(reply, destination) from error
        return mail

    async def _command(self, connection: _Connection, *words: bytes) -> Reply:
        response = await connection.smtp.execute_command(
            *words, timeout=self.options.command_timeout
        )
        return _reply(response.code, response.message)

    async def _data(self, connection: _Connection, data: bytes) -> Reply:
        """DATA and the message; aiosmtplib dot-stuffs and raises SMTPDataError on refusal.

        aiosmtplib also turns a bare CR or LF into CRLF: the body is already CRLF, and
        a bare LF must never reach a downstream that might read it as end of data.
        """
        timeout = max(self.options.command_timeout, len(data) / _SLOWEST_DATA_RATE)
        response = await connection.smtp.data(data, timeout=timeout)
        connection.needs_reset = False
        return _reply(response.code, response.message)

    @staticmethod
    def _log_outcome(
        destination: Destination, envelope: Envelope, replies: dict[str, Reply]
    ) -> None:
        for recipient, reply in replies.items():
            log.info(
                "relay %s: from=<%s> to=<%s> %s", destination, envelope.mail_from, recipient, reply
            )

    # -- opening a connection -------------------------------------------------------

    async def _connect(self, destination: Destination, tls: TlsMode | None = None) -> _Connection:
        """Connect, read the greeting, EHLO (or HELO) and STARTTLS as the mode asks.

        In opportunistic mode a failed TLS handshake is followed by one more
        connection in plain text, as Postfix does: a broken TLS setup downstream
        must not stop the mail.
        """
        options = self.options
        mode = options.tls if tls is None else tls
        smtp = aiosmtplib.SMTP(
            hostname=destination.address,
            port=destination.port,
            local_hostname=options.helo,
            timeout=options.command_timeout,
            start_tls=False,
        )
        try:
            await self._greet(smtp, destination)
            await self._hello(smtp, destination)
            if await self._starttls(smtp, destination, mode):
                await self._hello(smtp, destination)
        except _HandshakeFailed as failed:
            smtp.close()
            if mode is TlsMode.OPPORTUNISTIC:
                log.info("TLS with %s failed (%s); trying plain text", destination, failed)
                return await self._connect(destination, TlsMode.NONE)
            raise DestinationUnusable(failed.reply, destination) from None
        except DestinationUnusable as unusable:
            smtp.close()
            log.info("destination %s unusable: %s", destination, unusable.reply)
            raise
        except BaseException:
            smtp.close()
            raise
        log.debug("connected to %s (tls=%s)", destination, _uses_tls(smtp))
        return _Connection(smtp, destination, options.messages_per_connection)

    async def _greet(self, smtp: aiosmtplib.SMTP, destination: Destination) -> None:
        timeout = self.options.connect_timeout
        try:
            async with asyncio.timeout(timeout):  # connect and greeting together
                await smtp.connect(timeout=timeout)
        except SMTPConnectResponseError as refused:
            raise DestinationUnusable(_reply(refused.code, refused.message), destination) from None
        except TimeoutError:
            reply = Reply(421, f"4.4.2 timeout after {timeout:g}s connecting to {destination}")
            raise DestinationUnusable(reply, destination) from None
        except _LINK_ERRORS as error:
            if isinstance(error.__cause__, ConnectionRefusedError):
                reply = Reply(421, f"4.4.1 connection refused by {destination}")
            else:
                reply = Reply(421, f"4.4.1 cannot connect to {destination}: {_reason(error)}")
            raise DestinationUnusable(reply, destination) from error

    async def _hello(self, smtp: aiosmtplib.SMTP, destination: Destination) -> None:
        """EHLO; HELO only when EHLO is refused as unknown (5xx) by an old server."""
        timeout = self.options.command_timeout
        try:
            try:
                await smtp.ehlo(timeout=timeout)
            except SMTPHeloError as refused:
                if refused.code < 500 or not smtp.is_connected:
                    raise
                await smtp.helo(timeout=timeout)
        except SMTPResponseException as refused:
            raise DestinationUnusable(_reply(refused.code, refused.message), destination) from None
        except _LINK_ERRORS as error:
            reply = Reply(421, f"4.4.2 connection lost with {destination}: {_reason(error)}")
            raise DestinationUnusable(reply, destination) from error

    async def _starttls(
        self, smtp: aiosmtplib.SMTP, destination: Destination, mode: TlsMode
    ) -> bool:
        """Upgrade to TLS as the mode asks; True when it did (EHLO must then be repeated)."""
        if mode is TlsMode.NONE:
            return False
        if not smtp.supports_extension("starttls"):
            if mode is TlsMode.OPPORTUNISTIC:
                return False
            reply = Reply(421, f"4.7.0 STARTTLS required but not offered by {destination}")
            raise DestinationUnusable(reply, destination)
        try:
            await smtp.starttls(
                server_hostname=destination.server_name,
                tls_context=self._tls_context(mode),
                timeout=self.options.command_timeout,
            )
        except SMTPResponseException as refused:
            if mode is TlsMode.OPPORTUNISTIC and smtp.is_connected:
                return False  # RFC 3207: after a refused STARTTLS the session goes on plain
            raise DestinationUnusable(_reply(refused.code, refused.message), destination) from None
        except ssl.SSLCertVerificationError as error:
            why = error.verify_message or error.reason
            reply = Reply(421, f"4.7.5 certificate of {destination} not trusted: {why}")
            raise DestinationUnusable(reply, destination) from error
        except _LINK_ERRORS as error:
            reply = Reply(421, f"4.7.0 TLS with {destination} failed: {_reason(error)}")
            raise _HandshakeFailed(reply) from error
        return True

    def _tls_context(self, mode: TlsMode) -> ssl.SSLContext:
        if mode is not TlsMode.VERIFY:
            return self._unverified_context
        if self._verifying_context is None:
            self._verifying_context = ssl.create_default_context()
        return self._verifying_context


class _HandshakeFailed(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def _path(address: str) -> bytes:
    return f"<{address}>".encode()


def _unsafe_path(address: str) -> bool:
    """True for an address that cannot go on a command line as it is (injection)."""
    if _CONTROL.search(address):
        return True
    return bool(_UNSAFE_IN_PATH.search(_QUOTED_LOCAL_PART.sub("", address, count=1)))


def _uses_tls(smtp: aiosmtplib.SMTP) -> bool:
    return smtp.is_connected and smtp.get_transport_info("sslcontext") is not None


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__
