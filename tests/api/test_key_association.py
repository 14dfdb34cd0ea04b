"""Key association (associate-key, PUT api-key, key deletion) and tenant isolation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mailmoat.services.container import Services
from tests.api.helpers import (
    assert_error,
    call,
    client_with_key,
    listed,
    operation_params,
    provision,
    provision_many,
    shown,
)
from tests.conftest import Tenant, TenantFactory


@dataclass
class SecondKey:
    id: str
    token: str
    client: httpx.AsyncClient


@pytest.fixture
async def key_b(
    tenant: Tenant, services: Services, shared_app: FastAPI
) -> AsyncIterator[SecondKey]:
    """A second API key of acme (the tenant's own key is "key A")."""
    new = await services.keys.create(tenant.customer_id, "key B")
    async with client_with_key(shared_app, new.token) as client:
        yield SecondKey(new.key.id, new.token, client)


@pytest.fixture
async def private(tenant: Tenant, key_b: SecondKey) -> dict[str, Any]:
    """private.example, associated with key A; shared.example, associated with no key."""
    await provision_many(tenant.client, tenant.subscription, ["shared.example"])
    return await provision(
        tenant.client,
        "private.example",
        tenant.subscription,
        params={"associate-key": "true"},
        aliases=["private-alias.example"],
    )


async def test_associated_domain_is_invisible_to_other_keys(
    tenant: Tenant, key_b: SecondKey, private: dict[str, Any]
) -> None:
    assert await listed(tenant.client) == (["private.example", "shared.example"], 2)
    assert await listed(key_b.client) == (["shared.example"], 1)
    assert await listed(key_b.client, domains="private.example,shared.example") == (
        ["shared.example"],
        1,
    )
    assert await listed(key_b.client, domains="private.example") == ([], 0)
    # Unassociated domains are open to every key of the customer.
    assert (await shown(key_b.client, "shared.example"))["domain"] == "shared.example"


@pytest.mark.parametrize(("method", "path", "body"), operation_params())
async def test_other_key_gets_403_on_an_associated_domain(
    tenant: Tenant,
    key_b: SecondKey,
    private: dict[str, Any],
    method: str,
    path: str,
    body: Any,
) -> None:
    assert_error(await call(key_b.client, method, path, body, "private.example"), 403)
    assert await shown(tenant.client, "private.example") == private
    assert await listed(key_b.client) == (["shared.example"], 1)


async def test_other_key_cannot_take_over_an_associated_domain(
    tenant: Tenant, key_b: SecondKey, private: dict[str, Any]
) -> None:
    for params in ({}, {"associate-key": "true"}, {"overwrite": "true"}):
        response = await key_b.client.post(
            "/domains",
            params=params,
            json={
                "domain": "private.example",
                "subscriptionHandle": tenant.subscription,
                "admins": ["intruder@private.example"],
            },
        )
        assert_error(response, 403)
    assert await shown(tenant.client, "private.example") == private


async def test_associating_an_existing_domain(tenant: Tenant, key_b: SecondKey) -> None:
    created = await provision(tenant.client, "later.example", tenant.subscription)
    assert await listed(key_b.client) == (["later.example"], 1)
    again = await provision(
        tenant.client,
        "later.example",
        tenant.subscription,
        status=200,
        params={"associate-key": "true"},
    )
    assert again == created
    assert await listed(key_b.client) == ([], 0)
    assert_error(await key_b.client.get("/domains/later.example"), 403)


async def test_associate_key_false_leaves_the_domain_open(tenant: Tenant, key_b: SecondKey) -> None:
    await provision(
        tenant.client, "open.example", tenant.subscription, params={"associate-key": "false"}
    )
    assert await listed(key_b.client) == (["open.example"], 1)


async def test_move_domain_to_another_key(
    tenant: Tenant, key_b: SecondKey, private: dict[str, Any]
) -> None:
    response = await tenant.client.put(
        "/domains/private.example/api-key", json={"apiKey": key_b.token}
    )
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert await listed(key_b.client) == (["private.example", "shared.example"], 2)
    assert await shown(key_b.client, "private.example") == private
    assert await listed(tenant.client) == (["shared.example"], 1)
    assert_error(await tenant.client.get("/domains/private.example"), 403)
    assert_error(
        await tenant.client.put("/domains/private.example/api-key", json={"apiKey": tenant.key}),
        403,
    )
    # The new holder can give it back.
    response = await key_b.client.put(
        "/domains/private.example/api-key", json={"apiKey": tenant.key}
    )
    assert response.status_code == 204
    assert await listed(tenant.client) == (["private.example", "shared.example"], 2)


async def test_associate_an_open_domain_with_a_key_through_api_key(
    tenant: Tenant, key_b: SecondKey, private: dict[str, Any]
) -> None:
    response = await key_b.client.put(
        "/domains/shared.example/api-key", json={"apiKey": key_b.token}
    )
    assert response.status_code == 204, response.text
    assert await listed(tenant.client) == (["private.example"], 1)
    assert await listed(key_b.client) == (["shared.example"], 1)


@pytest.mark.parametrize(
    "api_key",
    ["not-a-key", "", "mm" + "0" * 43, "other-customers-key"],
    ids=["garbage", "empty", "well-formed-unknown", "other-customer"],
)
async def test_api_key_that_is_not_the_customers_is_400(
    tenant: Tenant,
    make_tenant: TenantFactory,
    key_b: SecondKey,
    private: dict[str, Any],
    api_key: str,
) -> None:
    if api_key == "other-customers-key":
        api_key = (await make_tenant("globex")).key
    response = await tenant.client.put("/domains/private.example/api-key", json={"apiKey": api_key})
    assert_error(response, 400)
    assert await listed(tenant.client) == (["private.example", "shared.example"], 2)
    assert await listed(key_b.client) == (["shared.example"], 1)


@pytest.mark.parametrize(
    "body", [{}, {"apiKey": None}, {"key": "x"}], ids=["empty", "null", "wrong-field"]
)
async def test_api_key_body_malformed_is_400(
    tenant: Tenant, private: dict[str, Any], body: dict[str, Any]
) -> None:
    assert_error(await tenant.client.put("/domains/private.example/api-key", json=body), 400)
    assert await listed(tenant.client) == (["private.example", "shared.example"], 2)


async def test_deleting_a_key_releases_its_domains(
    tenant: Tenant, key_b: SecondKey, private: dict[str, Any]
) -> None:
    moved = await tenant.client.put(
        "/domains/private.example/api-key", json={"apiKey": key_b.token}
    )
    assert moved.status_code == 204
    await provision(
        key_b.client, "b-only.example", tenant.subscription, params={"associate-key": "true"}
    )
    assert await listed(tenant.client) == (["shared.example"], 1)

    # Key B holds associations: it alone can delete itself.
    assert_error(await tenant.client.delete(f"/api-keys/{key_b.id}"), 403)
    deleted = await key_b.client.delete(f"/api-keys/{key_b.id}")
    assert deleted.status_code == 204, deleted.text
    assert await listed(tenant.client) == (
        ["b-only.example", "private.example", "shared.example"],
        3,
    )
    assert await shown(tenant.client, "private.example") == private
    # The deleted key itself no longer works.
    assert_error(await key_b.client.get("/domains"), 401)
    # Deleting it again is 404.
    assert_error(await tenant.client.delete(f"/api-keys/{key_b.id}"), 404)


# -- tenant isolation -----------------------------------------------------------------


@pytest.fixture
async def globex(make_tenant: TenantFactory) -> Tenant:
    """Another customer, with nothing shared with acme."""
    return await make_tenant("globex")


@pytest.fixture
async def acme_domains(tenant: Tenant) -> dict[str, Any]:
    await provision_many(tenant.client, tenant.subscription, ["open.example", "other.example"])
    return await provision(
        tenant.client,
        "mine.example",
        tenant.subscription,
        aliases=["mine-alias.example"],
        params={"associate-key": "true"},
    )


async def test_other_customer_sees_nothing(
    tenant: Tenant, globex: Tenant, acme_domains: dict[str, Any]
) -> None:
    await provision(globex.client, "globex.example", globex.subscription)
    assert await listed(globex.client) == (["globex.example"], 1)
    assert await listed(globex.client, domains="mine.example,open.example") == ([], 0)
    assert await listed(globex.client, limit=5000) == (["globex.example"], 1)
    assert await listed(tenant.client) == (
        ["mine.example", "open.example", "other.example"],
        3,
    )


@pytest.mark.parametrize(("method", "path", "body"), operation_params())
async def test_other_customer_gets_403_everywhere(
    tenant: Tenant,
    globex: Tenant,
    acme_domains: dict[str, Any],
    method: str,
    path: str,
    body: Any,
) -> None:
    before = await shown(tenant.client, "open.example")
    for domain in ("open.example", "mine.example", "mine-alias.example", "MINE.example"):
        assert_error(await call(globex.client, method, path, body, domain), 403)
    assert await shown(tenant.client, "mine.example") == acme_domains
    assert await shown(tenant.client, "open.example") == before


async def test_other_customer_cannot_provision_against_acmes_subscription(
    tenant: Tenant, globex: Tenant, acme_domains: dict[str, Any]
) -> None:
    single = await globex.client.post(
        "/domains", json={"domain": "sneaky.example", "subscriptionHandle": tenant.subscription}
    )
    assert_error(single, 403)
    many = await globex.client.post(
        "/domains/batch",
        params={"subscriptionHandle": tenant.subscription},
        json={"domains": [{"domain": "sneaky.example"}]},
    )
    assert_error(many, 403)
    assert await listed(tenant.client) == (
        ["mine.example", "open.example", "other.example"],
        3,
    )
    assert await listed(globex.client) == ([], 0)


@pytest.mark.parametrize("name", ["open.example", "mine.example", "mine-alias.example"])
async def test_other_customer_cannot_provision_acmes_names(
    tenant: Tenant, globex: Tenant, acme_domains: dict[str, Any], name: str
) -> None:
    for params in ({}, {"overwrite": "true"}, {"associate-key": "true"}):
        response = await globex.client.post(
            "/domains",
            params=params,
            json={"domain": name, "subscriptionHandle": globex.subscription, "admins": []},
        )
        assert_error(response, 409)
    assert await shown(tenant.client, "mine.example") == acme_domains
    assert await listed(globex.client) == ([], 0)


async def test_other_customer_cannot_use_acmes_names_as_aliases(
    tenant: Tenant, globex: Tenant, acme_domains: dict[str, Any]
) -> None:
    await provision(globex.client, "globex.example", globex.subscription)
    for alias in ("open.example", "mine-alias.example"):
        response = await globex.client.post(f"/domains/globex.example/alias/{alias}")
        assert_error(response, 409)
    assert (await shown(globex.client, "globex.example"))["aliases"] == []
