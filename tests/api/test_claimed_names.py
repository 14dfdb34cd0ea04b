"""Names a customer may not get, through both APIs: public suffixes, names under or
above another customer's, and mailmoat's own names; concurrent claims included."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from mailmoat.api.app import create_api
from mailmoat.api.ratelimit import RateLimiter
from mailmoat.bootstrap import open_services
from mailmoat.config import Settings
from tests.api.helpers import assert_error, provision, shown
from tests.conftest import OWN_HOSTNAME, Tenant, TenantFactory, api_client
from tests.webhooks.conftest import ADDRESS_DOMAIN, account_client

TARGET = "https://hooks.example.net/incoming"
KINDS = ["domain", "alias", "custom"]

Create = Callable[..., Awaitable[httpx.Response]]


@pytest.fixture
async def create(shared_app: FastAPI) -> AsyncIterator[Create]:
    """``await create(tenant, kind, name)``: give the tenant ``name`` as a provisioned
    domain, as an alias (of a domain of its own) or as a custom domain (of a new
    webhook address); the answer of the call that does it."""
    clients: list[httpx.AsyncClient] = []
    carriers: dict[str, str] = {}
    counter = itertools.count()

    async def factory(tenant: Tenant, kind: str, name: str) -> httpx.Response:
        if kind == "domain":
            return await tenant.client.post(
                "/domains", json={"domain": name, "subscriptionHandle": tenant.subscription}
            )
        if kind == "alias":
            if tenant.handle not in carriers:
                carriers[tenant.handle] = f"carrier-{tenant.handle}.example"
                await provision(tenant.client, carriers[tenant.handle], tenant.subscription)
            return await tenant.client.post(f"/domains/{carriers[tenant.handle]}/alias/{name}")
        account = account_client(shared_app, tenant.handle, tenant.key)
        clients.append(account)
        address = await account.post("/addresses", json={"target": f"{TARGET}/{next(counter)}"})
        assert address.status_code == 201, address.text
        return await account.post(
            "/custom_domains", json={"domain": name, "address_id": address.json()["id"]}
        )

    yield factory
    for client in clients:
        await client.aclose()


def created(response: httpx.Response) -> None:
    assert response.status_code in (200, 201), response.text


# -- public suffixes and mailmoat's own names ---------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "name",
    [
        "co.uk",
        "CO.UK",
        "github.io",  # the list's private section: each user has a name under it
        "公司.cn",  # xn--55qx5d.cn, a public suffix given in U-label form
        "個人.香港",
    ],
)
async def test_public_suffixes_are_refused(
    tenant: Tenant, create: Create, kind: str, name: str
) -> None:
    assert_error(await create(tenant, kind, name), 400, mentions="public suffix")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "name",
    [
        OWN_HOSTNAME,  # mx.gateway.test
        "gateway.test",  # its parent
        "eu.mx.gateway.test",  # under it
        ADDRESS_DOMAIN,  # webhooks.invalid, where webhook addresses live
        "eu.webhooks.invalid",
    ],
)
async def test_mailmoats_own_names_and_their_parents_are_refused(
    tenant: Tenant, create: Create, kind: str, name: str
) -> None:
    assert_error(await create(tenant, kind, name), 400, mentions="mailmoat's own name")


async def test_a_sibling_of_mailmoats_own_name_is_anyones(tenant: Tenant, create: Create) -> None:
    created(await create(tenant, "domain", "shop.gateway.test"))


async def test_a_batch_reports_the_refused_names_and_provisions_the_others(
    make_tenant: TenantFactory,
) -> None:
    owner = await make_tenant("owner")
    await provision(owner.client, "example.com", owner.subscription)
    tenant = await make_tenant("acme")
    response = await tenant.client.post(
        "/domains/batch",
        params={"subscriptionHandle": tenant.subscription},
        json={
            "domains": [
                {"domain": "co.uk"},
                {"domain": "fine.example"},
                {"domain": "sub.example.com"},
                {"domain": "other.example", "aliases": ["mail.example.com"]},
                {"domain": "also-fine.example", "aliases": ["alias.also-fine.example"]},
                {"domain": OWN_HOSTNAME},
            ]
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(s["domain"]["domain"], s["code"]) for s in body["successes"]] == [
        ("fine.example", 201),
        ("also-fine.example", 201),
    ]
    errors = {e["domain"]["domain"]: e for e in body["errors"]}
    assert {n: e["code"] for n, e in errors.items()} == {
        "co.uk": 400,
        "sub.example.com": 409,
        "other.example": 409,
        OWN_HOSTNAME: 400,
    }
    assert "another customer" in errors["sub.example.com"]["comment"]
    listed = await tenant.client.get("/domains", params={"limit": 100})
    assert sorted(d["domain"] for d in listed.json()["domains"]) == [
        "also-fine.example",
        "fine.example",
    ]


# -- another customer's names -------------------------------------------------------------


@pytest.mark.parametrize("claimant_kind", KINDS)
@pytest.mark.parametrize("holder_kind", KINDS)
@pytest.mark.parametrize(
    ("held", "wanted"),
    [
        ("example.com", "sub.example.com"),  # under another customer's name
        ("example.com", "a.b.example.com"),
        ("sub.example.com", "example.com"),  # above it
        ("a.b.example.com", "example.com"),
        ("a.example.com", "b.example.com"),  # beside it, under their registered domain
    ],
    ids=["under", "deep-under", "above", "far-above", "beside"],
)
async def test_names_overlapping_another_customers_are_refused(
    make_tenant: TenantFactory,
    create: Create,
    holder_kind: str,
    claimant_kind: str,
    held: str,
    wanted: str,
) -> None:
    holder = await make_tenant("holder")
    created(await create(holder, holder_kind, held))
    claimant = await make_tenant("claimant")
    refused = assert_error(await create(claimant, claimant_kind, wanted), 409)
    assert "another customer" in refused["message"], refused
    assert "holder" not in refused["message"]
    # The holder itself may nest its names.
    created(await create(holder, claimant_kind, wanted))


@pytest.mark.parametrize("claimant_kind", KINDS)
async def test_a_wildcard_custom_domain_holds_the_names_under_it(
    make_tenant: TenantFactory, create: Create, claimant_kind: str
) -> None:
    holder = await make_tenant("holder")
    created(await create(holder, "custom", "*.example.com"))
    claimant = await make_tenant("claimant")
    assert_error(await create(claimant, claimant_kind, "eu.example.com"), 409)
    assert_error(await create(claimant, claimant_kind, "example.com"), 409)
    refused = await create(claimant, "custom", "*.eu.example.com")
    assert_error(refused, 409)


async def test_new_aliases_in_the_settings_are_checked_too(
    make_tenant: TenantFactory, create: Create
) -> None:
    holder = await make_tenant("holder")
    created(await create(holder, "domain", "example.com"))
    claimant = await make_tenant("claimant")
    await provision(claimant.client, "mine.example", claimant.subscription, aliases=["a.example"])
    response = await claimant.client.put(
        "/domains/mine.example/settings",
        json={"aliases": ["b.example", "mail.example.com"], "abusePolicy": "block"},
    )
    assert_error(response, 409, mentions="another customer")
    after = await shown(claimant.client, "mine.example")
    assert after["aliases"] == ["a.example"]
    assert after["settings"]["abusePolicy"] != "block"
    # Through overwrite in a batch: that item fails, its domain stays as it was.
    response = await claimant.client.post(
        "/domains/batch",
        params={"subscriptionHandle": claimant.subscription, "overwrite": "true"},
        json={"domains": [{"domain": "mine.example", "aliases": ["mail.example.com"]}]},
    )
    assert [e["code"] for e in response.json()["errors"]] == [409], response.text
    assert (await shown(claimant.client, "mine.example"))["aliases"] == ["a.example"]


async def test_released_names_are_free_again_and_kept_parents_are_not(
    make_tenant: TenantFactory, create: Create
) -> None:
    holder = await make_tenant("holder")
    await provision(holder.client, "example.com", holder.subscription)
    await provision(holder.client, "sub.example.com", holder.subscription)
    claimant = await make_tenant("claimant")
    # The holder gives up example.com but keeps sub.example.com: example.com is
    # still above a name of theirs.
    assert (await holder.client.delete("/domains/example.com")).status_code == 204
    assert_error(await create(claimant, "domain", "example.com"), 409)
    assert_error(await create(claimant, "custom", "other.example.com"), 409)
    # Once nothing of theirs is left under it, anyone may claim it.
    assert (await holder.client.delete("/domains/sub.example.com")).status_code == 204
    created(await create(claimant, "custom", "other.example.com"))
    created(await create(claimant, "domain", "example.com"))
    assert_error(await create(holder, "domain", "sub.example.com"), 409)


@pytest.mark.parametrize("how", ["alias", "custom-domain", "address", "batch"])
async def test_every_way_of_deleting_a_name_releases_it(
    make_tenant: TenantFactory, create: Create, shared_app: FastAPI, how: str
) -> None:
    holder = await make_tenant("holder")
    account = account_client(shared_app, holder.handle, holder.key)
    async with account:
        if how == "alias":
            await provision(holder.client, "keep.example", holder.subscription)
            created(await holder.client.post("/domains/keep.example/alias/mail.example.com"))
            gone = await holder.client.delete("/domains/keep.example/alias/mail.example.com")
        elif how == "batch":
            await provision(holder.client, "keep.example", holder.subscription)
            await provision(
                holder.client, "eu.example.com", holder.subscription, aliases=["x.example.net"]
            )
            gone = await holder.client.post(
                "/domains/batch/deprovision", json={"domains": [{"domain": "eu.example.com"}]}
            )
        else:
            address = (await account.post("/addresses", json={"target": TARGET})).json()
            custom = await account.post(
                "/custom_domains", json={"domain": "*.example.com", "address_id": address["id"]}
            )
            created(custom)
            if how == "custom-domain":
                gone = await account.delete(f"/custom_domains/{custom.json()['id']}")
            else:
                gone = await account.delete(f"/addresses/{address['id']}")
        assert gone.status_code in (200, 202, 204), gone.text
    claimant = await make_tenant("claimant")
    created(await create(claimant, "domain", "example.com"))
    if how == "batch":
        created(await create(claimant, "domain", "example.net"))


async def test_a_large_batch_deprovision_keeps_only_the_parents_still_needed(
    make_tenant: TenantFactory, create: Create
) -> None:
    holder = await make_tenant("holder")
    names = [f"d{i}.zone{i}.example" for i in range(15)]
    response = await holder.client.post(
        "/domains/batch",
        params={"subscriptionHandle": holder.subscription},
        json={"domains": [{"domain": n} for n in [*names, "keep.zone0.example"]]},
    )
    assert response.status_code == 200 and response.json()["errors"] == [], response.text
    gone = await holder.client.post(
        "/domains/batch/deprovision", json={"domains": [{"domain": n} for n in names]}
    )
    assert gone.status_code == 200, gone.text
    claimant = await make_tenant("claimant")
    assert_error(await create(claimant, "domain", "zone0.example"), 409)
    for i in (1, 7, 14):
        created(await create(claimant, "domain", f"zone{i}.example"))


# -- races ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first_kind", "second_kind"),
    [("domain", "domain"), ("domain", "custom"), ("custom", "alias"), ("alias", "domain")],
)
async def test_of_two_customers_racing_for_overlapping_names_exactly_one_wins(
    make_tenant: TenantFactory, create: Create, first_kind: str, second_kind: str
) -> None:
    first = await make_tenant("first")
    second = await make_tenant("second")
    # Carriers of aliases exist before the race starts.
    created(await create(first, first_kind, "warmup-first.example"))
    created(await create(second, second_kind, "warmup-second.example"))
    pairs = []
    for round_ in range(8):
        parent, child = f"race{round_}.example.com", f"mail.race{round_}.example.com"
        if round_ % 2:
            parent, child = child, parent
        pairs.append([(first, first_kind, parent), (second, second_kind, child)])
    # Every pair at once: more chances for the requests to interleave.
    answers = await asyncio.gather(*(create(t, k, n) for pair in pairs for t, k, n in pair))
    for round_ in range(len(pairs)):
        pair = answers[2 * round_ : 2 * round_ + 2]
        codes = sorted(a.status_code for a in pair)
        assert codes in ([200, 409], [201, 409]), [a.text for a in pair]
        assert_error(next(a for a in pair if a.status_code == 409), 409)


# -- the composition root ------------------------------------------------------------------


async def test_the_settings_name_mailmoats_own_names(tmp_path: Path) -> None:
    """What ``mailmoat serve`` builds refuses its configured host name, its webhook
    address domain and their parents, and the public suffixes of the real list."""
    settings = Settings(
        data_dir=tmp_path,
        smtp_hostname="MX1.Mail.Operator.example.",
        webhook_address_domain="in.hooks.example",
        dns_servers="127.0.0.1:9",  # never the system resolver
        rate_limit=0,
    )
    async with open_services(settings) as services:
        customer = await services.customers.create("acme")
        key = (await services.keys.create(customer.id, "test")).token
        app = create_api(services, RateLimiter(0))
        async with api_client(app, key) as client:
            for name in (
                "mx1.mail.operator.example",
                "mail.operator.example",
                "operator.example",
                "in.hooks.example",
                "x.in.hooks.example",
                "hooks.example",
                "co.uk",
            ):
                response = await client.post(
                    "/domains", json={"domain": name, "subscriptionHandle": "acme"}
                )
                assert_error(response, 400)
            response = await client.post(
                "/domains", json={"domain": "customer.example", "subscriptionHandle": "acme"}
            )
            assert response.status_code == 201, response.text


async def test_a_customer_releasing_and_claiming_at_once_keeps_its_parents(
    make_tenant: TenantFactory, create: Create
) -> None:
    """Deleting one name while adding its sibling: the parent stays held."""
    holder = await make_tenant("holder")
    claimant = await make_tenant("claimant")
    for round_ in range(12):
        zone = f"zone{round_}.example.com"
        await provision(holder.client, f"old.{zone}", holder.subscription)
        gone, added = await asyncio.gather(
            holder.client.delete(f"/domains/old.{zone}"),
            create(holder, "domain", f"new.{zone}"),
        )
        assert gone.status_code == 204, gone.text
        created(added)
        assert_error(await create(claimant, "domain", zone), 409)
