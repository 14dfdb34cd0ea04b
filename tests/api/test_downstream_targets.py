"""Downstream addresses pass the address policy when they are set through the API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mailmoat.domain.addresses import AddressPolicy
from tests.api.helpers import assert_error, provision, shown
from tests.conftest import Tenant

SetTargets = Callable[[AddressPolicy], None]

INSIDE = [
    "127.0.0.1",
    "::1",
    "[::1]",
    "10.1.2.3",
    "192.168.0.10",
    "169.254.169.254",
    "fe80::1",
    "0.0.0.0",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "mail.localhost",
    "Mail.LocalHost.",
]
# mailmoat itself: SMTP on every address, port 2525, named mx.gateway.test
MYSELF = AddressPolicy(
    allow_private=True,
    own_names=frozenset({"mx.gateway.test"}),
    own_addresses=frozenset({"93.184.216.99"}),
    smtp_listeners=frozenset({("0.0.0.0", 2525)}),
)


def record(target: str, port: int = 25) -> dict[str, Any]:
    return {"priority": 10, "weight": 10, "port": port, "target": target}


@pytest.fixture
async def domain(tenant: Tenant) -> str:
    await provision(
        tenant.client, "main.example", tenant.subscription, downstreamAddresses=[record("mx.a.net")]
    )
    return "main.example"


async def put(tenant: Tenant, domain: str, *records: dict[str, Any]) -> Any:
    return await tenant.client.put(
        f"/domains/{domain}/downstream-address", json={"records": list(records)}
    )


@pytest.mark.parametrize("target", INSIDE)
async def test_inside_addresses_are_refused_by_default(
    tenant: Tenant, domain: str, set_targets: SetTargets, target: str
) -> None:
    set_targets(AddressPolicy())
    response = await put(tenant, domain, record("mx.b.net"), record(target))
    assert_error(response, 400, mentions="private or loopback")
    assert [r["target"] for r in (await shown(tenant.client, domain))["downstreamAddresses"]] == [
        "mx.a.net"
    ]


async def test_provisioning_with_an_inside_address_is_refused(
    tenant: Tenant, set_targets: SetTargets
) -> None:
    set_targets(AddressPolicy())
    response = await tenant.client.post(
        "/domains",
        json={
            "domain": "new.example",
            "subscriptionHandle": tenant.subscription,
            "downstreamAddresses": [record("169.254.169.254", 80)],
        },
    )
    assert_error(response, 400, mentions="link-local")
    batch = await tenant.client.post(
        "/domains/batch",
        params={"subscriptionHandle": tenant.subscription},
        json={
            "domains": [
                {"domain": "ok.example", "downstreamAddress": [record("mx.ok.net")]},
                {"domain": "in.example", "downstreamAddress": [record("10.0.0.1")]},
            ]
        },
    )
    assert batch.status_code == 200, batch.text
    errors = batch.json()["errors"]
    assert [(e["domain"]["domain"], e["code"]) for e in errors] == [("in.example", 400)]
    assert "refused" in str(errors[0])


async def test_public_targets_are_accepted(
    tenant: Tenant, domain: str, set_targets: SetTargets
) -> None:
    set_targets(AddressPolicy())
    response = await put(tenant, domain, record("mx.b.net."), record("93.184.216.34", 2525))
    assert response.status_code == 201, response.text


async def test_the_operator_may_allow_inside_addresses_but_never_mailmoat_itself(
    tenant: Tenant, domain: str, set_targets: SetTargets
) -> None:
    set_targets(MYSELF)
    for target in ("127.0.0.1", "10.1.2.3", "::1", "93.184.216.99"):
        response = await put(tenant, domain, record(target, 2526))
        assert response.status_code == 201, response.text
    for target in ("127.0.0.1", "0.0.0.0", "::ffff:127.0.0.1", "93.184.216.99", "mx.gateway.test."):
        response = await put(tenant, domain, record("mx.b.net"), record(target, 2525))
        assert_error(response, 400, mentions="own SMTP listener")
    # ...and without the allowance mailmoat's own name and addresses are refused everywhere.
    set_targets(MYSELF.allowing(False))
    for target in ("mx.gateway.test", "93.184.216.99"):
        response = await put(tenant, domain, record(target, 8080))
        assert_error(response, 400, mentions="mailmoat")
