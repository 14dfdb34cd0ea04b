"""PUT /users: protected addresses, admin role, filter modes and the protected-address limit."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.api.helpers import assert_error, provision_names
from tests.conftest import Tenant, TenantFactory


async def put_user(
    client: httpx.AsyncClient,
    email: str,
    admin: str | None = "false",
    filter: str | None = None,
    body: dict[str, Any] | None = None,
) -> httpx.Response:
    params = {"email_address": email}
    if admin is not None:
        params["admin"] = admin
    if filter is not None:
        params["filter"] = filter
    return await client.put("/users", params=params, json=body)


async def list_items(client: httpx.AsyncClient, email: str, listname: str) -> list[str]:
    response = await client.get(f"/users/{email}/lists/{listname}")
    assert response.status_code == 200, response.text
    return [e["item"] for e in response.json()]


@pytest.fixture
async def acme(tenant: Tenant) -> Tenant:
    await provision_names(tenant.client, tenant.subscription, "example.com")
    return tenant


async def limited(make_tenant: TenantFactory, limit: int, *domains: str) -> Tenant:
    tenant = await make_tenant("limited", protected_address_limit=limit)
    await provision_names(tenant.client, tenant.subscription, *(domains or ("example.com",)))
    return tenant


# -- creating -------------------------------------------------------------------------


async def test_put_creates_a_filtered_user(acme: Tenant) -> None:
    response = await put_user(acme.client, "alice@example.com")
    assert response.status_code == 201, response.text
    assert response.json() == {
        "recipient": {"email_address": "alice@example.com", "roles": [], "filter": True},
        "list_entries": [],
    }
    # The user now exists: its lists can be read.
    assert await list_items(acme.client, "alice@example.com", "safelist") == []


async def test_address_is_normalised(acme: Tenant) -> None:
    response = await put_user(acme.client, "  Alice@EXAMPLE.com ")
    assert response.status_code == 201, response.text
    assert response.json()["recipient"]["email_address"] == "alice@example.com"
    again = await put_user(acme.client, "alice@example.com")
    assert again.status_code == 200


async def test_user_at_an_idn_domain(tenant: Tenant) -> None:
    await provision_names(tenant.client, tenant.subscription, "bücher.example")
    response = await put_user(tenant.client, "leser@bücher.example")
    assert response.status_code == 201, response.text
    again = await put_user(tenant.client, "leser@xn--bcher-kva.example")
    assert again.status_code == 200


async def test_admin_gets_the_admin_role_and_administers_the_domain(acme: Tenant) -> None:
    response = await put_user(acme.client, "boss@example.com", admin="true")
    assert response.status_code == 201, response.text
    assert response.json()["recipient"]["roles"] == ["admin"]
    plain = await put_user(acme.client, "staff@example.com", admin="false")
    assert plain.json()["recipient"]["roles"] == []
    domain = await acme.client.get("/domains/example.com")
    assert domain.status_code == 200, domain.text
    assert domain.json()["admins"] == ["boss@example.com"]


async def test_existing_user_answers_200_and_keeps_its_lists(acme: Tenant) -> None:
    first = await put_user(
        acme.client, "alice@example.com", body={"list_entries": {"safelist": ["a.example"]}}
    )
    assert first.status_code == 201, first.text
    again = await put_user(
        acme.client,
        "alice@example.com",
        body={"list_entries": {"safelist": ["b.example"], "blocklist": ["c.example"]}},
    )
    assert again.status_code == 200, again.text
    assert again.json()["recipient"] == first.json()["recipient"]
    assert await list_items(acme.client, "alice@example.com", "safelist") == ["a.example"]
    assert await list_items(acme.client, "alice@example.com", "blocklist") == []


async def test_list_entries_in_the_body_go_to_the_users_lists(acme: Tenant) -> None:
    body = {
        "list_entries": {
            "safelist": ["Friend@Partner.example", "partner.example"],
            "blocklist": ["192.0.2.0/24", "spam.example"],
        }
    }
    response = await put_user(acme.client, "alice@example.com", body=body)
    assert response.status_code == 201, response.text
    assert response.json()["list_entries"] == [
        {"item": "friend@partner.example", "item_type": "email_address", "action": "safelist"},
        {"item": "partner.example", "item_type": "domain", "action": "safelist"},
        {"item": "192.0.2.0/24", "item_type": "ip_address", "action": "blocklist"},
        {"item": "spam.example", "item_type": "domain", "action": "blocklist"},
    ]
    safelist = await list_items(acme.client, "alice@example.com", "safelist")
    assert safelist == ["friend@partner.example", "partner.example"]
    blocklist = await list_items(acme.client, "alice@example.com", "blocklist")
    assert blocklist == ["192.0.2.0/24", "spam.example"]
    # They are the user's entries, not the domain's or the account's.
    for url in ("/domains/example.com/lists/safelist", "/lists/safelist"):
        assert (await acme.client.get(url)).json() == []


async def test_duplicate_list_entries_in_the_body_are_kept_once(acme: Tenant) -> None:
    body = {"list_entries": {"safelist": ["a.example", "A.EXAMPLE"]}}
    response = await put_user(acme.client, "alice@example.com", body=body)
    assert response.status_code == 201, response.text
    assert await list_items(acme.client, "alice@example.com", "safelist") == ["a.example"]


@pytest.mark.parametrize(
    "body",
    [
        {"list_entries": {"safelist": ["not a domain"]}},
        {"list_entries": {"blocklist": ["a.example", "999.1.1.1"]}},
        {"list_entries": {"safelist": "a.example"}},
        {"list_entries": ["a.example"]},
    ],
)
async def test_invalid_list_entries_create_nothing(acme: Tenant, body: dict[str, Any]) -> None:
    assert_error(await put_user(acme.client, "alice@example.com", body=body), 400)
    # The user was not created: the next PUT creates it.
    assert (await put_user(acme.client, "alice@example.com")).status_code == 201


async def test_concurrent_puts_create_the_user_once(acme: Tenant) -> None:
    body = {"list_entries": {"safelist": ["a.example"]}}
    responses = await asyncio.gather(
        *(put_user(acme.client, "alice@example.com", body=body) for _ in range(6))
    )
    assert sorted(r.status_code for r in responses) == [200] * 5 + [201], [
        r.text for r in responses
    ]
    assert await list_items(acme.client, "alice@example.com", "safelist") == ["a.example"]


# -- refusals ---------------------------------------------------------------------------


async def test_admin_parameter_is_required_and_boolean(acme: Tenant) -> None:
    assert_error(await put_user(acme.client, "alice@example.com", admin=None), 400)
    assert_error(await put_user(acme.client, "alice@example.com", admin="maybe"), 400)
    assert (await put_user(acme.client, "alice@example.com")).status_code == 201


async def test_email_address_is_required(acme: Tenant) -> None:
    assert_error(await acme.client.put("/users", params={"admin": "false"}), 400)


@pytest.mark.parametrize(
    "email",
    [
        "",
        "alice",
        "alice@",
        "@example.com",
        "al ice@example.com",
        "alice..b@example.com",
        '"alice"@example.com',
        "alice@localhost",
        "alice@example.com,bob@example.com",
    ],
)
async def test_invalid_email_address_is_rejected(acme: Tenant, email: str) -> None:
    assert_error(await put_user(acme.client, email), 400)


@pytest.mark.parametrize("value", ["yes", "TRUE", "", "1", "computed"])
async def test_invalid_filter_value_is_rejected(acme: Tenant, value: str) -> None:
    assert_error(await put_user(acme.client, "alice@example.com", filter=value), 400)


async def test_domains_that_are_not_the_callers_are_forbidden(
    acme: Tenant, make_tenant: TenantFactory
) -> None:
    other = await make_tenant("other")
    await provision_names(other.client, other.subscription, "other.example")
    alias = await other.client.post("/domains/other.example/alias/alias.example")
    assert alias.status_code == 200, alias.text
    own_alias = await acme.client.post("/domains/example.com/alias/own-alias.example")
    assert own_alias.status_code == 200, own_alias.text
    for email in (
        "carol@other.example",
        "carol@alias.example",
        "alice@unprovisioned.example",
        "alice@own-alias.example",
    ):
        assert_error(await put_user(acme.client, email), 403)
    # The other customer can still create the address: acme's attempt left nothing behind.
    assert (await put_user(other.client, "carol@other.example")).status_code == 201


# -- the protected-address limit --------------------------------------------------------


async def test_filter_true_over_the_limit_is_forbidden(make_tenant: TenantFactory) -> None:
    t = await limited(make_tenant, 2)
    for name in ("a", "b"):
        created = await put_user(t.client, f"{name}@example.com", filter="true")
        assert created.status_code == 201, created.text
        assert created.json()["recipient"]["filter"] is True
    assert_error(await put_user(t.client, "c@example.com", filter="true"), 403)
    # c was not created.
    assert_error(await t.client.get("/users/c@example.com/lists/safelist"), 404)


async def test_compute_over_the_limit_creates_an_unfiltered_user(
    make_tenant: TenantFactory,
) -> None:
    t = await limited(make_tenant, 1)
    first = await put_user(t.client, "a@example.com")  # compute is the default
    assert first.status_code == 201
    assert first.json()["recipient"]["filter"] is True
    for mode in ("compute", None):
        over = await put_user(t.client, f"{mode}@example.com", filter=mode)
        assert over.status_code == 201, over.text
        assert over.json()["recipient"]["filter"] is False


async def test_unfiltered_users_do_not_count_against_the_limit(
    make_tenant: TenantFactory,
) -> None:
    t = await limited(make_tenant, 1)
    for name in ("x", "y", "z"):
        unfiltered = await put_user(t.client, f"{name}@example.com", filter="false")
        assert unfiltered.status_code == 201, unfiltered.text
        assert unfiltered.json()["recipient"]["filter"] is False
    filtered = await put_user(t.client, "a@example.com", filter="true")
    assert filtered.status_code == 201, filtered.text
    assert filtered.json()["recipient"]["filter"] is True
    assert_error(await put_user(t.client, "b@example.com", filter="true"), 403)


async def test_limit_zero_protects_nobody(make_tenant: TenantFactory) -> None:
    t = await limited(make_tenant, 0)
    assert_error(await put_user(t.client, "a@example.com", filter="true"), 403)
    computed = await put_user(t.client, "a@example.com", filter="compute")
    assert computed.json()["recipient"]["filter"] is False


async def test_limit_covers_every_domain_of_the_subscription(make_tenant: TenantFactory) -> None:
    t = await limited(make_tenant, 1, "a.example", "b.example")
    assert (await put_user(t.client, "x@a.example", filter="true")).status_code == 201
    assert_error(await put_user(t.client, "x@b.example", filter="true"), 403)


async def test_limits_are_per_subscription(make_tenant: TenantFactory) -> None:
    t = await limited(make_tenant, 1)
    other = await make_tenant("other", protected_address_limit=1)
    await provision_names(other.client, other.subscription, "other.example")
    assert (await put_user(t.client, "a@example.com", filter="true")).status_code == 201
    assert (await put_user(other.client, "a@other.example", filter="true")).status_code == 201


async def test_existing_user_is_not_refused_by_a_full_limit(make_tenant: TenantFactory) -> None:
    t = await limited(make_tenant, 1)
    assert (await put_user(t.client, "a@example.com", filter="true")).status_code == 201
    again = await put_user(t.client, "a@example.com", filter="true")
    assert again.status_code == 200, again.text
    assert again.json()["recipient"]["filter"] is True


async def test_no_limit_filters_everyone(acme: Tenant) -> None:
    for i in range(5):
        created = await put_user(acme.client, f"u{i}@example.com", filter="true")
        assert created.json()["recipient"]["filter"] is True
