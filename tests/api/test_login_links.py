"""Login links into the Domain Console: one at a time and in batches.

The URL is the configured public URL + /console/login/<token>; each call makes a
new token; only a hash of the token is stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mailmoat.api.app import create_api
from mailmoat.api.ratelimit import RateLimiter
from mailmoat.db.tables import LoginLink
from mailmoat.services.container import Services
from tests.api.helpers import assert_error, provision_names
from tests.conftest import PUBLIC_URL, Tenant, TenantFactory, api_client

LINK_PREFIX = f"{PUBLIC_URL}/console/login/"


def token_of(link: str) -> str:
    assert link.startswith(LINK_PREFIX), link
    token = link.removeprefix(LINK_PREFIX)
    assert len(token) >= 32 and "/" not in token and "?" not in token, link
    return token


async def stored_links(services: Services) -> list[LoginLink]:
    async with services.db.read() as session:
        return list((await session.scalars(select(LoginLink))).all())


@pytest.fixture
async def world(
    services: Services, tenant: Tenant, make_tenant: TenantFactory
) -> AsyncIterator[dict[str, Any]]:
    """acme owns example.com (+ alias alias.example) and private.example, associated with a
    second acme key; another customer owns other.example."""
    await provision_names(tenant.client, tenant.subscription, "example.com", "bücher.example")
    response = await tenant.client.post("/domains/example.com/alias/alias.example")
    assert response.status_code == 200, response.text
    second_key = (await services.keys.create(tenant.customer_id, "second")).token
    second = api_client(create_api(services, RateLimiter(0)), second_key)
    response = await second.post(
        "/domains",
        params={"associate-key": "true"},
        json={"domain": "private.example", "subscriptionHandle": tenant.subscription},
    )
    assert response.status_code == 201, response.text
    other = await make_tenant("other")
    await provision_names(other.client, other.subscription, "other.example")
    yield {"acme": tenant, "second": second, "other": other}
    await second.aclose()


# -- one link -------------------------------------------------------------------------


async def test_login_link_points_at_the_console(services: Services, world: dict[str, Any]) -> None:
    response = await world["acme"].client.get("/domains/example.com/login-link")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"loginLink"}
    token_of(body["loginLink"])
    assert len(await stored_links(services)) == 1


async def test_every_call_makes_a_new_link(world: dict[str, Any]) -> None:
    client = world["acme"].client
    tokens = set()
    for _ in range(3):
        response = await client.get("/domains/example.com/login-link")
        assert response.status_code == 200, response.text
        tokens.add(token_of(response.json()["loginLink"]))
    assert len(tokens) == 3


@pytest.mark.parametrize("name", ["bücher.example", "xn--bcher-kva.example", "EXAMPLE.com"])
async def test_login_link_by_either_label_form(world: dict[str, Any], name: str) -> None:
    response = await world["acme"].client.get(f"/domains/{name}/login-link")
    assert response.status_code == 200, response.text
    token_of(response.json()["loginLink"])


async def test_login_link_for_a_domain_associated_with_the_calling_key(
    world: dict[str, Any],
) -> None:
    response = await world["second"].get("/domains/private.example/login-link")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("other.example", 401),
        ("alias.example", 403),
        ("private.example", 403),
        ("unknown.example", 404),
        ("not_a.domain", 400),
        ("localhost", 400),
        ("xn--.example", 400),
    ],
)
async def test_login_link_refused(
    services: Services, world: dict[str, Any], name: str, status: int
) -> None:
    assert_error(await world["acme"].client.get(f"/domains/{name}/login-link"), status)
    assert await stored_links(services) == []


async def test_login_link_is_a_get(world: dict[str, Any]) -> None:
    assert_error(await world["acme"].client.post("/domains/example.com/login-link"), 405)


async def test_login_link_needs_an_api_key(services: Services, world: dict[str, Any]) -> None:
    async with api_client(create_api(services, RateLimiter(0)), None) as anonymous:
        assert_error(await anonymous.get("/domains/example.com/login-link"), 401)
    async with api_client(create_api(services, RateLimiter(0)), "mm_wrong") as wrong:
        assert_error(await wrong.get("/domains/example.com/login-link"), 401)


async def test_tokens_are_stored_hashed(services: Services, world: dict[str, Any]) -> None:
    response = await world["acme"].client.get("/domains/example.com/login-link")
    token = token_of(response.json()["loginLink"])
    batch = await world["acme"].client.post(
        "/domains/batch/login-link", json={"domains": [{"domain": "bücher.example"}]}
    )
    tokens = [token, token_of(batch.json()["successes"][0]["loginLink"])]
    rows = await stored_links(services)
    assert len(rows) == 2
    for row in rows:
        columns = {c.key: getattr(row, c.key) for c in LoginLink.__table__.columns}
        stored = " ".join(str(v) for v in columns.values())
        for t in tokens:
            assert t not in stored
            assert t.split("_", 1)[-1] not in stored
        assert row.used_at is None
        assert row.expires_at > row.created_at


# -- batches -------------------------------------------------------------------------


async def batch(client: httpx.AsyncClient, *names: str) -> httpx.Response:
    return await client.post(
        "/domains/batch/login-link", json={"domains": [{"domain": n} for n in names]}
    )


async def test_batch_of_a_thousand_domains(services: Services, tenant: Tenant) -> None:
    names = [f"d{i:04}.example" for i in range(1000)]
    await provision_names(tenant.client, tenant.subscription, *names)
    response = await batch(tenant.client, *names)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["errors"] == []
    assert [s["domain"] for s in body["successes"]] == names
    assert {s["code"] for s in body["successes"]} == {200}
    tokens = {token_of(s["loginLink"]) for s in body["successes"]}
    assert len(tokens) == 1000
    assert len(await stored_links(services)) == 1000


async def test_batch_reports_each_domain(services: Services, world: dict[str, Any]) -> None:
    response = await batch(
        world["acme"].client,
        "example.com",
        "unknown.example",
        "other.example",
        "alias.example",
        "private.example",
        "not_a.domain",
        "xn--bcher-kva.example",
    )
    assert response.status_code == 200, response.text
    body = response.json()
    successes = {s["domain"]: s for s in body["successes"]}
    assert set(successes) == {"example.com", "bücher.example"}
    for success in successes.values():
        assert success["code"] == 200
        token_of(success["loginLink"])
    codes = {e["domain"]: e["code"] for e in body["errors"]}
    assert codes == {
        "unknown.example": 404,
        "other.example": 401,
        "alias.example": 403,
        "private.example": 403,
        "not_a.domain": 400,
    }
    for error in body["errors"]:
        assert error.get("loginLink") is None
        assert error["comment"]
    assert len(await stored_links(services)) == 2


async def test_batch_with_the_same_domain_twice_makes_two_links(world: dict[str, Any]) -> None:
    response = await batch(world["acme"].client, "example.com", "example.com")
    links = [s["loginLink"] for s in response.json()["successes"]]
    assert len(links) == 2 and links[0] != links[1]


@pytest.mark.parametrize(
    "body",
    [
        {"domains": []},
        {"domains": [{"domain": f"d{i}.example"} for i in range(1001)]},
        {},
        {"domains": "example.com"},
        {"domains": [{"name": "example.com"}]},
        {"domains": [{"domain": None}]},
        ["example.com"],
    ],
)
async def test_batch_request_rejected(
    services: Services, world: dict[str, Any], body: object
) -> None:
    response = await world["acme"].client.post("/domains/batch/login-link", json=body)
    assert_error(response, 400)
    assert await stored_links(services) == []


async def test_batch_needs_an_api_key(services: Services, world: dict[str, Any]) -> None:
    async with api_client(create_api(services, RateLimiter(0)), None) as anonymous:
        assert_error(await batch(anonymous, "example.com"), 401)
    assert await stored_links(services) == []
