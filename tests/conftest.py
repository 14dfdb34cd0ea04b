"""Shared fixtures: a migrated database per backend, services, and HTTP clients.

Every test runs on SQLite; when MAILMOAT_TEST_DATABASE_URL is set, tests that use
the ``services`` fixture run on PostgreSQL too, in a database created for the run.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete

from mailmoat.api.app import create_api
from mailmoat.api.ratelimit import RateLimiter
from mailmoat.bootstrap import bayes_learner
from mailmoat.db.database import Database
from mailmoat.db.migrate import migrate
from mailmoat.db.tables import Base
from mailmoat.domain.addresses import AddressPolicy
from mailmoat.domain.claims import NameRules
from mailmoat.pipeline.auth import is_public_suffix
from mailmoat.services.container import Services, build_services
from tests.daemons import rspamd_url, spamd_port  # noqa: F401  (session fixtures, one daemon each)
from tests.scratch_pg import throwaway_postgres

PG_URL = os.environ.get("MAILMOAT_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("MAILMOAT_TEST_REDIS_URL")
PUBLIC_URL = "https://gateway.test"
OWN_HOSTNAME = "mx.gateway.test"  # mailmoat's host name as the services know it
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


@pytest.fixture(scope="session", params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    drop = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'mailmoat.db'}"
    else:
        assert PG_URL is not None
        url, drop = await throwaway_postgres(PG_URL)
    db = Database(url)
    await migrate(db)
    yield db
    await db.dispose()
    if drop is not None:
        await drop()


async def wipe(db: Database) -> None:
    async with db.write() as session:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name != "server_secrets":
                await session.execute(delete(table))


@pytest.fixture(scope="session")
async def database_services(
    database: Database, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Services]:
    services = await build_services(
        database,
        secret_key=None,
        public_url=PUBLIC_URL,
        login_link_lifetime=timedelta(minutes=15),
        spool_dir=tmp_path_factory.mktemp("spool"),
        learner=bayes_learner(database, threshold=5.0),
        # The downstream servers of the tests listen on 127.0.0.1: the operator's
        # allowance. Webhook targets stay refused unless a test allows them.
        targets=AddressPolicy(allow_private=True),
        names=NameRules(is_public_suffix).with_own_names([OWN_HOSTNAME]),
    )
    yield services
    await services.close()


@pytest.fixture(scope="session")
def shared_app(database_services: Services) -> FastAPI:
    """One application per database for the whole run.

    FastAPI prepares every route of an application on its first request, which
    costs more than most tests; building the application once avoids paying it
    per test. Tests that need another rate limit build their own with create_api.
    """
    return create_api(database_services, RateLimiter(0))


@pytest.fixture
async def services(database: Database, database_services: Services) -> Services:
    """The services over a database emptied for this test."""
    await wipe(database)
    return database_services


@pytest.fixture
def set_targets(services: Services) -> Iterator[Callable[[AddressPolicy], None]]:
    """``set_targets(policy)``: downstream addresses set through the API and the
    console pass ``policy`` while the test runs (the operator's settings)."""
    before = services.domains.targets

    def use(policy: AddressPolicy) -> None:
        services.domains.targets = policy

    yield use
    services.domains.targets = before


@dataclass
class Tenant:
    """A customer with one subscription and one API key, and a client using that key."""

    handle: str
    customer_id: str
    key: str
    client: httpx.AsyncClient

    @property
    def subscription(self) -> str:
        return self.handle


TenantFactory = Callable[..., Awaitable[Tenant]]


@pytest.fixture
async def make_tenant(services: Services, shared_app: FastAPI) -> AsyncIterator[TenantFactory]:
    """Build tenants: ``await make_tenant("acme", domain_limit=5)``."""
    clients: list[httpx.AsyncClient] = []
    app = shared_app

    async def factory(
        handle: str = "acme",
        *,
        domain_limit: int | None = None,
        protected_address_limit: int | None = None,
    ) -> Tenant:
        customer = await services.customers.create(
            handle, domain_limit=domain_limit, protected_address_limit=protected_address_limit
        )
        key = (await services.keys.create(customer.id, "test")).token
        client = api_client(app, key)
        clients.append(client)
        return Tenant(handle, customer.id, key, client)

    yield factory
    for client in clients:
        await client.aclose()


def api_client(app: object, key: str | None) -> httpx.AsyncClient:
    headers = {"X-API-Key": key} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://gateway.test/inbound/v1",
        headers=headers,
    )


@pytest.fixture
async def tenant(make_tenant: TenantFactory) -> Tenant:
    return await make_tenant("acme")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"
