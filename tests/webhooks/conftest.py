"""Webhook delivery end to end: mail in through mailmoat's real SMTP server, POSTs out
to a real HTTP listener on loopback, and the CloudMailin-style management API.

- ``listener``: a small HTTP/1.1 server (``asyncio.start_server``) in the test's loop.
  It keeps every request (method, target, headers, the exact body bytes) and answers
  what the test scripted: status, body, content type, extra headers, a delay.
- ``account``: an httpx client of ``/api/v0.1/{handle}`` with the tenant's key as Bearer.
- ``make_poster``: the sync-mode poster (``smtp_runtime.webhook_delivery``) put on
  ``services.intake.webhook_poster``, built from a ``Settings`` of the test.
- ``hooks``: a gateway (builtin scanner), the listener, the account and a poster that
  allows private targets; ``services.webhook_addresses`` allows them too meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiosmtplib
import httpx
import pytest
from fastapi import FastAPI
from python_multipart.multipart import MultipartParser, parse_options_header

from mailmoat.config import Settings
from mailmoat.delivery.webhook_delivery import WebhookDelivery
from mailmoat.services.container import Services
from mailmoat.webhook_runtime import webhook_delivery
from tests.conftest import Tenant
from tests.delivery import conftest as delivery_fixtures
from tests.smtp import conftest as smtp_fixtures
from tests.smtp.conftest import HOSTNAME, Gateway, GatewayFactory
from tests.tls import self_signed

make_gateway = smtp_fixtures.make_gateway
make_mailroom = delivery_fixtures.make_mailroom
bounces = delivery_fixtures.bounces

ADDRESS_DOMAIN = "webhooks.invalid"  # services' default WebhookPolicy
SENDER = "alice@sender.test"
CLIENT_HELO = "client.sender.test"

# ----------------------------------------------------------------------------- listener


@dataclass(frozen=True)
class Answer:
    """What the listener answers one request with."""

    status: int = 200
    body: bytes = b"ok"
    content_type: str | None = "text/plain; charset=utf-8"
    delay: float = 0.0  # seconds to wait before answering
    headers: tuple[tuple[str, str], ...] = ()
    gate: asyncio.Event | None = None  # answer only once the test sets it


@dataclass(frozen=True)
class FormPart:
    name: str
    file_name: str | None
    content_type: str | None
    value: bytes
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Hit:
    """One request the listener received."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]  # names lower-cased, in the order received
    body: bytes
    at: float  # time.time() when the body was in

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    def header(self, name: str) -> str | None:
        found = self.all(name)
        assert len(found) <= 1, f"{name} appears {len(found)} times"
        return found[0] if found else None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]

    @property
    def content_type(self) -> str:
        return self.header("content-type") or ""

    def json(self) -> Any:
        assert self.content_type == "application/json", self.content_type
        return json.loads(self.body)

    def form(self) -> list[FormPart]:
        return parse_form(self.content_type, self.body)


_REASONS = {s.value: s.phrase for s in HTTPStatus}


def _response(answer: Answer) -> bytes:
    head = [f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Whatever')}"]
    if answer.content_type is not None:
        head.append(f"Content-Type: {answer.content_type}")
    head += [f"{name}: {value}" for name, value in answer.headers]
    head.append(f"Content-Length: {len(answer.body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + answer.body


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readline()).split(b";")[0].strip(), 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


class Listener:
    """A real HTTP/1.1 server on 127.0.0.1 (keep-alive, Content-Length or chunked)."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.default = Answer()
        self._script: deque[Answer] = deque()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str = "/hook", *, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}{path}"

    def answer(self, *answers: Answer, then: Answer | None = None) -> None:
        """Answer the next requests with ``answers`` in turn, then with ``then``
        (or what was answered by default before)."""
        self._script.extend(answers)
        if then is not None:
            self.default = then

    async def wait_for(self, count: int, within: float = 10.0) -> list[Hit]:
        deadline = time.monotonic() + within
        while len(self.hits) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.hits)} requests arrived, expected {count}")
            await asyncio.sleep(0.01)
        return self.hits

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
                headers: list[tuple[str, str]] = []
                while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = raw.decode("latin-1").partition(":")
                    headers.append((name.strip().lower(), value.strip()))
                fields = dict(headers)
                if fields.get("transfer-encoding", "").lower() == "chunked":
                    body = await _chunked(reader)
                else:
                    body = await reader.readexactly(int(fields.get("content-length", "0")))
                self.hits.append(Hit(method, target, tuple(headers), body, time.time()))
                answer = self._script.popleft() if self._script else self.default
                if answer.gate is not None:
                    await answer.gate.wait()
                if answer.delay:
                    await asyncio.sleep(answer.delay)
                writer.write(_response(answer))
                await writer.drain()
                if fields.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:  # close() ends a handler still waiting: that is all
            return
        finally:
            self._tasks.discard(task)
            writer.close()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    server = Listener()
    await server.start()
    yield server
    await server.close()


# ----------------------------------------------------------------------------- form data

_PARAM = re.compile(rb'\b(name|filename)="([^"]*)"')


def _form_text(value: bytes) -> str:
    """A name or file name of form data: UTF-8 with '"', CR and LF percent-encoded."""
    text = value.decode("utf-8")
    return re.sub(r"%(22|0D|0A)", lambda m: unquote(m.group(0)), text, flags=re.IGNORECASE)


def parse_form(content_type: str, body: bytes) -> list[FormPart]:
    """multipart/form-data, parsed by python-multipart; every part in order."""
    kind, params = parse_options_header(content_type)
    assert kind == b"multipart/form-data", content_type
    parts: list[FormPart] = []
    current: dict[str, Any] = {}

    def begin() -> None:
        current.update(headers=[], field=b"", value=b"", data=b"")

    def header_field(data: bytes, start: int, end: int) -> None:
        current["field"] += data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        current["value"] += data[start:end]

    def header_end() -> None:
        current["headers"].append(
            (current["field"].decode("latin-1").lower(), current["value"].decode("latin-1"))
        )
        current.update(field=b"", value=b"")

    def data(chunk: bytes, start: int, end: int) -> None:
        current["data"] += chunk[start:end]

    def end() -> None:
        headers = dict(current["headers"])
        disposition = headers["content-disposition"].encode("latin-1")
        assert disposition.startswith(b"form-data;"), disposition
        found = {key.decode(): value for key, value in _PARAM.findall(disposition)}
        parts.append(
            FormPart(
                _form_text(found["name"]),
                _form_text(found["filename"]) if "filename" in found else None,
                headers.get("content-type"),
                current["data"],
                tuple(current["headers"]),
            )
        )

    parser = MultipartParser(
        params[b"boundary"],
        callbacks={
            "on_part_begin": begin,
            "on_header_field": header_field,
            "on_header_value": header_value,
            "on_header_end": header_end,
            "on_part_data": data,
            "on_part_end": end,
        },
    )
    assert parser.write(body) == len(body)
    parser.finalize()
    return parts


def form_fields(parts: list[FormPart]) -> dict[str, str]:
    """The text fields (parts without a file name), as text; each name only once."""
    names = [p.name for p in parts if p.file_name is None]
    assert len(names) == len(set(names)), names
    return {p.name: p.value.decode("utf-8") for p in parts if p.file_name is None}


# ----------------------------------------------------------------------------- SMTP


@dataclass
class Transcript:
    """What the gateway answered, step by step, to one SMTP transaction."""

    rcpt: list[tuple[int, str]] = field(default_factory=list)
    data: tuple[int, str] | None = None

    @property
    def data_code(self) -> int | None:
        return None if self.data is None else self.data[0]

    @property
    def data_text(self) -> str:
        return "" if self.data is None else self.data[1]

    @property
    def queued_id(self) -> str:
        """The message id at the end of a 250 DATA reply."""
        assert self.data is not None and self.data[0] == 250, self.data
        return self.data[1].split()[-1]


async def converse(
    port: int,
    data: bytes,
    recipients: list[str],
    *,
    sender: str = SENDER,
    declare_size: bool = True,
    declared_size: int | None = None,
    starttls: bool = False,
) -> Transcript:
    """One transaction: MAIL (with SIZE=, the real size unless ``declared_size`` says
    otherwise, unless told not to), each RCPT, DATA when at least one recipient was
    accepted. Refusals are recorded, not raised."""
    transcript = Transcript()
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=port,
        timeout=20,
        start_tls=False,
        local_hostname=CLIENT_HELO,
    ) as smtp:
        await smtp.ehlo()
        if starttls:
            await smtp.starttls(validate_certs=False)
            await smtp.ehlo()
        size = len(data) if declared_size is None else declared_size
        await smtp.mail(sender, options=[f"SIZE={size}"] if declare_size else [])
        for recipient in recipients:
            try:
                reply = await smtp.rcpt(recipient)
                transcript.rcpt.append((reply.code, reply.message))
            except aiosmtplib.SMTPResponseException as exc:
                transcript.rcpt.append((exc.code, exc.message))
        if any(200 <= code < 300 for code, _ in transcript.rcpt):
            try:
                reply = await smtp.data(data)
                transcript.data = (reply.code, reply.message)
            except aiosmtplib.SMTPResponseException as exc:
                transcript.data = (exc.code, exc.message)
        else:
            await smtp.rset()
    return transcript


def simple_message(
    subject: str = "Hello webhook", body: str = "Hi there.\r\n", *, size: int = 0
) -> bytes:
    """A small message; with body lines added to make it exactly ``size`` bytes when given."""
    data = (
        f"From: Alice <{SENDER}>\r\nTo: someone@{ADDRESS_DOMAIN}\r\nSubject: {subject}\r\n"
        "Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{time.monotonic_ns()}@sender.test>\r\n\r\n{body}"
    ).encode()
    if size:
        while size - len(data) > 81 + 2:
            data += b"padding " * 9 + b"padding\r\n"
        assert size - len(data) >= 2, "too small for the message"
        data += b"p" * (size - len(data) - 2) + b"\r\n"
        assert len(data) == size
    return data


# ----------------------------------------------------------------------------- the API


class Account:
    """The CloudMailin-style management API of one customer."""

    def __init__(self, client: httpx.AsyncClient, handle: str) -> None:
        self.client = client
        self.handle = handle

    async def create_address(self, target: str, **fields: Any) -> dict[str, Any]:
        response = await self.client.post("/addresses", json={"target": target, **fields})
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def add_domain(
        self, domain: str, address_id: str, pattern: str | None = None, *, expect: int = 201
    ) -> dict[str, Any]:
        response = await self.client.post(
            "/custom_domains", json={"domain": domain, "address_id": address_id, "pattern": pattern}
        )
        assert response.status_code == expect, response.text
        body: dict[str, Any] = response.json()
        return body

    async def statuses(self, **params: Any) -> list[dict[str, Any]]:
        response = await self.client.get("/incoming_statuses", params=params)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        assert response.headers["X-Total-Count"] == str(len(found)), response.headers
        return found

    async def status(self, status_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/incoming_statuses/{status_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def wait_status(
        self, status_id: str, category: str, *, attempts: int = 1, within: float = 10.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            found = await self.status(status_id)
            if found["status_category"] == category and len(found["attempts"]) >= attempts:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"status stayed {found}")
            await asyncio.sleep(0.05)

    async def secret(self) -> dict[str, Any]:
        response = await self.client.get("/webhook_secret")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def rotate(self) -> dict[str, Any]:
        response = await self.client.post("/webhook_secret/rotate")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found


def account_client(app: FastAPI, handle: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=f"http://gateway.test/api/v0.1/{handle}",
        headers={"Authorization": f"Bearer {key}"},
    )


AccountFactory = Callable[[Tenant], Awaitable[Account]]


@pytest.fixture
async def make_account(shared_app: FastAPI) -> AsyncIterator[AccountFactory]:
    clients: list[httpx.AsyncClient] = []

    async def factory(tenant: Tenant) -> Account:
        client = account_client(shared_app, tenant.handle, tenant.key)
        clients.append(client)
        return Account(client, tenant.handle)

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
async def account(make_account: AccountFactory, tenant: Tenant) -> Account:
    return await make_account(tenant)


# ----------------------------------------------------------------------------- posting


@pytest.fixture
def private_targets(services: Services) -> Iterator[None]:
    """Addresses may target 127.0.0.1 while the test runs (the listener is there)."""
    addresses = services.webhook_addresses
    before = addresses.allow_private_targets
    addresses.allow_private_targets = True
    yield
    addresses.allow_private_targets = before


PosterFactory = Callable[..., WebhookDelivery]


@pytest.fixture
async def make_poster(services: Services) -> AsyncIterator[PosterFactory]:
    """``make_poster(timeout=…, allow_private=…)``: the sync-mode poster, now in use."""
    before = services.intake.webhook_poster
    made: list[WebhookDelivery] = []

    def factory(*, timeout: float = 5.0, allow_private: bool = True) -> WebhookDelivery:
        settings = Settings(
            webhook_allow_private=allow_private,
            webhook_timeout=timeout,
            dns_servers="127.0.0.1:9",  # never the system resolver; targets are literals
        )
        poster = webhook_delivery(settings, services)
        made.append(poster)
        services.intake.webhook_poster = poster
        return poster

    yield factory
    services.intake.webhook_poster = before
    for poster in made:
        await poster.client.close()


@dataclass
class Hooks:
    gateway: Gateway
    listener: Listener
    account: Account

    async def address(self, path: str = "/hook", **fields: Any) -> dict[str, Any]:
        return await self.account.create_address(self.listener.url(path), **fields)

    async def send(self, data: bytes, *recipients: str, **kwargs: Any) -> Transcript:
        return await converse(self.gateway.port, data, list(recipients), **kwargs)


@pytest.fixture
async def hooks(
    make_gateway: GatewayFactory,
    listener: Listener,
    account: Account,
    make_poster: PosterFactory,
    private_targets: None,
) -> Hooks:
    gateway = await make_gateway()
    make_poster()
    return Hooks(gateway, listener, account)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throw-away certificate for the gateway's STARTTLS."""
    return self_signed(tmp_path_factory.mktemp("tls"), HOSTNAME)
