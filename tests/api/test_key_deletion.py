"""Deleting API keys: a key that holds domain associations is deleted only by itself
(or the command line); a deleted key stops working, and issues nothing, at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from mailmoat.api.app import create_api
from mailmoat.api.ratelimit import RateLimiter
from mailmoat.db.tables import Domain
from mailmoat.services.container import Services, build_services
from tests.api.helpers import assert_error, listed, provision, provision_names, shown
from tests.conftest import PUBLIC_URL, Tenant, api_client


@dataclass
class Key:
    id: str
    token: str
    client: httpx.AsyncClient


async def own_id(client: httpx.AsyncClient, description: str) -> str:
    keys = (await client.get("/api-keys")).json()
    [found] = [k["id"] for k in keys if k["description"] == description]
    return str(found)


@pytest.fixture
async def key_b(tenant: Tenant, shared_app: FastAPI) -> AsyncIterator[Key]:
    """A second key of acme, made through the API by the tenant's key ("key A")."""
    created = (await tenant.client.post("/api-keys", json={"description": "key B"})).json()
    async with api_client(shared_app, created["apiKey"]) as client:
        yield Key(created["id"], created["apiKey"], client)


@pytest.fixture
async def key_a(tenant: Tenant) -> Key:
    return Key(await own_id(tenant.client, "test"), tenant.key, tenant.client)


async def test_other_key_cannot_delete_a_key_holding_associations(
    tenant: Tenant, key_a: Key, key_b: Key
) -> None:
    private = await provision(
        key_a.client, "private.example", tenant.subscription, params={"associate-key": "true"}
    )
    refused = await key_b.client.delete(f"/api-keys/{key_a.id}")
    assert_error(refused, 403, mentions="associations")
    assert "private.example" not in refused.text  # key B learns no names it cannot see
    # Key A keeps working, and keeps its domain to itself.
    assert await listed(key_a.client) == (["private.example"], 1)
    assert await shown(key_a.client, "private.example") == private
    assert await listed(key_b.client) == ([], 0)
    assert_error(await key_b.client.get("/domains/private.example"), 403)
    assert key_a.id in [k["id"] for k in (await key_b.client.get("/api-keys")).json()]


async def test_a_key_holding_associations_may_delete_itself(
    tenant: Tenant, key_a: Key, key_b: Key
) -> None:
    await provision(
        key_a.client, "private.example", tenant.subscription, params={"associate-key": "true"}
    )
    deleted = await key_a.client.delete(f"/api-keys/{key_a.id}")
    assert deleted.status_code == 204, deleted.text
    assert_error(await key_a.client.get("/domains"), 401)
    assert await listed(key_b.client) == (["private.example"], 1)  # released
    assert [k["id"] for k in (await key_b.client.get("/api-keys")).json()] == [key_b.id]


async def test_a_key_without_associations_is_deleted_by_another_key(
    tenant: Tenant, key_a: Key, key_b: Key
) -> None:
    await provision_names(key_a.client, tenant.subscription, "open.example")
    # Key B's own association does not matter: only the deleted key's does.
    await provision(
        key_b.client, "b-only.example", tenant.subscription, params={"associate-key": "true"}
    )
    deleted = await key_b.client.delete(f"/api-keys/{key_a.id}")
    assert deleted.status_code == 204, deleted.text
    assert_error(await key_a.client.get("/domains"), 401)
    assert await listed(key_b.client) == (["b-only.example", "open.example"], 2)


async def test_an_association_made_during_a_deletion_is_not_released(
    services: Services, tenant: Tenant, key_a: Key, key_b: Key
) -> None:
    """Key A associates a domain while key B deletes key A: the deletion waits for the
    association, sees it and is refused, so the domain never slips to key B."""
    await provision_names(key_a.client, tenant.subscription, "racing.example")
    async with services.db.write() as session:  # key A's association, not yet committed
        await session.execute(
            update(Domain).where(Domain.name_ascii == "racing.example").values(api_key_id=key_a.id)
        )
        deletion = asyncio.create_task(key_b.client.delete(f"/api-keys/{key_a.id}"))
        await asyncio.sleep(0.5)
        assert not deletion.done()
    assert_error(await deletion, 403)
    assert await listed(key_a.client) == (["racing.example"], 1)
    assert await listed(key_b.client) == ([], 0)


# -- a node that trusts keys from its cache --------------------------------------------


@pytest.fixture
async def node(services: Services, tmp_path: Path) -> AsyncIterator[Services]:
    """Another node over the test database, trusting a checked key for 5 minutes."""
    other = await build_services(
        services.db,
        secret_key=None,
        public_url=PUBLIC_URL,
        login_link_lifetime=timedelta(minutes=15),
        spool_dir=tmp_path / "spool",
        key_cache_seconds=300,
    )
    yield other
    await other.close()


async def test_a_refused_deletion_leaves_the_key_working_on_a_caching_node(
    node: Services,
) -> None:
    customer = await node.customers.create("cached")
    holder = await node.keys.create(customer.id, "holder")
    other = await node.keys.create(customer.id, "other")
    app = create_api(node, RateLimiter(0))
    async with api_client(app, holder.token) as a, api_client(app, other.token) as b:
        await provision(a, "held.example", "cached", params={"associate-key": "true"})
        assert_error(await b.delete(f"/api-keys/{holder.key.id}"), 403)
        assert await listed(a) == (["held.example"], 1)
        deleted = await a.delete(f"/api-keys/{holder.key.id}")
        assert deleted.status_code == 204, deleted.text
        assert_error(await a.get("/subscriptions"), 401)  # at once, despite the cache
        assert await listed(b) == (["held.example"], 1)


async def test_a_key_deleted_elsewhere_issues_no_login_links(
    services: Services, node: Services
) -> None:
    """A node may still trust a key deleted on another node (or by the command line)
    for its cache time, but the key issues no login link from that moment on."""
    customer = await node.customers.create("cached")
    doomed = await node.keys.create(customer.id, "doomed")
    app = create_api(node, RateLimiter(0))
    async with api_client(app, doomed.token) as client:
        await provision_names(client, "cached", "links.example")
        assert (await client.get("/domains/links.example/login-link")).status_code == 200
        await services.keys.delete(doomed.key.id)  # elsewhere: not this node's cache
        assert (await client.get("/status")).status_code == 200  # still trusted here
        assert_error(await client.get("/domains/links.example/login-link"), 401)
        batch = await client.post(
            "/domains/batch/login-link", json={"domains": [{"domain": "links.example"}]}
        )
        assert_error(batch, 401)
