"""POST/GET /domains, GET/DELETE /domains/{domain}, POST /domains/batch/deprovision."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.api.helpers import (
    DEFAULT_SETTINGS,
    MX1,
    MX2,
    assert_error,
    listed,
    provision,
    provision_many,
    shown,
)
from tests.conftest import Tenant, TenantFactory

INVALID_NAMES = [
    "bad..name",
    "-x.com",
    "x-.com",
    "nodot",
    "exa mple.com",
    "under_score.com",
    "a" * 64 + ".com",
    ("a" * 60 + ".") * 5 + "com",  # longer than 253 characters
    "example.123",
    "xn--zz-.com",  # not a valid A-label
]

FULL_SECTIONS: dict[str, Any] = {
    "settings": {
        "abusePolicy": "flag",
        "abusePolicyOverride": True,
        "spamHeaderName": "X-Spam",
        "spamHeaderValue": "yes, spam",
    },
    "admins": ["boss@full.example", "Admin@Full.example"],
    "downstreamAddresses": [MX1, MX2],
    "aliases": ["full-alias.example", "voll-bücher.example"],
}


# -- POST /domains ------------------------------------------------------------------


async def test_provision_new_domain_answers_201_with_defaults(tenant: Tenant) -> None:
    body = await provision(tenant.client, "example.com", tenant.subscription)
    assert body == {
        "domain": "example.com",
        "subscriptionHandle": tenant.subscription,
        "settings": DEFAULT_SETTINGS,
        "admins": [],
        "downstreamAddresses": [],
        "aliases": [],
    }
    assert await shown(tenant.client, "example.com") == body


@pytest.mark.parametrize(
    ("given", "other_form"),
    [
        ("bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "bücher.example"),
        ("BÜCHER.Example", "xn--bcher-kva.example"),
    ],
    ids=["u-label", "a-label", "mixed-case"],
)
async def test_provision_accepts_both_label_forms(
    tenant: Tenant, given: str, other_form: str
) -> None:
    created = await provision(tenant.client, given, tenant.subscription)
    assert created["domain"] == "bücher.example"
    # Stored once, found by either form; provisioning the other form is "already yours".
    for form in ("bücher.example", "xn--bcher-kva.example"):
        assert await listed(tenant.client, domains=form) == (["bücher.example"], 1)
        assert (await shown(tenant.client, form))["domain"] == "bücher.example"
    again = await provision(tenant.client, other_form, tenant.subscription, status=200)
    assert again == created
    assert await listed(tenant.client) == (["bücher.example"], 1)


async def test_provision_with_every_section_echoes_them(tenant: Tenant) -> None:
    body = await provision(tenant.client, "full.example", tenant.subscription, **FULL_SECTIONS)
    assert body["settings"] == FULL_SECTIONS["settings"]
    assert body["admins"] == ["admin@full.example", "boss@full.example"]
    assert body["downstreamAddresses"] == [MX1, MX2]
    assert sorted(body["aliases"]) == ["full-alias.example", "voll-bücher.example"]
    assert await shown(tenant.client, "full.example") == body


async def test_provision_again_answers_200_and_changes_nothing(tenant: Tenant) -> None:
    first = await provision(tenant.client, "full.example", tenant.subscription, **FULL_SECTIONS)
    again = await provision(
        tenant.client,
        "full.example",
        tenant.subscription,
        status=200,
        settings={"abusePolicy": "block"},
        admins=[],
        downstreamAddresses=[],
        aliases=["other-alias.example"],
    )
    assert again == first
    assert await shown(tenant.client, "full.example") == first
    # The alias in the ignored request was not created either.
    await provision(tenant.client, "other-alias.example", tenant.subscription)


@pytest.mark.parametrize("name", INVALID_NAMES)
async def test_provision_invalid_name_is_400(tenant: Tenant, name: str) -> None:
    response = await tenant.client.post(
        "/domains", json={"domain": name, "subscriptionHandle": tenant.subscription}
    )
    assert_error(response, 400)
    assert await listed(tenant.client) == ([], 0)


@pytest.mark.parametrize(
    "body",
    [
        {"domain": "ok.example"},
        {"subscriptionHandle": "acme"},
        {"domain": "ok.example", "subscriptionHandle": "acme", "admins": ["not-an-email"]},
        {
            "domain": "ok.example",
            "subscriptionHandle": "acme",
            "downstreamAddresses": [{**MX1, "target": "bad..host"}],
        },
        {"domain": "ok.example", "subscriptionHandle": "acme", "aliases": ["bad..alias"]},
        {"domain": "ok.example", "subscriptionHandle": "acme", "aliases": ["ok.example"]},
        {
            "domain": "ok.example",
            "subscriptionHandle": "acme",
            "settings": {"abusePolicy": "delete"},
        },
        {
            "domain": "ok.example",
            "subscriptionHandle": "acme",
            "settings": {"spamHeaderName": "X-Spam: yes"},
        },
    ],
    ids=[
        "no-subscription",
        "no-domain",
        "bad-admin",
        "bad-downstream",
        "bad-alias",
        "alias-of-itself",
        "bad-policy",
        "bad-header",
    ],
)
async def test_provision_invalid_body_is_400_and_creates_nothing(
    tenant: Tenant, body: dict[str, Any]
) -> None:
    assert_error(await tenant.client.post("/domains", json=body), 400)
    assert await listed(tenant.client) == ([], 0)


async def test_provision_against_unknown_subscription_is_403(tenant: Tenant) -> None:
    response = await tenant.client.post(
        "/domains", json={"domain": "example.com", "subscriptionHandle": "nobody"}
    )
    assert_error(response, 403, mentions="nobody")
    assert await listed(tenant.client) == ([], 0)


async def test_provision_against_another_customers_subscription_is_403(
    tenant: Tenant, make_tenant: TenantFactory
) -> None:
    other = await make_tenant("globex")
    response = await tenant.client.post(
        "/domains", json={"domain": "example.com", "subscriptionHandle": other.subscription}
    )
    assert_error(response, 403)
    assert await listed(tenant.client) == ([], 0)
    assert await listed(other.client) == ([], 0)


async def test_domain_limit_reached_is_403(make_tenant: TenantFactory) -> None:
    small = await make_tenant("small", domain_limit=2)
    await provision_many(small.client, small.subscription, ["one.example", "two.example"])
    response = await small.client.post(
        "/domains", json={"domain": "three.example", "subscriptionHandle": small.subscription}
    )
    assert_error(response, 403, mentions="2")
    assert await listed(small.client) == (["one.example", "two.example"], 2)
    # A domain already provisioned is not counted again.
    await provision(small.client, "one.example", small.subscription, status=200)
    # Deprovisioning frees a place.
    assert (await small.client.delete("/domains/two.example")).status_code == 204
    await provision(small.client, "three.example", small.subscription)


async def test_zero_domain_limit_refuses_everything(make_tenant: TenantFactory) -> None:
    none = await make_tenant("none", domain_limit=0)
    response = await none.client.post(
        "/domains", json={"domain": "one.example", "subscriptionHandle": none.subscription}
    )
    assert_error(response, 403)


async def test_domain_of_another_customer_is_409(
    tenant: Tenant, make_tenant: TenantFactory
) -> None:
    other = await make_tenant("globex")
    owned = await provision(other.client, "taken.example", other.subscription)
    for form in ("taken.example", "TAKEN.example"):
        response = await tenant.client.post(
            "/domains", json={"domain": form, "subscriptionHandle": tenant.subscription}
        )
        assert_error(response, 409)
    assert await shown(other.client, "taken.example") == owned
    assert await listed(tenant.client) == ([], 0)


@pytest.mark.parametrize("alias_owner", ["same-customer", "other-customer"])
async def test_name_already_an_alias_is_409(
    tenant: Tenant, make_tenant: TenantFactory, alias_owner: str
) -> None:
    owner = tenant if alias_owner == "same-customer" else await make_tenant("globex")
    await provision(owner.client, "main.example", owner.subscription, aliases=["alt.example"])
    for form in ("alt.example", "ALT.Example"):
        response = await tenant.client.post(
            "/domains", json={"domain": form, "subscriptionHandle": tenant.subscription}
        )
        assert_error(response, 409, mentions="alt.example")
    assert (await shown(owner.client, "main.example"))["aliases"] == ["alt.example"]


async def test_provision_with_alias_taken_elsewhere_is_409(
    tenant: Tenant, make_tenant: TenantFactory
) -> None:
    other = await make_tenant("globex")
    await provision(other.client, "theirs.example", other.subscription, aliases=["alt.example"])
    for alias in ("alt.example", "theirs.example"):
        response = await tenant.client.post(
            "/domains",
            json={
                "domain": "mine.example",
                "subscriptionHandle": tenant.subscription,
                "aliases": [alias],
            },
        )
        assert_error(response, 409)
    assert await listed(tenant.client) == ([], 0)


# -- overwrite ------------------------------------------------------------------------

REPLACEMENTS: dict[str, Any] = {
    "settings": {"abusePolicy": "block"},
    "admins": ["new@full.example"],
    "downstreamAddresses": [{**MX2, "priority": 1}],
    "aliases": ["new-alias.example"],
}


@pytest.mark.parametrize("section", list(REPLACEMENTS))
async def test_overwrite_replaces_only_the_sections_present(tenant: Tenant, section: str) -> None:
    before = await provision(tenant.client, "full.example", tenant.subscription, **FULL_SECTIONS)
    after = await provision(
        tenant.client,
        "full.example",
        tenant.subscription,
        status=200,
        params={"overwrite": "true"},
        **{section: REPLACEMENTS[section]},
    )
    expected = dict(before)
    if section == "settings":
        expected["settings"] = {**before["settings"], "abusePolicy": "block"}
    else:
        expected[section] = REPLACEMENTS[section]
    assert after == expected
    assert await shown(tenant.client, "full.example") == expected


async def test_overwrite_with_empty_sections_clears_them(tenant: Tenant) -> None:
    await provision(tenant.client, "full.example", tenant.subscription, **FULL_SECTIONS)
    after = await provision(
        tenant.client,
        "full.example",
        tenant.subscription,
        status=200,
        params={"overwrite": "true"},
        admins=[],
        downstreamAddresses=[],
        aliases=[],
    )
    assert (after["admins"], after["downstreamAddresses"], after["aliases"]) == ([], [], [])
    assert after["settings"] == FULL_SECTIONS["settings"]
    # The released alias is free again.
    await provision(tenant.client, "full-alias.example", tenant.subscription)


async def test_overwrite_of_a_new_domain_just_creates_it(tenant: Tenant) -> None:
    body = await provision(
        tenant.client,
        "fresh.example",
        tenant.subscription,
        params={"overwrite": "true"},
        admins=["a@fresh.example"],
    )
    assert body["admins"] == ["a@fresh.example"]


async def test_overwrite_with_alias_in_use_is_409_and_keeps_everything(
    tenant: Tenant,
) -> None:
    before = await provision(tenant.client, "full.example", tenant.subscription, **FULL_SECTIONS)
    await provision(tenant.client, "other.example", tenant.subscription, aliases=["busy.example"])
    response = await tenant.client.post(
        "/domains",
        params={"overwrite": "true"},
        json={
            "domain": "full.example",
            "subscriptionHandle": tenant.subscription,
            "settings": {"abusePolicy": "block"},
            "aliases": ["busy.example"],
        },
    )
    assert_error(response, 409, mentions="busy.example")
    assert await shown(tenant.client, "full.example") == before


async def test_overwrite_cannot_touch_another_customers_domain(
    tenant: Tenant, make_tenant: TenantFactory
) -> None:
    other = await make_tenant("globex")
    owned = await provision(other.client, "theirs.example", other.subscription)
    response = await tenant.client.post(
        "/domains",
        params={"overwrite": "true"},
        json={
            "domain": "theirs.example",
            "subscriptionHandle": tenant.subscription,
            "settings": {"abusePolicy": "block"},
        },
    )
    assert_error(response, 409)
    assert await shown(other.client, "theirs.example") == owned


# -- GET /domains -------------------------------------------------------------------

TWELVE = [f"d{i:02d}.example" for i in range(12)]


@pytest.fixture
async def twelve(tenant: Tenant) -> Tenant:
    await provision_many(tenant.client, tenant.subscription, list(reversed(TWELVE)))
    return tenant


async def test_list_defaults_to_ten_sorted_by_name(twelve: Tenant) -> None:
    assert await listed(twelve.client) == (TWELVE[:10], 12)


async def test_list_returns_full_domain_objects(tenant: Tenant) -> None:
    created = await provision(tenant.client, "full.example", tenant.subscription, **FULL_SECTIONS)
    response = await tenant.client.get("/domains")
    assert response.json() == {"domains": [created], "total": 1}


@pytest.mark.parametrize(
    ("limit", "offset", "expected"),
    [
        (5, 0, TWELVE[:5]),
        (5, 5, TWELVE[5:10]),
        (5, 10, TWELVE[10:]),
        (5, 12, []),
        (5000, 0, TWELVE),
        (1, 11, TWELVE[11:]),
        (3, 1000, []),
    ],
)
async def test_list_paging(twelve: Tenant, limit: int, offset: int, expected: list[str]) -> None:
    assert await listed(twelve.client, limit=limit, offset=offset) == (expected, 12)


async def test_list_of_empty_account(tenant: Tenant) -> None:
    assert await listed(tenant.client) == ([], 0)


@pytest.mark.parametrize(
    "query",
    [
        "domains=d01.example&domains=d03.example&domains=d05.example",
        "domains=d01.example,d03.example,d05.example",
        "domains=d01.example,d03.example&domains=d05.example",
        "domains=d05.example&domains=d01.example,%20d03.example,",
        "domains=D01.EXAMPLE&domains=d03.example,d05.example,unknown.example",
        "domains=d01.example,d01.example,d03.example,d05.example",
    ],
    ids=["repeated", "comma", "mixed", "spaces", "case-and-unknown", "duplicates"],
)
async def test_list_filter_forms(twelve: Tenant, query: str) -> None:
    response = await twelve.client.get(f"/domains?{query}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert [d["domain"] for d in body["domains"]] == ["d01.example", "d03.example", "d05.example"]
    assert body["total"] == 3


async def test_list_filter_total_counts_matches_beyond_the_page(twelve: Tenant) -> None:
    wanted = ",".join(TWELVE[2:9])
    assert await listed(twelve.client, domains=wanted, limit=2, offset=1) == (TWELVE[3:5], 7)


async def test_list_filter_with_no_match(twelve: Tenant) -> None:
    assert await listed(twelve.client, domains="unknown.example") == ([], 0)


@pytest.mark.parametrize("form", ["bücher.example", "xn--bcher-kva.example", "BÜCHER.example"])
async def test_list_filter_by_either_label_form(tenant: Tenant, form: str) -> None:
    await provision_many(tenant.client, tenant.subscription, ["bücher.example", "other.example"])
    assert await listed(tenant.client, domains=form) == (["bücher.example"], 1)


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=5001",
        "limit=-1",
        "limit=ten",
        "offset=-1",
        "offset=one",
        "domains=bad..name",
        "domains=ok.example,-x.com",
        "domains=nodot",
    ],
)
async def test_list_invalid_query_is_400(twelve: Tenant, query: str) -> None:
    assert_error(await twelve.client.get(f"/domains?{query}"), 400)


# -- GET and DELETE /domains/{domain} -------------------------------------------------


@pytest.mark.parametrize("form", ["bücher.example", "xn--bcher-kva.example"])
async def test_get_one_domain_by_either_form(tenant: Tenant, form: str) -> None:
    created = await provision(tenant.client, "bücher.example", tenant.subscription, admins=[])
    assert await shown(tenant.client, form) == created


@pytest.mark.parametrize("form", ["bücher.example", "xn--bcher-kva.example"])
async def test_delete_domain(tenant: Tenant, make_tenant: TenantFactory, form: str) -> None:
    await provision(
        tenant.client,
        "bücher.example",
        tenant.subscription,
        aliases=["alias-bücher.example"],
        downstreamAddresses=[MX1],
    )
    await provision(tenant.client, "kept.example", tenant.subscription)
    response = await tenant.client.delete(f"/domains/{form}")
    assert response.status_code == 204
    assert response.content == b""
    assert await listed(tenant.client) == (["kept.example"], 1)
    assert_error(await tenant.client.get(f"/domains/{form}"), 404)
    assert_error(await tenant.client.delete(f"/domains/{form}"), 404)
    # The name and its alias are free for anybody now.
    other = await make_tenant("globex")
    await provision(other.client, "bücher.example", other.subscription)
    await provision(other.client, "alias-bücher.example", other.subscription)


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("unknown.example", 404),
        ("theirs.example", 403),
        ("their-alias.example", 403),
        ("alt.example", 403),
        ("bad..name", 400),
        ("-x.com", 400),
        ("nodot", 400),
    ],
    ids=[
        "unknown",
        "other-customer",
        "other-customers-alias",
        "own-alias",
        "double-dot",
        "hyphen",
        "no-dot",
    ],
)
async def test_get_and_delete_errors(
    tenant: Tenant, make_tenant: TenantFactory, name: str, status: int
) -> None:
    other = await make_tenant("globex")
    await provision(
        other.client, "theirs.example", other.subscription, aliases=["their-alias.example"]
    )
    mine = await provision(
        tenant.client, "main.example", tenant.subscription, aliases=["alt.example"]
    )
    for method in ("GET", "DELETE"):
        assert_error(await tenant.client.request(method, f"/domains/{name}"), status)
    # Nothing was deleted.
    assert await shown(tenant.client, "main.example") == mine
    assert await listed(other.client) == (["theirs.example"], 1)


# -- POST /domains/batch/deprovision (extension) --------------------------------------


async def test_batch_deprovision_reports_each_domain(
    tenant: Tenant, make_tenant: TenantFactory
) -> None:
    other = await make_tenant("globex")
    await provision(other.client, "theirs.example", other.subscription)
    await provision(tenant.client, "main.example", tenant.subscription, aliases=["alt.example"])
    await provision_many(tenant.client, tenant.subscription, ["bücher.example", "kept.example"])
    response = await tenant.client.post(
        "/domains/batch/deprovision",
        json={
            "domains": [
                {"domain": "main.example"},
                {"domain": "xn--bcher-kva.example"},
                {"domain": "unknown.example"},
                {"domain": "theirs.example"},
                {"domain": "alt.example"},
                {"domain": "bad..name"},
            ]
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(s["domain"], s["code"]) for s in body["successes"]] == [
        ("main.example", 204),
        ("bücher.example", 204),
    ]
    assert [(e["domain"], e["code"]) for e in body["errors"]] == [
        ("unknown.example", 404),
        ("theirs.example", 403),
        ("alt.example", 403),
        ("bad..name", 400),
    ]
    assert all(isinstance(e["comment"], str) and e["comment"] for e in body["errors"])
    assert await listed(tenant.client) == (["kept.example"], 1)
    assert await listed(other.client) == (["theirs.example"], 1)
    # The alias went with its domain.
    await provision(tenant.client, "alt.example", tenant.subscription)


@pytest.mark.parametrize(
    "body",
    [{"domains": []}, {"domains": [{"domain": f"d{i}.example"} for i in range(1001)]}, {}],
    ids=["empty", "too-many", "missing"],
)
async def test_batch_deprovision_invalid_request_is_400(
    twelve: Tenant, body: dict[str, Any]
) -> None:
    assert_error(await twelve.client.post("/domains/batch/deprovision", json=body), 400)
    assert (await listed(twelve.client))[1] == 12


async def test_concurrent_requests_cannot_exceed_the_domain_limit(
    make_tenant: TenantFactory,
) -> None:
    small = await make_tenant("small", domain_limit=2)
    responses = await asyncio.gather(
        *(
            small.client.post(
                "/domains",
                json={"domain": f"race{i}.example", "subscriptionHandle": small.subscription},
            )
            for i in range(6)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 201, 403, 403, 403, 403], [r.text for r in responses]
    assert (await listed(small.client))[1] == 2


async def test_concurrent_provisioning_of_one_name(
    tenant: Tenant, make_tenant: TenantFactory
) -> None:
    other = await make_tenant("globex")
    requests = [
        client.post("/domains", json={"domain": "race.example", "subscriptionHandle": sub})
        for client, sub in [(tenant.client, tenant.subscription), (other.client, "globex")] * 2
    ]
    statuses = [r.status_code for r in await asyncio.gather(*requests)]
    # One customer wins (201, then 200 for its second try); the other gets 409 twice.
    assert sorted(statuses) == [200, 201, 409, 409], statuses
    assert (await listed(tenant.client))[1] + (await listed(other.client))[1] == 1
