"""A gateway serving SMTP on a loopback port, in the test's event loop, over ``services``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiosmtplib
import httpx
import pytest

from mailmoat.db.bayes_store import DatabaseTokenStore
from mailmoat.pipeline.auth import SenderAuthenticator
from mailmoat.pipeline.engine import Pipeline
from mailmoat.scanners.base import Scanner
from mailmoat.scanners.builtin import BuiltinScanner
from mailmoat.services.container import Services
from mailmoat.smtp.server import SmtpOptions, SmtpServer
from tests.api.helpers import provision_names
from tests.conftest import Tenant

HOSTNAME = "mx.gateway.test"
DOMAIN = "example.com"


@dataclass
class Gateway:
    server: SmtpServer
    services: Services
    tenant: Tenant

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def api(self) -> httpx.AsyncClient:
        return self.tenant.client

    def client(self, **kwargs: Any) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname="127.0.0.1", port=self.port, timeout=10, start_tls=False, **kwargs
        )

    async def send(
        self,
        message: bytes | str,
        *,
        sender: str = "alice@sender.test",
        recipients: list[str] | None = None,
        **kwargs: Any,
    ) -> tuple[dict[str, Any], str]:
        """Send one message; returns aiosmtplib's (refused recipients, DATA reply)."""
        data = message.encode() if isinstance(message, str) else message
        async with self.client(**kwargs) as smtp:
            errors, reply = await smtp.sendmail(sender, recipients or [f"bob@{DOMAIN}"], data)
        return dict(errors), reply

    async def messages(self, domain: str = DOMAIN, **params: Any) -> list[dict[str, Any]]:
        response = await self.api.get(f"/domains/{domain}/messages", params=params)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["messages"]
        return found

    async def only_message(self, domain: str = DOMAIN) -> dict[str, Any]:
        found = await self.messages(domain)
        assert len(found) == 1, found
        return found[0]

    async def raw(self, message_id: str) -> bytes:
        response = await self.api.get(f"/messages/{message_id}/raw")
        assert response.status_code == 200, response.text
        return response.content


GatewayFactory = Callable[..., Awaitable[Gateway]]


def builtin_scanner(services: Services) -> Scanner:
    return BuiltinScanner(DatabaseTokenStore(services.db), threshold=5.0)


@pytest.fixture
async def make_gateway(services: Services, tenant: Tenant) -> AsyncIterator[GatewayFactory]:
    """Start gateways: ``await make_gateway(max_message_size=4096, scanner=...)``."""
    servers: list[SmtpServer] = []
    await provision_names(tenant.client, tenant.subscription, DOMAIN)

    async def factory(
        *,
        scanner: Scanner | str | None = "builtin",
        authenticator: SenderAuthenticator | None = None,
        accept_when_scanner_fails: bool = False,
        **options: Any,
    ) -> Gateway:
        chosen = builtin_scanner(services) if scanner == "builtin" else scanner
        assert not isinstance(chosen, str)
        pipeline = Pipeline(
            hostname=HOSTNAME,
            scanner=chosen,
            authenticator=authenticator,
            accept_when_scanner_fails=accept_when_scanner_fails,
        )
        settings = {"hostname": HOSTNAME, "max_message_size": 256 * 1024} | options
        server = SmtpServer(services.intake, pipeline, SmtpOptions(**settings))
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return Gateway(server, services, tenant)

    yield factory
    for server in servers:
        await server.stop()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway()


def message(
    subject: str = "Lunch on Friday",
    body: str = "Shall we meet at noon at the usual place?\r\n",
    *,
    sender: str = "Alice <alice@sender.test>",
    to: str = f"bob@{DOMAIN}",
    message_id: str | None = None,
    extra_headers: str = "",
) -> str:
    import uuid

    mid = message_id or f"<{uuid.uuid4().hex}@sender.test>"
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: {mid}\r\n"
        f"{extra_headers}\r\n{body}"
    )


GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
