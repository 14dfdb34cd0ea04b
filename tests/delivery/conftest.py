"""Delivery end to end in the test's event loop: SMTP intake, the queue, a worker,
and real downstream SMTP servers on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from mailmoat.config import Settings
from mailmoat.delivery.destinations import NameResolver
from mailmoat.delivery.worker import DeliveryWorker
from mailmoat.delivery_runtime import running_delivery
from mailmoat.services.container import Services
from tests.downstream import Downstream
from tests.smtp import conftest as smtp_fixtures
from tests.smtp.conftest import DOMAIN, HOSTNAME, Gateway, GatewayFactory

make_gateway = smtp_fixtures.make_gateway

# Short enough for tests, in the same shape as the defaults (minutes, an hour, days).
FAST = {
    "delivery_retry_first": 0.3,
    "delivery_retry_max": 0.6,
    "delivery_lifetime": 60.0,
    "delivery_poll_interval": 0.05,
    "delivery_lease": 5.0,
    "delivery_connect_timeout": 2.0,
    "delivery_timeout": 5.0,
    "smtp_hostname": HOSTNAME,
}


@dataclass
class Mailroom:
    """A gateway with its delivery worker, and the server that receives DSNs."""

    gateway: Gateway
    worker: DeliveryWorker
    bounces: Downstream

    @property
    def api(self) -> Any:
        return self.gateway.api

    async def route(self, *records: dict[str, Any], domain: str = DOMAIN) -> None:
        response = await self.api.put(
            f"/domains/{domain}/downstream-address", json={"records": list(records)}
        )
        assert response.status_code == 201, response.text

    async def record(self, message_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/messages/{message_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def wait_state(
        self, message_id: str, *states: str, within: float = 10.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            record = await self.record(message_id)
            if record["state"] in states:
                return record
            if time.monotonic() > deadline:
                raise AssertionError(f"message stayed {record['state']}: {record}")
            await asyncio.sleep(0.05)

    async def send(self, body: str | bytes, **kwargs: Any) -> str:
        """Send one message through SMTP; returns its id in the message log."""
        before = {m["id"] for m in await self.gateway.messages(limit=1000)}
        errors, reply = await self.gateway.send(body, **kwargs)
        assert errors == {} and reply.startswith("2"), reply
        new = [m for m in await self.gateway.messages(limit=1000) if m["id"] not in before]
        assert len(new) == 1, new
        return str(new[0]["id"])


def mx(
    port: int, *, priority: int = 10, weight: int = 10, target: str = "127.0.0.1"
) -> dict[str, Any]:
    return {"priority": priority, "weight": weight, "port": port, "target": target}


def closed_port() -> int:
    from tests.served import free_port

    return free_port()


@pytest.fixture
def downstream() -> Iterator[Downstream]:
    with Downstream() as server:
        yield server


@pytest.fixture
def bounces() -> Iterator[Downstream]:
    with Downstream(hostname="bounces.test") as server:
        yield server


MailroomFactory = Callable[..., Awaitable[Mailroom]]


@pytest.fixture
async def make_mailroom(
    services: Services, make_gateway: GatewayFactory, bounces: Downstream
) -> AsyncIterator[MailroomFactory]:
    """``await make_mailroom(dsn=False, resolver=...)``: settings override FAST."""
    async with AsyncExitStack() as stack:

        async def factory(
            *,
            resolver: NameResolver | None = None,
            gateway_options: dict[str, Any] | None = None,
            **overrides: Any,
        ) -> Mailroom:
            gateway = await make_gateway(**(gateway_options or {}))
            settings = Settings(
                **FAST
                | {
                    "dsn_relay": f"127.0.0.1:{bounces.port}",
                    "dns_servers": "127.0.0.1:9",
                    "smtp_listen": f"127.0.0.1:{gateway.port}",
                    # The tests' downstream servers listen on 127.0.0.1.
                    "downstream_allow_private": True,
                }
                | overrides
            )
            worker = await stack.enter_async_context(
                running_delivery(settings, services, resolver=resolver)
            )
            return Mailroom(gateway, worker, bounces)

        yield factory


@pytest.fixture
async def mailroom(make_mailroom: MailroomFactory) -> Mailroom:
    return await make_mailroom()
