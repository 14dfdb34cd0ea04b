"""The Domain Console over HTTP: the web application (API + console at /console) in
the test's event loop, signed-in console clients, and mail through a real SMTP gateway.

Domains: ``example.com`` (customer acme, provisioned by the gateway fixture),
``b.example`` (also acme) and ``other.example`` (customer "other").
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from mailmoat.api.ratelimit import RateLimiter
from mailmoat.app import create_web
from mailmoat.db.tables import (
    ApiKey,
    AuditEvent,
    ConsoleSession,
    LoginLink,
    Message,
    MessageContent,
)
from mailmoat.services.container import Services
from tests.api.helpers import provision_names
from tests.conftest import PUBLIC_URL, Tenant, TenantFactory
from tests.smtp import conftest as smtp_fixtures
from tests.smtp.conftest import GTUBE, Gateway, GatewayFactory, message

make_gateway = smtp_fixtures.make_gateway
DOMAIN = smtp_fixtures.DOMAIN

LINK_PREFIX = f"{PUBLIC_URL}/console/login/"
COOKIE = "mailmoat_console"
BASE_URL = "http://testserver"
B_DOMAIN = "b.example"
OTHER_DOMAIN = "other.example"

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="session")
def web_app(database_services: Services) -> FastAPI:
    """The API with the console mounted at /console, built once per database."""
    return create_web(database_services, RateLimiter(0))


def token_of(link: str) -> str:
    assert link.startswith(LINK_PREFIX), link
    return link.removeprefix(LINK_PREFIX)


async def login_token(api: httpx.AsyncClient, domain: str = DOMAIN) -> str:
    """A fresh login link for ``domain`` through the API; returns its token."""
    response = await api.get(f"/domains/{domain}/login-link")
    assert response.status_code == 200, response.text
    return token_of(response.json()["loginLink"])


def web_client(app: FastAPI, base_url: str = BASE_URL) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


@dataclass
class Console:
    """A browser-like client signed in to one domain's console (cookies kept)."""

    http: httpx.AsyncClient
    domain: str
    csrf: str = ""
    cookie: str = ""

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.http.get(f"/console{path}", **kwargs)

    async def post(
        self, path: str, data: dict[str, Any] | None = None, *, csrf: str | None = None
    ) -> httpx.Response:
        """A form post carrying this session's CSRF token (or ``csrf`` when given;
        pass ``csrf=""`` for an empty one and use ``post_without_csrf`` to leave it out)."""
        form = {"csrf": self.csrf if csrf is None else csrf, **(data or {})}
        return await self.http.post(f"/console{path}", data=form)

    async def post_without_csrf(
        self, path: str, data: dict[str, Any] | None = None
    ) -> httpx.Response:
        return await self.http.post(f"/console{path}", data=data or {})

    async def page(self, path: str, **params: Any) -> str:
        """A page that must be served (200); its HTML."""
        response = await self.get(path, params=params)
        assert response.status_code == 200, (response.status_code, response.text)
        return response.text


ConsoleFactory = Callable[..., Awaitable[Console]]


async def sign_in(app: FastAPI, token: str, domain: str, base_url: str = BASE_URL) -> Console:
    http = web_client(app, base_url)
    response = await http.post(f"/console/login/{token}")
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console/messages"
    console = Console(http, domain, cookie=response.cookies[COOKIE])
    html = (await http.get("/console/messages")).text
    found = _CSRF.search(html)
    assert found is not None, html
    console.csrf = found.group(1)
    return console


@pytest.fixture
async def open_console(web_app: FastAPI, tenant: Tenant) -> AsyncIterator[ConsoleFactory]:
    """``await open_console("example.com", api=tenant.client)``: a signed-in console."""
    opened: list[Console] = []

    async def factory(domain: str = DOMAIN, *, api: httpx.AsyncClient | None = None) -> Console:
        token = await login_token(api or tenant.client, domain)
        console = await sign_in(web_app, token, domain)
        opened.append(console)
        return console

    yield factory
    for console in opened:
        await console.http.aclose()


@pytest.fixture
async def anonymous(web_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with web_client(web_app) as client:
        yield client


@dataclass
class World:
    """Mail for example.com and b.example (acme) and other.example (customer other)."""

    gateway: Gateway
    tenant: Tenant
    other: Tenant
    sent: list[str] = field(default_factory=list)

    @property
    def api(self) -> httpx.AsyncClient:
        return self.tenant.client

    async def send(
        self,
        subject: str = "Lunch on Friday",
        *,
        spam: bool = False,
        to: str = f"bob@{DOMAIN}",
        sender: str = "alice@sender.test",
    ) -> str:
        """Send one message through SMTP; returns its id in the message log."""
        body = f"{GTUBE}\r\n" if spam else "Shall we meet at noon at the usual place?\r\n"
        errors, reply = await self.gateway.send(
            message(subject, body, sender=sender, to=to), sender=sender, recipients=[to]
        )
        assert errors == {} and reply.startswith("2"), reply
        domain = to.rpartition("@")[2]
        api = self.other.client if domain == OTHER_DOMAIN else self.api
        response = await api.get(f"/domains/{domain}/messages", params={"limit": 1000})
        assert response.status_code == 200, response.text
        new = [m["id"] for m in response.json()["messages"] if m["id"] not in self.sent]
        assert len(new) == 1, new
        self.sent.append(new[0])
        return str(new[0])

    async def record(self, message_id: str, api: httpx.AsyncClient | None = None) -> Any:
        response = await (api or self.api).get(f"/messages/{message_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def state(self, message_id: str, api: httpx.AsyncClient | None = None) -> str:
        return str((await self.record(message_id, api))["state"])


@pytest.fixture
async def world(
    services: Services, tenant: Tenant, make_tenant: TenantFactory, make_gateway: GatewayFactory
) -> World:
    gateway = await make_gateway()
    await provision_names(tenant.client, tenant.subscription, B_DOMAIN)
    other = await make_tenant("other")
    await provision_names(other.client, other.subscription, OTHER_DOMAIN)
    return World(gateway, tenant, other)


# -- looking into the database ----------------------------------------------------------


async def session_rows(services: Services) -> list[ConsoleSession]:
    async with services.db.read() as session:
        return list(await session.scalars(select(ConsoleSession)))


async def link_rows(services: Services) -> list[LoginLink]:
    async with services.db.read() as session:
        return list(await session.scalars(select(LoginLink)))


async def audit_rows(services: Services, message_id: str | None = None) -> list[AuditEvent]:
    async with services.db.read() as session:
        query = select(AuditEvent).order_by(AuditEvent.id)
        if message_id is not None:
            query = query.where(AuditEvent.message_id == message_id)
        return list(await session.scalars(query))


async def key_id(services: Services, customer_id: str) -> str:
    async with services.db.read() as session:
        found = await session.scalar(
            select(ApiKey.id).where(ApiKey.customer_id == customer_id).order_by(ApiKey.created_at)
        )
    assert found is not None
    return found


async def set_message(services: Services, message_id: str, **values: Any) -> None:
    async with services.db.write() as session:
        await session.execute(update(Message).where(Message.id == message_id).values(**values))


async def content_kept(services: Services, message_id: str) -> bool:
    """Whether a message's bytes are still stored: in the database or in a spool file
    (intake keeps them under the message's id)."""
    async with services.db.read() as session:
        row = await session.scalar(
            select(MessageContent.message_id).where(MessageContent.message_id == message_id)
        )
    return row is not None or services.messages.contents.spool.path(message_id).exists()


def now() -> datetime:
    return datetime.now(UTC)
