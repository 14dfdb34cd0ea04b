"""Safelists and blocklists over HTTP at the account, domain and user tiers.

Design choices checked here: adding an item that is already on the list answers
201 with the existing entry and keeps one copy; deleting an item that is not on
the list answers 204.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from mailmoat.api.app import create_api
from mailmoat.api.ratelimit import RateLimiter
from mailmoat.services.container import Services
from tests.api.helpers import add_user, assert_error, provision_names
from tests.conftest import Tenant, TenantFactory, api_client

DOMAIN = "example.com"
USER = "alice@example.com"
TIERS = {
    "account": "/lists",
    "domain": f"/domains/{DOMAIN}/lists",
    "user": f"/users/{USER}/lists",
}


@pytest.fixture
async def acme(tenant: Tenant) -> Tenant:
    """acme with the domain example.com and the user alice@example.com."""
    await provision_names(tenant.client, tenant.subscription, DOMAIN, "example.net")
    await add_user(tenant.client, USER)
    return tenant


@pytest.fixture(params=list(TIERS))
def base(request: pytest.FixtureRequest, acme: Tenant) -> str:
    return TIERS[request.param]


async def entries(client: httpx.AsyncClient, url: str) -> list[dict[str, str]]:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    body: list[dict[str, str]] = response.json()
    return body


async def add(client: httpx.AsyncClient, url: str, item: str) -> dict[str, str]:
    response = await client.post(url, json={"item": item})
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


async def requests(client: httpx.AsyncClient, url: str) -> list[httpx.Response]:
    return [
        await client.get(url),
        await client.post(url, json={"item": "partner.example"}),
        await client.delete(url, params={"item": "partner.example"}),
    ]


# -- adding, reading, removing ------------------------------------------------------


async def test_new_lists_are_empty(acme: Tenant, base: str) -> None:
    assert await entries(acme.client, f"{base}/safelist") == []
    assert await entries(acme.client, f"{base}/blocklist") == []


ITEMS = [
    # (posted, stored, item_type)
    ("sender@partner.example", "sender@partner.example", "email_address"),
    ("Other.Sender@Partner.EXAMPLE", "other.sender@partner.example", "email_address"),
    ("partner.example", "partner.example", "domain"),
    ("Spam.Example.ORG", "spam.example.org", "domain"),
    ("bücher.example", "xn--bcher-kva.example", "domain"),
    ("192.0.2.1", "192.0.2.1", "ip_address"),
    ("2001:DB8::1", "2001:db8::1", "ip_address"),
    ("198.51.100.0/24", "198.51.100.0/24", "ip_address"),
    ("2001:db8::/32", "2001:db8::/32", "ip_address"),
]


@pytest.mark.parametrize("listname", ["safelist", "blocklist"])
async def test_added_items_are_typed_normalised_and_listed(
    acme: Tenant, base: str, listname: str
) -> None:
    expected = []
    for item, stored, item_type in ITEMS:
        entry = {"item": stored, "item_type": item_type, "action": listname}
        assert await add(acme.client, f"{base}/{listname}", item) == entry, item
        expected.append(entry)
    assert await entries(acme.client, f"{base}/{listname}") == expected


async def test_entries_keep_the_order_they_were_added_in(acme: Tenant, base: str) -> None:
    items = ["zeta.example", "alpha.example", "192.0.2.9", "bob@alpha.example"]
    for item in items:
        await add(acme.client, f"{base}/blocklist", item)
    assert [e["item"] for e in await entries(acme.client, f"{base}/blocklist")] == items


INVALID_ITEMS = [
    "",
    "   ",
    "not a domain",
    "localhost",
    "user@",
    "@partner.example",
    "256.0.0.1",
    "192.0.2.0/33",
    "2001:db8:::1",
    "http://partner.example/",
    "*.partner.example",
]


async def test_invalid_items_are_rejected_and_not_stored(acme: Tenant, base: str) -> None:
    for item in INVALID_ITEMS:
        assert_error(await acme.client.post(f"{base}/safelist", json={"item": item}), 400)
    assert await entries(acme.client, f"{base}/safelist") == []


async def test_post_without_a_string_item_is_rejected(acme: Tenant, base: str) -> None:
    bodies: list[object] = [
        {},
        {"item": None},
        {"item": 42},
        {"item": ["a.example"]},
        {"other": "a.example"},
        ["a.example"],
        "a.example",
    ]
    for body in bodies:
        assert_error(await acme.client.post(f"{base}/safelist", json=body), 400)
    assert await entries(acme.client, f"{base}/safelist") == []


async def test_post_without_body_is_rejected(acme: Tenant, base: str) -> None:
    assert_error(await acme.client.post(f"{base}/safelist"), 400)
    bad_json = await acme.client.post(
        f"{base}/safelist", content=b"{", headers={"content-type": "application/json"}
    )
    assert_error(bad_json, 400)


async def test_delete_removes_only_that_item(acme: Tenant, base: str) -> None:
    for item in ("partner.example", "192.0.2.1", "bob@partner.example"):
        await add(acme.client, f"{base}/safelist", item)
    response = await acme.client.delete(f"{base}/safelist", params={"item": "192.0.2.1"})
    assert response.status_code == 204
    assert response.content == b""
    remaining = [e["item"] for e in await entries(acme.client, f"{base}/safelist")]
    assert remaining == ["partner.example", "bob@partner.example"]


async def test_delete_matches_the_normalised_item(acme: Tenant, base: str) -> None:
    spellings = [
        ("partner.example", "PARTNER.Example"),
        ("bob@partner.example", "Bob@Partner.example"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("2001:db8::1", "2001:DB8:0:0::1"),
        ("192.0.2.0/24", "192.0.2.7/24"),
    ]
    for added, deleted in spellings:
        await add(acme.client, f"{base}/blocklist", added)
        response = await acme.client.delete(f"{base}/blocklist", params={"item": deleted})
        assert response.status_code == 204
        assert await entries(acme.client, f"{base}/blocklist") == [], (added, deleted)


async def test_deleting_an_absent_item_is_not_an_error(acme: Tenant, base: str) -> None:
    await add(acme.client, f"{base}/safelist", "partner.example")
    for item in ("other.example", "not a valid item"):
        response = await acme.client.delete(f"{base}/safelist", params={"item": item})
        assert response.status_code == 204
    assert len(await entries(acme.client, f"{base}/safelist")) == 1


async def test_delete_without_item_is_rejected(acme: Tenant, base: str) -> None:
    await add(acme.client, f"{base}/safelist", "partner.example")
    assert_error(await acme.client.delete(f"{base}/safelist"), 400)
    assert len(await entries(acme.client, f"{base}/safelist")) == 1


async def test_adding_a_duplicate_is_idempotent(acme: Tenant, base: str) -> None:
    created = await add(acme.client, f"{base}/safelist", "x.example")
    for again in ("x.example", "X.Example", " x.example "):
        assert await add(acme.client, f"{base}/safelist", again) == created
    assert await entries(acme.client, f"{base}/safelist") == [created]


async def test_concurrent_duplicates_make_one_entry(acme: Tenant, base: str) -> None:
    url = f"{base}/blocklist"
    responses = await asyncio.gather(
        *(acme.client.post(url, json={"item": "race.example"}) for _ in range(8))
    )
    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
    assert [e["item"] for e in await entries(acme.client, url)] == ["race.example"]


# -- list names ---------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), [("whitelist", "safelist"), ("blacklist", "blocklist")])
async def test_deprecated_list_names_are_the_current_lists(
    acme: Tenant, base: str, old: str, new: str
) -> None:
    created = await add(acme.client, f"{base}/{old}", "partner.example")
    assert created["action"] == new
    assert await entries(acme.client, f"{base}/{new}") == [created]
    assert await entries(acme.client, f"{base}/{old}") == [created]
    await add(acme.client, f"{base}/{new}", "other.example")
    deleted = await acme.client.delete(f"{base}/{old}", params={"item": "other.example"})
    assert deleted.status_code == 204
    assert await entries(acme.client, f"{base}/{new}") == [created]


async def test_unknown_list_name_is_rejected(acme: Tenant, base: str) -> None:
    for listname in ("greylist", "allowlist", "Safelist", "SAFELIST"):
        for response in await requests(acme.client, f"{base}/{listname}"):
            assert_error(response, 400)
    assert await entries(acme.client, f"{base}/safelist") == []
    assert await entries(acme.client, f"{base}/blocklist") == []


# -- separation ---------------------------------------------------------------------


async def test_safelist_and_blocklist_are_separate(acme: Tenant, base: str) -> None:
    safe = await add(acme.client, f"{base}/safelist", "partner.example")
    assert await entries(acme.client, f"{base}/blocklist") == []
    blocked = await add(acme.client, f"{base}/blocklist", "partner.example")
    assert blocked == {**safe, "action": "blocklist"}
    await acme.client.delete(f"{base}/blocklist", params={"item": "partner.example"})
    assert await entries(acme.client, f"{base}/safelist") == [safe]
    assert await entries(acme.client, f"{base}/blocklist") == []


@pytest.mark.parametrize("tier", list(TIERS))
async def test_tiers_are_separate(acme: Tenant, tier: str) -> None:
    await add(acme.client, f"{TIERS[tier]}/safelist", "partner.example")
    for other, url in TIERS.items():
        listed = await entries(acme.client, f"{url}/safelist")
        assert [e["item"] for e in listed] == (["partner.example"] if other == tier else [])
    # Deleting at another tier leaves the entry where it is.
    for other, url in TIERS.items():
        if other != tier:
            await acme.client.delete(f"{url}/safelist", params={"item": "partner.example"})
    assert len(await entries(acme.client, f"{TIERS[tier]}/safelist")) == 1


async def test_domains_have_separate_lists(acme: Tenant) -> None:
    await add(acme.client, f"/domains/{DOMAIN}/lists/blocklist", "spam.example")
    assert await entries(acme.client, "/domains/example.net/lists/blocklist") == []


async def test_users_have_separate_lists(acme: Tenant) -> None:
    await add_user(acme.client, "bob@example.com")
    await add(acme.client, f"/users/{USER}/lists/blocklist", "spam.example")
    assert await entries(acme.client, "/users/bob@example.com/lists/blocklist") == []


# -- the domain in the path ---------------------------------------------------------


async def test_domain_tier_accepts_either_label_form(tenant: Tenant) -> None:
    await provision_names(tenant.client, tenant.subscription, "bücher.example")
    created = await add(tenant.client, "/domains/bücher.example/lists/safelist", "a.example")
    for name in ("xn--bcher-kva.example", "BÜCHER.example", "XN--BCHER-KVA.EXAMPLE"):
        assert await entries(tenant.client, f"/domains/{name}/lists/safelist") == [created]


@pytest.fixture
async def foreign(make_tenant: TenantFactory, acme: Tenant) -> Tenant:
    """Another customer, owning other.example with alias alias-of-other.example."""
    other = await make_tenant("other")
    await provision_names(other.client, other.subscription, "other.example")
    response = await other.client.post("/domains/other.example/alias/alias-of-other.example")
    assert response.status_code == 200, response.text
    await add_user(other.client, "carol@other.example")
    return other


async def test_domain_tier_refuses(acme: Tenant, foreign: Tenant) -> None:
    refusals = [
        ("unknown.example", 404),
        ("other.example", 403),
        ("alias-of-other.example", 403),
        ("not_a.domain", 400),
        ("localhost", 400),
    ]
    for domain, status in refusals:
        for response in await requests(acme.client, f"/domains/{domain}/lists/safelist"):
            assert_error(response, status)
    # Nothing was added to the other customer's lists.
    assert await entries(foreign.client, "/domains/other.example/lists/safelist") == []


async def test_domain_tier_refuses_own_alias(acme: Tenant) -> None:
    response = await acme.client.post(f"/domains/{DOMAIN}/alias/alias.example")
    assert response.status_code == 200, response.text
    for response in await requests(acme.client, "/domains/alias.example/lists/safelist"):
        assert_error(response, 403)


async def test_domain_associated_with_another_key_is_refused(
    services: Services, acme: Tenant
) -> None:
    second_key = (await services.keys.create(acme.customer_id, "second")).token
    async with api_client(create_api(services, RateLimiter(0)), second_key) as second:
        await second.post(
            "/domains",
            params={"associate-key": "true"},
            json={"domain": "private.example", "subscriptionHandle": acme.subscription},
        )
        await add(second, "/domains/private.example/lists/safelist", "partner.example")
        await add(second, "/lists/safelist", "shared.example")
    for response in await requests(acme.client, "/domains/private.example/lists/safelist"):
        assert_error(response, 403)
    # The account tier belongs to the customer, whichever key is used.
    assert [e["item"] for e in await entries(acme.client, "/lists/safelist")] == ["shared.example"]


# -- the user in the path ------------------------------------------------------------


async def test_user_tier_finds_the_user_however_spelled(acme: Tenant) -> None:
    created = await add(acme.client, f"/users/{USER}/lists/safelist", "partner.example")
    for spelling in ("Alice@Example.COM", "alice%40example.com", "alice@EXAMPLE.com"):
        listed = await entries(acme.client, f"/users/{spelling}/lists/safelist")
        assert listed == [created], spelling


@pytest.mark.parametrize(
    ("email", "path"),
    [
        ("alice+news@example.com", "alice+news@example.com"),
        ("o'neil@example.com", "o'neil@example.com"),
        ("a/b@example.com", "a/b@example.com"),
        ("a/b@example.com", "a%2Fb@example.com"),
        ("what?@example.com", "what%3F@example.com"),
        ("hash#tag@example.com", "hash%23tag@example.com"),
    ],
)
async def test_user_tier_for_addresses_with_special_characters(
    acme: Tenant, email: str, path: str
) -> None:
    await add_user(acme.client, email)
    created = await add(acme.client, f"/users/{path}/lists/safelist", "partner.example")
    assert await entries(acme.client, f"/users/{path}/lists/safelist") == [created]
    response = await acme.client.delete(
        f"/users/{path}/lists/safelist", params={"item": "partner.example"}
    )
    assert response.status_code == 204
    assert await entries(acme.client, f"/users/{path}/lists/safelist") == []
    # alice's own list was not touched by any of this.
    assert await entries(acme.client, f"/users/{USER}/lists/safelist") == []


async def test_user_at_an_idn_domain(tenant: Tenant) -> None:
    await provision_names(tenant.client, tenant.subscription, "bücher.example")
    await add_user(tenant.client, "leser@bücher.example")
    created = await add(tenant.client, "/users/leser@bücher.example/lists/blocklist", "x.example")
    listed = await entries(tenant.client, "/users/leser@xn--bcher-kva.example/lists/blocklist")
    assert listed == [created]


async def test_user_tier_refuses(acme: Tenant, foreign: Tenant) -> None:
    refusals = [
        ("nobody@example.com", 404),
        ("alice@unknown.example", 404),
        ("carol@other.example", 403),
        ("carol@alias-of-other.example", 403),
        ("not-an-address", 400),
        ("alice@", 400),
        ("alice@localhost", 400),
    ]
    for email, status in refusals:
        for response in await requests(acme.client, f"/users/{email}/lists/blocklist"):
            assert_error(response, status)
    assert await entries(foreign.client, "/users/carol@other.example/lists/blocklist") == []


async def test_user_lists_go_when_the_domain_goes(acme: Tenant) -> None:
    await add(acme.client, f"/users/{USER}/lists/safelist", "partner.example")
    assert (await acme.client.delete(f"/domains/{DOMAIN}")).status_code == 204
    for response in await requests(acme.client, f"/users/{USER}/lists/safelist"):
        assert_error(response, 404)


# -- the account tier belongs to one customer --------------------------------------


async def test_account_lists_are_per_customer(acme: Tenant, make_tenant: TenantFactory) -> None:
    other = await make_tenant("other")
    mine = await add(acme.client, "/lists/blocklist", "spam.example")
    assert await entries(other.client, "/lists/blocklist") == []
    theirs = await add(other.client, "/lists/blocklist", "spam.example")
    assert theirs == mine
    deleted = await other.client.delete("/lists/blocklist", params={"item": "spam.example"})
    assert deleted.status_code == 204
    assert await entries(other.client, "/lists/blocklist") == []
    assert await entries(acme.client, "/lists/blocklist") == [mine]


async def test_lists_need_an_api_key(services: Services, acme: Tenant) -> None:
    async with api_client(create_api(services, RateLimiter(0)), None) as anonymous:
        for url in TIERS.values():
            for response in await requests(anonymous, f"{url}/safelist"):
                assert_error(response, 401)
    for url in TIERS.values():
        assert await entries(acme.client, f"{url}/safelist") == []
