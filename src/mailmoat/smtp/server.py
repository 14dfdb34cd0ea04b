"""Serving SMTP on the event loop of the process (no aiosmtpd Controller thread)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path

from mailmoat.pipeline.engine import Pipeline
from mailmoat.services.intake import IntakeService
from mailmoat.smtp.budget import DEFAULT_MEMORY_BUDGET, ByteBudget
from mailmoat.smtp.data import IncomingFiles
from mailmoat.smtp.handler import GatewayHandler
from mailmoat.smtp.protocol import ConnectionLimits, GatewaySMTP

IDENT = "mailmoat ESMTP"
# aiosmtpd warns below 3 s; a load balancer sends the PROXY header at once.
PROXY_HEADER_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class SmtpOptions:
    hostname: str
    max_message_size: int
    max_header_size: int = 1024 * 1024
    max_hops: int = 100
    max_recipients: int = 100
    max_errors: int = 20
    max_connections: int = 1000
    max_connections_per_ip: int = 50
    timeout: float = 300.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    proxy_protocol: bool = False
    max_line_length: int = 64 * 1024
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    # Messages being received that are too big to hold in memory; by default
    # ``incoming/`` next to the spool.
    incoming_dir: Path | None = None


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class SmtpServer:
    def __init__(self, intake: IntakeService, pipeline: Pipeline, options: SmtpOptions) -> None:
        self.options = options
        self.handler = GatewayHandler(
            intake,
            pipeline,
            max_recipients=options.max_recipients,
            max_header_size=options.max_header_size,
            max_hops=options.max_hops,
            budget=ByteBudget(options.memory_budget),
        )
        self.incoming = IncomingFiles(
            options.incoming_dir or intake.contents.spool.root.parent / "incoming"
        )
        self.limits = ConnectionLimits(options.max_connections, options.max_connections_per_ip)
        self._tls = (
            tls_context(options.tls_cert, options.tls_key)
            if options.tls_cert and options.tls_key
            else None
        )
        self._server: asyncio.Server | None = None

    def _protocol(self) -> GatewaySMTP:
        return GatewaySMTP(
            self.handler,
            limits=self.limits,
            max_errors=self.options.max_errors,
            incoming=self.incoming,
            max_line_length=self.options.max_line_length,
            data_size_limit=self.options.max_message_size,
            enable_SMTPUTF8=True,
            hostname=self.options.hostname,
            ident=IDENT,
            tls_context=self._tls,
            timeout=self.options.timeout,
            proxy_protocol_timeout=PROXY_HEADER_TIMEOUT if self.options.proxy_protocol else None,
        )

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        self.incoming.sweep()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, host=host, port=port, reuse_port=reuse_port or None
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
