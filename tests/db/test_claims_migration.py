"""Revision 0008 fills the claimed names from the domains, aliases and custom domains
that exist: after the upgrade they hold their names against newcomers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, insert

from mailmoat.api.app import create_api
from mailmoat.api.ratelimit import RateLimiter
from mailmoat.db.database import Database
from mailmoat.db.migrate import alembic_config, migrate
from mailmoat.db.tables import (
    CustomDomain,
    Customer,
    Domain,
    DomainAlias,
    Subscription,
    WebhookAddress,
)
from mailmoat.domain.claims import NameRules
from mailmoat.pipeline.auth import is_public_suffix
from mailmoat.services.container import build_services
from tests.api.helpers import assert_error
from tests.conftest import BACKENDS, PG_URL, PUBLIC_URL, api_client
from tests.scratch_pg import throwaway_postgres

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
async def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    drop = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'mailmoat.db'}"
    else:
        assert PG_URL is not None
        url, drop = await throwaway_postgres(PG_URL)
    db = Database(url)
    yield db
    await db.dispose()
    if drop is not None:
        await drop()


def _upgrade_to(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _domain(domain_id: str, customer: str, name: str, minutes: int) -> dict[str, object]:
    return {
        "id": domain_id,
        "customer_id": customer,
        "subscription_id": f"s-{customer}",
        "name_ascii": name,
        "name_unicode": name,
        "abuse_policy": "quarantine",
        "abuse_policy_override": False,
        "spam_header_name": "X-Spam-Flag",
        "spam_header_value": "YES",
        "created_at": T0 + timedelta(minutes=minutes),
    }


async def test_existing_names_are_claimed_by_the_upgrade(
    fresh_database: Database, tmp_path: Path
) -> None:
    db = fresh_database
    async with db.write_engine.connect() as conn:
        await conn.run_sync(_upgrade_to, "0007")
        await conn.commit()
    async with db.write() as session:
        for handle in ("alpha", "beta"):
            await session.execute(insert(Customer).values(id=handle, handle=handle, created_at=T0))
            await session.execute(
                insert(Subscription).values(
                    id=f"s-{handle}", customer_id=handle, handle=handle, created_at=T0
                )
            )
        await session.execute(
            insert(Domain),
            [
                _domain("d1", "alpha", "example.com", 1),
                # An overlap the rule did not stop before: kept, and working.
                _domain("d2", "beta", "sub.example.com", 2),
            ],
        )
        await session.execute(
            insert(DomainAlias).values(
                id="a1",
                domain_id="d1",
                name_ascii="mail.example.org",
                name_unicode="mail.example.org",
            )
        )
        await session.execute(
            insert(WebhookAddress).values(
                id="w1",
                customer_id="beta",
                token="0123456789abcdef",
                target="https://hooks.example.net/in",
                target_format="json+n",
                mode="sync",
                max_size=1 << 20,
                created_at=T0,
                updated_at=T0,
            )
        )
        await session.execute(
            insert(CustomDomain).values(
                id="c1",
                customer_id="beta",
                address_id="w1",
                name_ascii="*.shop.example.net",
                name_unicode="*.shop.example.net",
                created_at=T0 + timedelta(minutes=3),
            )
        )
    await migrate(db)

    services = await build_services(
        db,
        secret_key=None,
        public_url=PUBLIC_URL,
        login_link_lifetime=timedelta(minutes=15),
        spool_dir=tmp_path / "spool",
        names=NameRules(is_public_suffix),
    )
    try:
        newcomer = await services.customers.create("gamma")
        key = (await services.keys.create(newcomer.id, "test")).token
        alpha_key = (await services.keys.create("alpha", "test")).token
        app = create_api(services, RateLimiter(0))
        async with api_client(app, key) as gamma, api_client(app, alpha_key) as alpha:
            for name in ("other.example.com", "example.org", "shop.example.net", "example.net"):
                response = await gamma.post(
                    "/domains", json={"domain": name, "subscriptionHandle": "gamma"}
                )
                assert_error(response, 409, mentions="another customer")
            # The holders keep nesting their own names.
            response = await alpha.post(
                "/domains", json={"domain": "eu.example.org", "subscriptionHandle": "alpha"}
            )
            assert response.status_code == 201, response.text
    finally:
        await services.close()
