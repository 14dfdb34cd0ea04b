"""Aliases, PUT /domains/{domain}/settings and downstream addresses of one domain."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.helpers import (
    DEFAULT_SETTINGS,
    MX1,
    MX2,
    MX3,
    assert_error,
    call,
    listed,
    operation_params,
    provision,
    shown,
)
from tests.conftest import Tenant, TenantFactory


@pytest.fixture
async def main(tenant: Tenant) -> dict[str, Any]:
    """acme's main.example, with one alias, an admin and two downstream addresses."""
    return await provision(
        tenant.client,
        "main.example",
        tenant.subscription,
        aliases=["alt.example"],
        admins=["admin@main.example"],
        downstreamAddresses=[MX1, MX2],
    )


@pytest.fixture
async def other(make_tenant: TenantFactory) -> Tenant:
    """Customer globex, owning theirs.example with the alias their-alias.example."""
    globex = await make_tenant("globex")
    await provision(
        globex.client, "theirs.example", globex.subscription, aliases=["their-alias.example"]
    )
    return globex


# -- the access rule, the same for every operation on one domain ------------------------


@pytest.mark.parametrize(("method", "path", "body"), operation_params())
async def test_operations_on_a_name_that_is_not_a_usable_domain(
    tenant: Tenant, main: dict[str, Any], method: str, path: str, body: Any
) -> None:
    for name, status in [("unknown.example", 404), ("alt.example", 403), ("bad..name", 400)]:
        assert_error(await call(tenant.client, method, path, body, name), status)
    assert await shown(tenant.client, "main.example") == main


# -- aliases ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "alias", "shown_alias"),
    [
        ("main.example", "new.example", "new.example"),
        ("main.example", "NEW.Example", "new.example"),
        ("main.example", "neu-bücher.example", "neu-bücher.example"),
        ("main.example", "xn--neu-bcher-u9a.example", "neu-bücher.example"),
        ("MAIN.example", "sub.main.example", "sub.main.example"),
    ],
    ids=["plain", "upper-case", "u-label", "a-label", "subdomain"],
)
async def test_add_alias(
    tenant: Tenant, main: dict[str, Any], domain: str, alias: str, shown_alias: str
) -> None:
    response = await tenant.client.post(f"/domains/{domain}/alias/{alias}")
    assert response.status_code == 200, response.text
    expected_domain = {**main, "aliases": sorted(["alt.example", shown_alias])}
    assert response.json() == {"domain": expected_domain, "alias": shown_alias}
    assert await shown(tenant.client, "main.example") == expected_domain
    # The alias is taken now: nobody can provision it as a domain.
    assert_error(
        await tenant.client.post(
            "/domains", json={"domain": alias, "subscriptionHandle": tenant.subscription}
        ),
        409,
    )


@pytest.mark.parametrize(
    "alias",
    [
        "alt.example",
        "ALT.example",
        "main.example",
        "second.example",
        "second-alias.example",
        "theirs.example",
        "their-alias.example",
    ],
    ids=[
        "own-alias",
        "own-alias-upper",
        "itself",
        "own-other-domain",
        "alias-of-own-other-domain",
        "other-customers-domain",
        "other-customers-alias",
    ],
)
async def test_add_alias_already_in_use_is_409(
    tenant: Tenant, main: dict[str, Any], other: Tenant, alias: str
) -> None:
    second = await provision(
        tenant.client, "second.example", tenant.subscription, aliases=["second-alias.example"]
    )
    assert_error(await tenant.client.post(f"/domains/main.example/alias/{alias}"), 409)
    assert await shown(tenant.client, "main.example") == main
    assert await shown(tenant.client, "second.example") == second
    assert await listed(other.client) == (["theirs.example"], 1)


@pytest.mark.parametrize("alias", ["bad..alias", "-x.com", "nodot", "a" * 64 + ".com"])
async def test_add_invalid_alias_is_400(tenant: Tenant, main: dict[str, Any], alias: str) -> None:
    assert_error(await tenant.client.post(f"/domains/main.example/alias/{alias}"), 400)
    assert await shown(tenant.client, "main.example") == main


async def test_alias_of_another_customers_domain_is_403(
    tenant: Tenant, main: dict[str, Any], other: Tenant
) -> None:
    assert_error(await tenant.client.post("/domains/theirs.example/alias/new.example"), 403)
    assert_error(
        await tenant.client.delete("/domains/theirs.example/alias/their-alias.example"), 403
    )
    assert (await shown(other.client, "theirs.example"))["aliases"] == ["their-alias.example"]


@pytest.mark.parametrize("form", ["alt.example", "ALT.EXAMPLE"])
async def test_remove_alias(tenant: Tenant, main: dict[str, Any], form: str) -> None:
    response = await tenant.client.delete(f"/domains/main.example/alias/{form}")
    assert response.status_code == 204
    assert response.content == b""
    assert await shown(tenant.client, "main.example") == {**main, "aliases": []}
    # The freed name can be provisioned as a domain now.
    await provision(tenant.client, "alt.example", tenant.subscription)


@pytest.mark.parametrize(
    "alias",
    ["never.example", "second-alias.example", "second.example", "main.example"],
    ids=["unknown", "alias-of-other-domain", "a-domain", "itself"],
)
async def test_remove_alias_that_is_not_there_is_404(
    tenant: Tenant, main: dict[str, Any], alias: str
) -> None:
    second = await provision(
        tenant.client, "second.example", tenant.subscription, aliases=["second-alias.example"]
    )
    assert_error(await tenant.client.delete(f"/domains/main.example/alias/{alias}"), 404)
    assert await shown(tenant.client, "main.example") == main
    assert await shown(tenant.client, "second.example") == second


async def test_remove_invalid_alias_is_400(tenant: Tenant, main: dict[str, Any]) -> None:
    assert_error(await tenant.client.delete("/domains/main.example/alias/bad..alias"), 400)


# -- PUT /domains/{domain}/settings ----------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"abusePolicy": "block"},
        {"abusePolicy": "flag", "spamHeaderName": "X-Junk", "spamHeaderValue": "1"},
        {"abusePolicyOverride": True},
        {"spamHeaderValue": "probably spam"},
    ],
    ids=["policy", "flag-with-header", "override", "header-value"],
)
async def test_settings_change_only_the_fields_sent(
    tenant: Tenant, main: dict[str, Any], change: dict[str, Any]
) -> None:
    response = await tenant.client.put("/domains/main.example/settings", json=change)
    assert response.status_code == 200, response.text
    expected = {**main, "settings": {**DEFAULT_SETTINGS, **change}}
    assert response.json() == expected
    assert await shown(tenant.client, "main.example") == expected


@pytest.mark.parametrize(
    ("change", "section", "value"),
    [
        (
            {"admins": ["b@main.example", "A@main.example"]},
            "admins",
            ["a@main.example", "b@main.example"],
        ),
        ({"admins": []}, "admins", []),
        ({"downstreamAddresses": [MX3]}, "downstreamAddresses", [MX3]),
        ({"downstreamAddresses": []}, "downstreamAddresses", []),
        ({"aliases": ["one.example", "two.example"]}, "aliases", ["one.example", "two.example"]),
        ({"aliases": ["alt.example", "two.example"]}, "aliases", ["alt.example", "two.example"]),
        ({"aliases": []}, "aliases", []),
    ],
    ids=[
        "admins",
        "no-admins",
        "downstreams",
        "no-downstreams",
        "aliases",
        "aliases-keeping-one",
        "no-aliases",
    ],
)
async def test_settings_replace_only_the_sections_sent(
    tenant: Tenant, main: dict[str, Any], change: dict[str, Any], section: str, value: list[Any]
) -> None:
    response = await tenant.client.put("/domains/main.example/settings", json=change)
    assert response.status_code == 200, response.text
    expected = {**main, section: value}
    assert response.json() == expected
    assert await shown(tenant.client, "main.example") == expected


async def test_settings_with_everything_at_once(tenant: Tenant, main: dict[str, Any]) -> None:
    body = {
        "abusePolicy": "flag",
        "abusePolicyOverride": True,
        "spamHeaderName": "X-Spam-Status",
        "spamHeaderValue": "Yes",
        "admins": ["new@main.example"],
        "downstreamAddresses": [MX2],
        "aliases": ["new-alias.example"],
    }
    response = await tenant.client.put("/domains/main.example/settings", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "domain": "main.example",
        "subscriptionHandle": tenant.subscription,
        "settings": {k: body[k] for k in DEFAULT_SETTINGS},
        "admins": ["new@main.example"],
        "downstreamAddresses": [MX2],
        "aliases": ["new-alias.example"],
    }
    # The dropped alias is free again, the new one is taken.
    await provision(tenant.client, "alt.example", tenant.subscription)
    assert_error(
        await tenant.client.post(
            "/domains", json={"domain": "new-alias.example", "subscriptionHandle": "acme"}
        ),
        409,
    )


async def test_empty_settings_body_changes_nothing(tenant: Tenant, main: dict[str, Any]) -> None:
    response = await tenant.client.put("/domains/main.example/settings", json={})
    assert response.status_code == 200, response.text
    assert response.json() == main


@pytest.mark.parametrize(
    "body",
    [
        {"abusePolicy": "delete"},
        {"abusePolicy": ""},
        {"spamHeaderName": "X-Spam: yes"},
        {"spamHeaderName": "X Spam"},
        {"spamHeaderName": ""},
        {"spamHeaderValue": "two\r\nlines"},
        {"abusePolicyOverride": "sometimes"},
        {"admins": ["not-an-address"]},
        {"aliases": ["bad..alias"]},
        {"aliases": ["main.example"]},
        {"downstreamAddresses": [{**MX1, "port": 0}]},
        {"downstreamAddresses": [MX1] * 11},
        {"abusePolicy": "block", "admins": ["ok@main.example", "not-an-address"]},
    ],
    ids=[
        "policy",
        "empty-policy",
        "header-colon",
        "header-space",
        "empty-header",
        "header-value-newline",
        "override-not-bool",
        "admin",
        "alias",
        "alias-itself",
        "port",
        "eleven-downstreams",
        "valid-policy-with-bad-admin",
    ],
)
async def test_invalid_settings_are_400_and_change_nothing(
    tenant: Tenant, main: dict[str, Any], body: dict[str, Any]
) -> None:
    assert_error(await tenant.client.put("/domains/main.example/settings", json=body), 400)
    assert await shown(tenant.client, "main.example") == main


@pytest.mark.parametrize(
    "alias",
    ["busy.example", "theirs.example", "their-alias.example"],
    ids=["alias-of-own-domain", "other-customers-domain", "other-customers-alias"],
)
async def test_settings_with_alias_in_use_are_409_and_change_nothing(
    tenant: Tenant, main: dict[str, Any], other: Tenant, alias: str
) -> None:
    await provision(
        tenant.client, "busy-owner.example", tenant.subscription, aliases=["busy.example"]
    )
    body = {"abusePolicy": "block", "admins": [], "aliases": ["fine.example", alias]}
    assert_error(await tenant.client.put("/domains/main.example/settings", json=body), 409)
    assert await shown(tenant.client, "main.example") == main
    # Nothing of the refused request was kept: its other alias is still free.
    await provision(tenant.client, "fine.example", tenant.subscription)


async def test_settings_of_another_customers_domain_is_403(tenant: Tenant, other: Tenant) -> None:
    before = await shown(other.client, "theirs.example")
    response = await tenant.client.put(
        "/domains/theirs.example/settings", json={"abusePolicy": "block"}
    )
    assert_error(response, 403)
    assert await shown(other.client, "theirs.example") == before


# -- downstream addresses ----------------------------------------------------------------


async def test_downstreams_of_a_new_domain_are_empty(tenant: Tenant) -> None:
    await provision(tenant.client, "bare.example", tenant.subscription)
    response = await tenant.client.get("/domains/bare.example/downstream-address")
    assert response.status_code == 200
    assert response.json() == {"records": []}


async def test_put_downstreams_replaces_all(tenant: Tenant, main: dict[str, Any]) -> None:
    response = await tenant.client.put(
        "/domains/main.example/downstream-address", json={"records": [MX3, MX2]}
    )
    assert response.status_code == 201, response.text
    assert response.json() == {"records": [MX3, MX2]}
    got = await tenant.client.get("/domains/main.example/downstream-address")
    assert got.json() == {"records": [MX3, MX2]}
    assert await shown(tenant.client, "main.example") == {**main, "downstreamAddresses": [MX3, MX2]}


async def test_put_no_downstreams_deletes_all(tenant: Tenant, main: dict[str, Any]) -> None:
    response = await tenant.client.put(
        "/domains/main.example/downstream-address", json={"records": []}
    )
    assert response.status_code == 201, response.text
    assert response.json() == {"records": []}
    assert (await tenant.client.get("/domains/main.example/downstream-address")).json() == {
        "records": []
    }


TEN = [
    {"priority": i, "weight": 10 * i, "port": 25, "target": f"mx{i}.example.net."}
    for i in range(10)
]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, TEN),
        ({"limit": 3}, TEN[:3]),
        ({"limit": 3, "offset": 8}, TEN[8:]),
        ({"offset": 10}, []),
        ({"limit": 1, "offset": 5}, TEN[5:6]),
    ],
)
async def test_get_downstreams_paging(
    tenant: Tenant, main: dict[str, Any], params: dict[str, int], expected: list[Any]
) -> None:
    put = await tenant.client.put("/domains/main.example/downstream-address", json={"records": TEN})
    assert put.status_code == 201, put.text
    response = await tenant.client.get("/domains/main.example/downstream-address", params=params)
    assert response.status_code == 200
    assert response.json() == {"records": expected}


@pytest.mark.parametrize("query", ["limit=0", "limit=-1", "offset=-1", "limit=many"])
async def test_get_downstreams_bad_paging_is_400(
    tenant: Tenant, main: dict[str, Any], query: str
) -> None:
    assert_error(await tenant.client.get(f"/domains/main.example/downstream-address?{query}"), 400)


@pytest.mark.parametrize(
    ("target", "stored"),
    [
        ("mx.example.net.", "mx.example.net."),
        ("mx.example.net", "mx.example.net"),
        ("MX.Example.NET.", "mx.example.net."),
        ("mx.bücher.example.", "mx.xn--bcher-kva.example."),
        ("192.0.2.25", "192.0.2.25"),
        ("2001:db8::25", "2001:db8::25"),
        ("[2001:db8::25]", "2001:db8::25"),
    ],
    ids=["final-dot", "no-final-dot", "upper-case", "idn", "ipv4", "ipv6", "ipv6-brackets"],
)
async def test_downstream_targets_accepted(
    tenant: Tenant, main: dict[str, Any], target: str, stored: str
) -> None:
    record = {"priority": 0, "weight": 1, "port": 25, "target": target}
    response = await tenant.client.put(
        "/domains/main.example/downstream-address", json={"records": [record]}
    )
    assert response.status_code == 201, response.text
    assert response.json() == {"records": [{**record, "target": stored}]}
    assert (await shown(tenant.client, "main.example"))["downstreamAddresses"] == [
        {**record, "target": stored}
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"target": ""},
        {"target": "bad..host."},
        {"target": "-mx.example.net."},
        {"target": "mx example.net"},
        {"target": "mx.example.net.."},
        {"target": "a" * 250 + ".example."},
        {"target": "999.0.2.1"},
        {"target": 25},
        {"port": 0},
        {"port": 70000},
        {"port": -25},
        {"priority": -1},
        {"weight": -1},
        {"port": None},
    ],
    ids=[
        "empty",
        "double-dot",
        "hyphen",
        "space",
        "two-final-dots",
        "too-long",
        "bad-ipv4",
        "number",
        "port-0",
        "port-70000",
        "port-negative",
        "priority-negative",
        "weight-negative",
        "port-missing",
    ],
)
async def test_invalid_downstream_is_400_and_keeps_the_old_ones(
    tenant: Tenant, main: dict[str, Any], change: dict[str, Any]
) -> None:
    record = {**MX1, **change}
    response = await tenant.client.put(
        "/domains/main.example/downstream-address", json={"records": [MX3, record]}
    )
    assert_error(response, 400)
    assert (await shown(tenant.client, "main.example"))["downstreamAddresses"] == [MX1, MX2]


async def test_more_than_ten_downstreams_is_400(tenant: Tenant, main: dict[str, Any]) -> None:
    response = await tenant.client.put(
        "/domains/main.example/downstream-address", json={"records": [*TEN, MX1]}
    )
    assert_error(response, 400)
    assert (await shown(tenant.client, "main.example"))["downstreamAddresses"] == [MX1, MX2]


@pytest.mark.parametrize("body", [{}, {"records": None}, [MX1]], ids=["empty", "null", "list"])
async def test_put_downstreams_malformed_body_is_400(
    tenant: Tenant, main: dict[str, Any], body: Any
) -> None:
    response = await tenant.client.put("/domains/main.example/downstream-address", json=body)
    assert_error(response, 400)
    assert (await shown(tenant.client, "main.example"))["downstreamAddresses"] == [MX1, MX2]
