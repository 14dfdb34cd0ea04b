"""POST /domains/batch: per-item results, the limit, the subscription, overwrite."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mailmoat.services.container import Services
from tests.api.helpers import (
    DEFAULT_SETTINGS,
    MX1,
    MX2,
    assert_error,
    client_with_key,
    listed,
    provision,
    provision_many,
    shown,
)
from tests.conftest import Tenant, TenantFactory


async def batch(
    client: httpx.AsyncClient,
    subscription: str | None,
    items: list[dict[str, Any]],
    **params: str,
) -> httpx.Response:
    query = dict(params)
    if subscription is not None:
        query["subscriptionHandle"] = subscription
    return await client.post("/domains/batch", params=query, json={"domains": items})


def outcome(response: httpx.Response) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(name, code) of the successes and of the errors, in response order."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"successes", "errors"}, body
    for item in body["successes"] + body["errors"]:
        assert isinstance(item["comment"], str) and item["comment"], item
    return (
        [(s["domain"]["domain"], s["code"]) for s in body["successes"]],
        [(e["domain"]["domain"], e["code"]) for e in body["errors"]],
    )


async def test_batch_provisions_every_item_with_its_sections(tenant: Tenant) -> None:
    response = await batch(
        tenant.client,
        tenant.subscription,
        [
            {"domain": "plain.example"},
            {
                "domain": "xn--bcher-kva.example",
                "downstreamAddress": [MX1, MX2],
                "settings": {"abusePolicy": "block", "spamHeaderValue": "spam"},
                "aliases": ["alias-bücher.example"],
                "admins": ["chef@bücher.example"],
            },
        ],
    )
    assert outcome(response) == ([("plain.example", 201), ("bücher.example", 201)], [])
    plain, buecher = (s["domain"] for s in response.json()["successes"])
    assert plain == {
        "domain": "plain.example",
        "subscriptionHandle": tenant.subscription,
        "settings": DEFAULT_SETTINGS,
        "admins": [],
        "downstreamAddresses": [],
        "aliases": [],
    }
    assert buecher == {
        "domain": "bücher.example",
        "subscriptionHandle": tenant.subscription,
        "settings": {**DEFAULT_SETTINGS, "abusePolicy": "block", "spamHeaderValue": "spam"},
        "admins": ["chef@xn--bcher-kva.example"],
        "downstreamAddresses": [MX1, MX2],
        "aliases": ["alias-bücher.example"],
    }
    assert await shown(tenant.client, "bücher.example") == buecher
    assert await listed(tenant.client) == (["plain.example", "bücher.example"], 2)  # A-label order


async def test_batch_reports_each_failure_and_provisions_the_rest(
    tenant: Tenant, make_tenant: TenantFactory
) -> None:
    other = await make_tenant("globex")
    await provision(other.client, "theirs.example", other.subscription, aliases=["their.example"])
    await provision(tenant.client, "mine.example", tenant.subscription, aliases=["alt.example"])
    response = await batch(
        tenant.client,
        tenant.subscription,
        [
            {"domain": "good.example"},
            {"domain": "bad..name"},
            {"domain": "nodot"},
            {"domain": "theirs.example"},
            {"domain": "their.example"},
            {"domain": "alt.example"},
            {"domain": "alias-clash.example", "aliases": ["theirs.example"]},
            {"domain": "bad-admin.example", "admins": ["nobody"]},
            {"domain": "bad-mx.example", "downstreamAddress": [{**MX1, "target": "-x.example"}]},
            {"domain": "mine.example"},
            {"domain": "also-good.example"},
        ],
    )
    successes, errors = outcome(response)
    assert successes == [
        ("good.example", 201),
        ("mine.example", 201),
        ("also-good.example", 201),
    ]
    assert errors == [
        ("bad..name", 400),
        ("nodot", 400),
        ("theirs.example", 409),
        ("their.example", 409),
        ("alt.example", 409),
        ("alias-clash.example", 409),
        ("bad-admin.example", 400),
        ("bad-mx.example", 400),
    ]
    for error in response.json()["errors"]:
        assert error["domain"]["subscriptionHandle"] == tenant.subscription
    assert await listed(tenant.client) == (
        ["also-good.example", "good.example", "mine.example"],
        3,
    )
    assert await listed(other.client) == (["theirs.example"], 1)


@pytest.mark.parametrize(
    ("items", "expected_ok", "expected_errors"),
    [
        (["dup.example", "dup.example"], ["dup.example"], ["dup.example"]),
        (["bücher.example", "xn--bcher-kva.example"], ["bücher.example"], ["bücher.example"]),
        (["dup.example", "DUP.example", "dup.example"], ["dup.example"], ["dup.example"] * 2),
    ],
    ids=["same", "u-and-a-label", "three-times"],
)
async def test_duplicates_inside_one_batch(
    tenant: Tenant, items: list[str], expected_ok: list[str], expected_errors: list[str]
) -> None:
    response = await batch(tenant.client, tenant.subscription, [{"domain": n} for n in items])
    successes, errors = outcome(response)
    assert successes == [(n, 201) for n in expected_ok]
    assert errors == [(n, 409) for n in expected_errors]
    assert await listed(tenant.client) == (expected_ok, 1)


async def test_alias_claimed_twice_inside_one_batch(tenant: Tenant) -> None:
    response = await batch(
        tenant.client,
        tenant.subscription,
        [
            {"domain": "first.example", "aliases": ["shared.example"]},
            {"domain": "second.example", "aliases": ["shared.example"]},
            {"domain": "third.example", "aliases": ["first.example"]},
        ],
    )
    successes, errors = outcome(response)
    assert successes == [("first.example", 201)]
    assert errors == [("second.example", 409), ("third.example", 409)]
    assert (await shown(tenant.client, "first.example"))["aliases"] == ["shared.example"]
    assert await listed(tenant.client) == (["first.example"], 1)


async def test_batch_over_the_domain_limit_provisions_nothing(make_tenant: TenantFactory) -> None:
    small = await make_tenant("small", domain_limit=3)
    await provision_many(small.client, small.subscription, ["one.example"])
    response = await batch(
        small.client,
        small.subscription,
        [{"domain": f"n{i}.example", "aliases": [f"a{i}.example"]} for i in range(3)],
    )
    assert_error(response, 403, mentions="3")
    assert await listed(small.client) == (["one.example"], 1)
    # Neither a domain nor an alias of the refused batch was kept.
    await provision_many(small.client, small.subscription, ["n0.example", "a1.example"])


async def test_batch_up_to_the_limit_counts_only_new_domains(make_tenant: TenantFactory) -> None:
    small = await make_tenant("small", domain_limit=3)
    await provision_many(small.client, small.subscription, ["one.example", "two.example"])
    response = await batch(
        small.client,
        small.subscription,
        [{"domain": "one.example"}, {"domain": "two.example"}, {"domain": "three.example"}],
    )
    assert outcome(response) == (
        [("one.example", 201), ("two.example", 201), ("three.example", 201)],
        [],
    )
    # Items that fail do not count either: the limit is full, so only errors are possible.
    response = await batch(
        small.client, small.subscription, [{"domain": "bad..name"}, {"domain": "one.example"}]
    )
    assert outcome(response) == ([("one.example", 201)], [("bad..name", 400)])
    assert_error(await batch(small.client, small.subscription, [{"domain": "four.example"}]), 403)


async def test_more_than_1000_items_is_400(tenant: Tenant) -> None:
    items = [{"domain": f"d{i}.example"} for i in range(1001)]
    assert_error(await batch(tenant.client, tenant.subscription, items), 400)
    assert await listed(tenant.client) == ([], 0)


async def test_exactly_1000_items_are_accepted(tenant: Tenant) -> None:
    names = [f"d{i:04d}.example" for i in range(1000)]
    successes, errors = outcome(
        await batch(tenant.client, tenant.subscription, [{"domain": n} for n in names])
    )
    assert (len(successes), errors) == (1000, [])
    assert await listed(tenant.client, limit=2, offset=998) == (names[998:], 1000)


@pytest.mark.parametrize(
    ("subscription", "status"),
    [("globex", 403), ("nobody", 403), (None, 400)],
    ids=["other-customer", "unknown", "missing"],
)
async def test_batch_subscription_must_be_the_callers(
    tenant: Tenant, make_tenant: TenantFactory, subscription: str | None, status: int
) -> None:
    other = await make_tenant("globex")
    response = await batch(tenant.client, subscription, [{"domain": "one.example"}])
    assert_error(response, status)
    assert await listed(tenant.client) == ([], 0)
    assert await listed(other.client) == ([], 0)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"domains": [{"aliases": ["x.example"]}]},
        {"domains": [{"domain": "x.example", "settings": {"abusePolicy": "nope"}}]},
        {"domains": [{"domain": "x.example", "downstreamAddress": [MX1] * 11}]},
        {"domains": [{"domain": "x.example", "downstreamAddress": [{**MX1, "port": 0}]}]},
    ],
    ids=["no-domains", "item-without-domain", "bad-policy", "eleven-downstreams", "port-0"],
)
async def test_malformed_batch_is_400(tenant: Tenant, body: dict[str, Any]) -> None:
    response = await tenant.client.post(
        "/domains/batch", params={"subscriptionHandle": tenant.subscription}, json=body
    )
    assert_error(response, 400)
    assert await listed(tenant.client) == ([], 0)


async def test_empty_batch_does_nothing(tenant: Tenant) -> None:
    response = await batch(tenant.client, tenant.subscription, [])
    assert outcome(response) == ([], [])


async def test_plural_downstream_key_is_not_the_batch_key(tenant: Tenant) -> None:
    """Items use ``downstreamAddress`` (singular), as the specification says."""
    response = await batch(
        tenant.client,
        tenant.subscription,
        [{"domain": "one.example", "downstreamAddress": [MX1]}],
    )
    assert outcome(response) == ([("one.example", 201)], [])
    assert (await shown(tenant.client, "one.example"))["downstreamAddresses"] == [MX1]


async def test_batch_overwrite(tenant: Tenant) -> None:
    await provision(
        tenant.client,
        "one.example",
        tenant.subscription,
        admins=["old@one.example"],
        downstreamAddresses=[MX1],
        aliases=["old-alias.example"],
    )
    items = [
        {"domain": "one.example", "settings": {"abusePolicy": "flag"}, "downstreamAddress": [MX2]}
    ]
    unchanged = await batch(tenant.client, tenant.subscription, items)
    assert outcome(unchanged) == ([("one.example", 201)], [])
    assert unchanged.json()["successes"][0]["domain"]["downstreamAddresses"] == [MX1]

    replaced = await batch(tenant.client, tenant.subscription, items, overwrite="true")
    assert outcome(replaced) == ([("one.example", 201)], [])
    domain = replaced.json()["successes"][0]["domain"]
    assert domain == {
        "domain": "one.example",
        "subscriptionHandle": tenant.subscription,
        "settings": {**DEFAULT_SETTINGS, "abusePolicy": "flag"},
        "admins": ["old@one.example"],
        "downstreamAddresses": [MX2],
        "aliases": ["old-alias.example"],
    }
    assert await shown(tenant.client, "one.example") == domain


async def test_batch_overwrite_failure_is_per_item(tenant: Tenant) -> None:
    await provision(tenant.client, "one.example", tenant.subscription, aliases=["busy.example"])
    before = await provision(tenant.client, "two.example", tenant.subscription)
    response = await batch(
        tenant.client,
        tenant.subscription,
        [
            {
                "domain": "two.example",
                "settings": {"abusePolicy": "block"},
                "admins": ["new@two.example"],
                "aliases": ["busy.example"],
            },
            {"domain": "three.example"},
        ],
        overwrite="true",
    )
    assert outcome(response) == ([("three.example", 201)], [("two.example", 409)])
    assert await shown(tenant.client, "two.example") == before


async def test_batch_associate_key(tenant: Tenant, services: Services, shared_app: FastAPI) -> None:
    second = await services.keys.create(tenant.customer_id, "second")
    response = await batch(
        tenant.client,
        tenant.subscription,
        [{"domain": "private.example"}],
        **{"associate-key": "true"},
    )
    assert outcome(response) == ([("private.example", 201)], [])
    await provision_many(tenant.client, tenant.subscription, ["shared.example"])
    async with client_with_key(shared_app, second.token) as other_key:
        assert await listed(other_key) == (["shared.example"], 1)
        # Another key of the customer cannot take it over through a batch either.
        response = await batch(other_key, tenant.subscription, [{"domain": "private.example"}])
        assert outcome(response) == ([], [("private.example", 409)])
    assert await listed(tenant.client) == (["private.example", "shared.example"], 2)
