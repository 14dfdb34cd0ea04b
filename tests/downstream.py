"""A downstream mail server for tests: what a customer's mail server would receive.

aiosmtpd in its own thread (``Controller``), so that synchronous tests driving
subprocesses and asynchronous tests on the session loop can both use it. It keeps
every accepted message byte for byte, can refuse recipients or messages on cue,
counts sessions, and can be stopped and started again on the same port to play a
downstream that is down for a while.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

DATA_SIZE_LIMIT = 50 * 1024 * 1024


@dataclass(frozen=True)
class Received:
    mail_from: str  # "" for the null sender <>
    recipients: list[str]
    data: bytes  # exactly as received, dot-stuffing undone
    tls: bool
    peer: str  # the client's IP address
    mail_options: tuple[str, ...] = ()  # MAIL FROM parameters, upper-cased: SIZE=…, BODY=…

    @property
    def message_id(self) -> str | None:
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(self.data)
        value = headers.get("Message-ID")
        return str(value).strip() if value is not None else None


class Downstream:
    def __init__(
        self,
        *,
        port: int = 0,
        hostname: str = "downstream.test",
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        require_tls: bool = False,
        smtputf8: bool = True,
    ) -> None:
        self.port = port  # 0 until started: then the port picked, kept for restarts
        self.hostname = hostname
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.require_tls = require_tls
        self.smtputf8 = smtputf8
        self.messages: list[Received] = []
        self.broken_tls = False  # offer STARTTLS, then fail the handshake
        self.connections = 0  # sessions that said EHLO/HELO (the readiness probe does not)
        self.max_concurrent = 0
        self.active = 0  # sessions open right now
        # Hooks, called in the server thread. Return a full reply ("450 4.2.1 later")
        # to refuse, None to accept.
        self.mail_reply: Callable[[str], str | None] | None = None
        self.rcpt_reply: Callable[[str], str | None] | None = None
        self.data_reply: Callable[[Received], str | None] | None = None
        self._lock = threading.Lock()
        self._controller: _Controller | None = None
        self._sessions: set[_Server] = set()  # touched only in the server thread
        self._drained: asyncio.Future[None] | None = None  # all sessions gone, during stop()

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> Downstream:
        assert self._controller is None, "already running"
        tls_context = None
        if self.tls_cert is not None and self.tls_key is not None:
            tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls_context.load_cert_chain(self.tls_cert, self.tls_key)
        controller = _Controller(
            self,
            _Handler(self),
            hostname="127.0.0.1",
            port=self.port,
            server_hostname=self.hostname,
            ready_timeout=5.0,
            tls_context=tls_context,
            require_starttls=self.require_tls,
            enable_SMTPUTF8=self.smtputf8,
            decode_data=False,
            data_size_limit=DATA_SIZE_LIMIT,
        )
        controller.start()
        self.port = controller.port
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop listening and drop every open session, as a crashed server would."""
        controller, self._controller = self._controller, None
        if controller is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._hang_up(controller), controller.loop)
        future.result(timeout=5.0)
        controller.stop()

    async def _hang_up(self, controller: _Controller) -> None:
        if controller.server is not None:
            controller.server.close()
        self._drained = asyncio.get_running_loop().create_future()
        for server in list(self._sessions):
            if isinstance(server.transport, asyncio.Transport):
                server.transport.abort()
        if not self._sessions:
            self._drained.set_result(None)
        try:  # connection_lost closes the sockets; let it run before the loop stops
            await asyncio.wait_for(self._drained, timeout=2.0)
        except TimeoutError:
            pass
        finally:
            self._drained = None

    def _session_closed(self, server: _Server) -> None:
        self._sessions.discard(server)
        if not self._sessions and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def __enter__(self) -> Downstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._controller is not None

    # -- what arrived -------------------------------------------------------------

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def message_ids(self) -> list[str]:
        return [m.message_id for m in self.received() if m.message_id is not None]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until at least ``count`` messages arrived (not on an event loop thread
        that must deliver them: use ``wait_for_async`` there)."""
        deadline = time.monotonic() + timeout
        while True:
            received = self.received()
            if len(received) >= count or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        self._check_count(received, count, timeout)
        return received

    async def wait_for_async(self, count: int, timeout: float = 10.0) -> list[Received]:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while True:
            received = self.received()
            if len(received) >= count or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        self._check_count(received, count, timeout)
        return received

    @staticmethod
    def _check_count(received: list[Received], count: int, timeout: float) -> None:
        if len(received) < count:
            arrived = "\n".join(
                f"  from=<{m.mail_from}> to={m.recipients} id={m.message_id}" for m in received
            )
            raise AssertionError(
                f"expected {count} message(s) within {timeout}s, got {len(received)}:\n"
                f"{arrived or '  (none)'}"
            )

    # -- bookkeeping, called in the server thread ------------------------------------

    def _session_started(self) -> None:
        with self._lock:
            self.connections += 1
            self.active += 1
            self.max_concurrent = max(self.max_concurrent, self.active)

    def _session_ended(self) -> None:
        with self._lock:
            self.active -= 1

    def _accept(self, received: Received) -> None:
        with self._lock:
            self.messages.append(received)


class _Handler:
    def __init__(self, downstream: Downstream) -> None:
        self.downstream = downstream

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        hook = self.downstream.mail_reply
        refusal = hook("" if address == "<>" else address) if hook is not None else None
        if refusal is not None:
            return refusal
        envelope.mail_from = address  # "<>" for the null sender: aiosmtpd needs it truthy
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        hook = self.downstream.rcpt_reply
        refusal = hook(address) if hook is not None else None
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert envelope.original_content is not None
        peer = session.peer
        received = Received(
            mail_from="" if envelope.mail_from == "<>" else str(envelope.mail_from),
            recipients=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content),
            tls=session.ssl is not None,
            peer=str(peer[0] if isinstance(peer, tuple) else peer),
            mail_options=tuple(envelope.mail_options),
        )
        hook = self.downstream.data_reply
        refusal = hook(received) if hook is not None else None
        if refusal is not None:
            return refusal
        self.downstream._accept(received)
        return "250 2.0.0 Ok: queued"


class _Server(SMTP):
    """aiosmtpd's SMTP, counting sessions for the tests."""

    # Like Postfix, take lines longer than RFC 5321's 1000 octets (aiosmtpd refuses them).
    line_length_limit = 64 * 1024 + 2

    def __init__(self, handler: Any, downstream: Downstream, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.downstream = downstream
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.downstream._sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.downstream._session_closed(self)
        if self.counted:
            self.counted = False
            self.downstream._session_ended()

    def _count(self) -> None:
        if not self.counted:
            self.counted = True
            self.downstream._session_started()

    async def smtp_EHLO(self, hostname: str) -> None:
        self._count()
        await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        self._count()
        await super().smtp_HELO(hostname)

    async def smtp_STARTTLS(self, arg: str) -> None:
        if not self.downstream.broken_tls:
            await super().smtp_STARTTLS(arg)
            return
        # Say yes, then hang up instead of a TLS handshake (a broken TLS setup).
        await self.push("220 2.0.0 Ready to start TLS")
        assert self.transport is not None
        self.transport.close()


class _Controller(Controller):
    def __init__(self, downstream: Downstream, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.downstream = downstream

    def factory(self) -> SMTP:
        return _Server(self.handler, self.downstream, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        if self.port == 0:  # bound to a port the system picked: find out which
            assert isinstance(self.server, asyncio.Server)
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


def free_port() -> int:
    """A local TCP port nothing listens on (connecting to it is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
