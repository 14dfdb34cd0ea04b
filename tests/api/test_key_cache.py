"""The API-key check is cached per node, but a deleted key stops working at once."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from mailmoat.api.app import create_api
from mailmoat.api.ratelimit import RateLimiter
from mailmoat.services.container import Services, build_services
from tests.conftest import PUBLIC_URL, api_client


@pytest.fixture
async def cached(services: Services, tmp_path: Path) -> Services:
    """Services over the emptied test database, trusting a checked key for 5 minutes."""
    return await build_services(
        services.db,
        secret_key=None,
        public_url=PUBLIC_URL,
        login_link_lifetime=timedelta(minutes=15),
        spool_dir=tmp_path / "spool",
        key_cache_seconds=300,
    )


async def test_deleted_key_is_refused_at_once_despite_the_cache(cached: Services) -> None:
    customer = await cached.customers.create("cached")
    doomed = await cached.keys.create(customer.id, "doomed")
    keeper = await cached.keys.create(customer.id, "keeper")
    app = create_api(cached, RateLimiter(0))
    async with api_client(app, doomed.token) as client, api_client(app, keeper.token) as other:
        assert (await client.get("/subscriptions")).status_code == 200  # now cached
        deleted = await other.delete(f"/api-keys/{doomed.key.id}")
        assert deleted.status_code == 204
        assert (await client.get("/subscriptions")).status_code == 401
        assert (await other.get("/subscriptions")).status_code == 200


async def test_a_wrong_key_is_never_served_from_the_cache(cached: Services) -> None:
    customer = await cached.customers.create("cached")
    key = await cached.keys.create(customer.id)
    assert await cached.keys.authenticate(key.token) is not None
    assert await cached.keys.authenticate(key.token + "x") is None
    assert await cached.keys.authenticate(key.token[:-1]) is None
