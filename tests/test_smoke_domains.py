"""Provisioning one domain and reading it back."""

from __future__ import annotations

from tests.conftest import Tenant


async def test_provision_then_list(tenant: Tenant) -> None:
    created = await tenant.client.post(
        "/domains", json={"domain": "bücher.example", "subscriptionHandle": tenant.subscription}
    )
    assert created.status_code == 201, created.text
    assert created.json()["domain"] == "bücher.example"
    listed = await tenant.client.get("/domains", params={"domains": "xn--bcher-kva.example"})
    assert listed.status_code == 200
    assert listed.json()["total"] == 1
    assert [d["domain"] for d in listed.json()["domains"]] == ["bücher.example"]
