"""Account-wide operations: subscriptions, status, reports, API keys, auth, errors, rate limit."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mailmoat.api.app import create_api
from mailmoat.api.ratelimit import RateLimiter
from mailmoat.db.tables import ApiKey, Domain, Report
from mailmoat.services.container import Services
from mailmoat.services.intake import NewMessage, new_message_id
from tests.api.helpers import assert_error, provision_names
from tests.conftest import REDIS_URL, Tenant, TenantFactory, api_client

# -- subscriptions ----------------------------------------------------------------------


def limits_of(subscription: dict[str, Any]) -> dict[str, str]:
    return {limit["featureHandle"]: limit["value"] for limit in subscription["limits"]}


async def test_subscription_shows_plan_limits_and_domain_count(
    make_tenant: TenantFactory,
) -> None:
    t = await make_tenant("acme", domain_limit=5, protected_address_limit=300)
    await provision_names(t.client, t.subscription, "a.example", "b.example", "c.example")
    response = await t.client.get("/subscriptions")
    assert response.status_code == 200, response.text
    [subscription] = response.json()
    assert subscription["handle"] == "acme"
    assert subscription["active"] is True
    assert set(subscription["plan"]) == {"handle", "name"}
    assert all(isinstance(v, str) and v for v in subscription["plan"].values())
    assert limits_of(subscription) == {"domains": "5", "protected-addresses": "300"}
    assert subscription["activeAccountsCount"] == 3


async def test_subscription_without_limits(tenant: Tenant) -> None:
    [subscription] = (await tenant.client.get("/subscriptions")).json()
    assert subscription["limits"] == []
    assert subscription["activeAccountsCount"] == 0


async def test_domain_count_follows_provisioning(tenant: Tenant) -> None:
    async def count() -> int:
        [subscription] = (await tenant.client.get("/subscriptions")).json()
        return int(subscription["activeAccountsCount"])

    await provision_names(tenant.client, tenant.subscription, "a.example", "b.example")
    assert await count() == 2
    alias = await tenant.client.post("/domains/a.example/alias/alias.example")
    assert alias.status_code == 200
    assert await count() == 2  # aliases are not domains
    assert (await tenant.client.delete("/domains/b.example")).status_code == 204
    assert await count() == 1


async def test_subscriptions_are_per_customer(tenant: Tenant, make_tenant: TenantFactory) -> None:
    other = await make_tenant("other", domain_limit=1)
    await provision_names(other.client, other.subscription, "other.example")
    await provision_names(tenant.client, tenant.subscription, "a.example", "b.example")
    mine = (await tenant.client.get("/subscriptions")).json()
    theirs = (await other.client.get("/subscriptions")).json()
    assert [(s["handle"], s["activeAccountsCount"]) for s in mine] == [("acme", 2)]
    assert [(s["handle"], s["activeAccountsCount"]) for s in theirs] == [("other", 1)]
    assert limits_of(theirs[0]) == {"domains": "1"}


async def test_status(tenant: Tenant) -> None:
    response = await tenant.client.get("/status")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"


# -- reports ------------------------------------------------------------------------------

MESSAGE = (
    "From: Spammer <spam@bad.example>\r\n"
    "To: alice@example.com\r\n"
    "Subject: You won\r\n"
    "Message-ID: <abc123@bad.example>\r\n"
    "\r\n"
    "Click here.\r\n"
)


async def stored_reports(services: Services) -> list[Report]:
    async with services.db.read() as session:
        return list((await session.scalars(select(Report).order_by(Report.created_at))).all())


@pytest.fixture
async def acme(tenant: Tenant) -> Tenant:
    await provision_names(tenant.client, tenant.subscription, "example.com")
    return tenant


async def report(
    client: httpx.AsyncClient, report_type: str | None = "false_negative", **body: Any
) -> httpx.Response:
    params = {"report_type": report_type} if report_type is not None else {}
    return await client.post("/report", params=params, json={"messageContent": MESSAGE, **body})


async def received(services: Services, domain: str, message_id: str) -> str:
    """A message log record for ``domain``, as SMTP intake would have written it."""
    async with services.db.read() as session:
        found = await session.scalar(select(Domain).where(Domain.name_ascii == domain))
    assert found is not None
    now = datetime.now(UTC)
    record = NewMessage(
        id=new_message_id(),
        customer_id=found.customer_id,
        domain_id=found.id,
        domain_name=domain,
        received_at=now,
        client_ip="192.0.2.7",
        client_helo="mta.bad.example",
        mail_from="spam@bad.example",
        recipients=[(f"alice@{domain}", None)],
        verdict="ham",
        action="accept",
        reason="clean",
        state="queued",
        reply="250 2.0.0 Ok",
        message_id_header=message_id,
    )
    await services.intake.keep([record])
    return record.id


@pytest.mark.parametrize("report_type", ["false_negative", "false_positive"])
async def test_report_is_stored(services: Services, acme: Tenant, report_type: str) -> None:
    record_id = await received(services, "example.com", "<abc123@bad.example>")
    response = await report(
        acme.client,
        report_type,
        smtpEnvelopeInformation={
            "ehlo": "mta.bad.example",
            "mailFrom": "spam@bad.example",
            "rcptTo": "alice@example.com",
        },
        sendingHostInformation={"name": "mta.bad.example"},
    )
    assert response.status_code == 204, response.text
    assert response.content == b""
    [stored] = await stored_reports(services)
    assert stored.customer_id == acme.customer_id
    assert stored.report_type == report_type
    assert stored.message_content == MESSAGE
    assert stored.message_id_header == "<abc123@bad.example>"
    assert (stored.ehlo, stored.mail_from, stored.rcpt_to, stored.sending_host) == (
        "mta.bad.example",
        "spam@bad.example",
        "alice@example.com",
        "mta.bad.example",
    )
    assert stored.message_id == record_id
    assert stored.domain_id is not None


async def test_report_of_a_message_never_received_is_404(services: Services, acme: Tenant) -> None:
    assert_error(await report(acme.client), 404, mentions="Message not found")
    assert await stored_reports(services) == []


@pytest.mark.parametrize("report_type", [None, "", "spam", "FALSE_NEGATIVE", "false-positive"])
async def test_report_type_is_required(
    services: Services, acme: Tenant, report_type: str | None
) -> None:
    assert_error(await report(acme.client, report_type), 400)
    assert await stored_reports(services) == []


@pytest.mark.parametrize(
    "body",
    [
        {"messageContent": "just some text, not a message"},
        {"messageContent": ""},
        {"messageContent": "\r\n\r\n"},
        {"messageContent": ": no field name\r\n\r\nbody"},
        {"messageContent": "Subject: hi\r\n\x00\r\n"},
        {"messageContent": None},
        {"messageContent": 42},
        {"messageContent": MESSAGE, "smtpEnvelopeInformation": "alice@example.com"},
    ],
)
async def test_report_content_must_be_a_message(
    services: Services, acme: Tenant, body: dict[str, Any]
) -> None:
    response = await acme.client.post(
        "/report", params={"report_type": "false_negative"}, json=body
    )
    assert_error(response, 400)
    assert await stored_reports(services) == []


def _json_report(message: str, **envelope: str) -> bytes:
    """A report body as a client's JSON encoder writes it (``\\udcff`` for a lone surrogate)."""
    body: dict[str, Any] = {"messageContent": message}
    if envelope:
        body["smtpEnvelopeInformation"] = envelope
    return json.dumps(body).encode("ascii")


@pytest.mark.parametrize(
    "body",
    [
        _json_report(MESSAGE.replace("Click here.", "caf\udcff")),
        _json_report(MESSAGE.replace("Subject: You won", "Subject: \udce9t\udce9")),
        _json_report(MESSAGE, rcptTo="alice@example.com\udcff"),
        _json_report(MESSAGE).replace(b"Click here.", b"caf\xff"),
    ],
    ids=["surrogate-in-body", "surrogate-in-header", "surrogate-in-envelope", "raw-0xff"],
)
async def test_report_content_that_is_not_unicode_is_400(
    services: Services, acme: Tenant, body: bytes
) -> None:
    await received(services, "example.com", "<abc123@bad.example>")
    response = await acme.client.post(
        "/report",
        params={"report_type": "false_negative"},
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 400)
    assert await stored_reports(services) == []


async def test_report_content_in_utf8_is_kept(services: Services, acme: Tenant) -> None:
    await received(services, "example.com", "<abc123@bad.example>")
    content = MESSAGE.replace("Click here.", "Café, 日本語, \U0001f600")
    response = await report(acme.client, messageContent=content)
    assert response.status_code == 204, response.text
    [stored] = await stored_reports(services)
    assert stored.message_content == content


async def test_report_without_body_is_rejected(services: Services, acme: Tenant) -> None:
    response = await acme.client.post("/report", params={"report_type": "false_negative"})
    assert_error(response, 400)
    assert await stored_reports(services) == []


async def test_report_about_another_customers_message_is_401(
    services: Services, acme: Tenant, make_tenant: TenantFactory
) -> None:
    other = await make_tenant("other")
    await provision_names(other.client, other.subscription, "other.example")
    await received(services, "other.example", "<abc123@bad.example>")
    assert_error(await report(acme.client), 401)
    assert await stored_reports(services) == []
    # The owner may report it.
    assert (await report(other.client)).status_code == 204


async def test_report_about_mail_to_an_alias_domain_finds_the_domains_record(
    services: Services, acme: Tenant
) -> None:
    alias = await acme.client.post("/domains/example.com/alias/alias.example")
    assert alias.status_code == 200, alias.text
    record_id = await received(services, "example.com", "<abc123@bad.example>")
    response = await report(acme.client, smtpEnvelopeInformation={"rcptTo": "bob@alias.example"})
    assert response.status_code == 204, response.text
    [stored] = await stored_reports(services)
    assert stored.message_id == record_id


async def test_report_about_a_domain_of_another_key_is_403(
    services: Services, acme: Tenant
) -> None:
    second_key = (await services.keys.create(acme.customer_id, "second")).token
    async with api_client(create_api(services, RateLimiter(0)), second_key) as second:
        response = await second.post(
            "/domains",
            params={"associate-key": "true"},
            json={"domain": "private.example", "subscriptionHandle": acme.subscription},
        )
        assert response.status_code == 201, response.text
        await received(services, "private.example", "<abc123@bad.example>")
        envelope = {"rcptTo": "bob@private.example"}
        assert_error(await report(acme.client, smtpEnvelopeInformation=envelope), 403)
        assert await stored_reports(services) == []
        ok = await report(second, smtpEnvelopeInformation=envelope)
        assert ok.status_code == 204, ok.text


@pytest.mark.parametrize("rcpt", ["   ", ",", "<>", "(nobody)", "not an address", "a@b@c"])
async def test_an_unusable_recipient_does_not_stop_matching_by_message_id(
    services: Services, acme: Tenant, rcpt: str
) -> None:
    record_id = await received(services, "example.com", "<abc123@bad.example>")
    response = await report(acme.client, smtpEnvelopeInformation={"rcptTo": rcpt})
    assert response.status_code == 204, response.text
    [stored] = await stored_reports(services)
    assert stored.message_id == record_id
    assert stored.rcpt_to == rcpt


# -- API keys -----------------------------------------------------------------------------


@pytest.fixture
def app(services: Services) -> Any:
    return create_api(services, RateLimiter(0))


async def test_list_keys_shows_no_secrets(tenant: Tenant) -> None:
    response = await tenant.client.get("/api-keys")
    assert response.status_code == 200, response.text
    [key] = response.json()
    assert set(key) == {"id", "prefix", "description", "createdAt"}
    assert key["description"] == "test"
    assert tenant.key.startswith(key["prefix"])
    assert len(key["prefix"]) < len(tenant.key) // 2
    assert tenant.key not in response.text


async def test_created_key_is_shown_once_and_works(app: Any, tenant: Tenant) -> None:
    response = await tenant.client.post("/api-keys", json={"description": "ci pipeline"})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["description"] == "ci pipeline"
    new_key = created["apiKey"]
    assert new_key != tenant.key and new_key.startswith(created["prefix"])
    listed = (await tenant.client.get("/api-keys")).json()
    assert [k["id"] for k in listed][-1] == created["id"]
    assert all("apiKey" not in k for k in listed)
    async with api_client(app, new_key) as client:
        status = await client.get("/subscriptions")
        assert status.status_code == 200
        assert status.json()[0]["handle"] == tenant.subscription


async def test_create_key_without_body(tenant: Tenant) -> None:
    response = await tenant.client.post("/api-keys")
    assert response.status_code == 201, response.text
    assert response.json()["description"] == ""


async def test_create_key_with_bad_description(tenant: Tenant) -> None:
    assert_error(await tenant.client.post("/api-keys", json={"description": "x" * 501}), 400)
    assert_error(await tenant.client.post("/api-keys", json={"description": 5}), 400)
    assert len((await tenant.client.get("/api-keys")).json()) == 1


async def test_deleted_key_stops_working(app: Any, tenant: Tenant) -> None:
    created = (await tenant.client.post("/api-keys", json={"description": "temp"})).json()
    async with api_client(app, created["apiKey"]) as client:
        assert (await client.get("/status")).status_code == 200
        response = await tenant.client.delete(f"/api-keys/{created['id']}")
        assert response.status_code == 204
        assert response.content == b""
        assert_error(await client.get("/status"), 401)
    assert [k["description"] for k in (await tenant.client.get("/api-keys")).json()] == ["test"]
    assert_error(await tenant.client.delete(f"/api-keys/{created['id']}"), 404)


async def test_deleting_a_key_frees_its_domains(app: Any, tenant: Tenant) -> None:
    created = (await tenant.client.post("/api-keys", json={})).json()
    async with api_client(app, created["apiKey"]) as client:
        response = await client.post(
            "/domains",
            params={"associate-key": "true"},
            json={"domain": "private.example", "subscriptionHandle": tenant.subscription},
        )
        assert response.status_code == 201, response.text
        assert_error(await tenant.client.get("/domains/private.example/login-link"), 403)
        assert (await client.delete(f"/api-keys/{created['id']}")).status_code == 204
    response = await tenant.client.get("/domains/private.example/login-link")
    assert response.status_code == 200, response.text


async def test_keys_of_another_customer_are_out_of_reach(
    tenant: Tenant, make_tenant: TenantFactory
) -> None:
    other = await make_tenant("other")
    [their_key] = (await other.client.get("/api-keys")).json()
    assert_error(await tenant.client.delete(f"/api-keys/{their_key['id']}"), 404)
    assert (await other.client.get("/status")).status_code == 200
    assert [k["id"] for k in (await tenant.client.get("/api-keys")).json()] != [their_key["id"]]
    assert_error(await tenant.client.delete("/api-keys/does-not-exist"), 404)


async def test_keys_are_stored_as_hmac(services: Services, tenant: Tenant) -> None:
    extra = (await tenant.client.post("/api-keys", json={"description": "x"})).json()["apiKey"]
    async with services.db.read() as session:
        rows = (await session.scalars(select(ApiKey))).all()
    assert len(rows) == 2
    for row in rows:
        stored = " ".join(str(getattr(row, c.key)) for c in ApiKey.__table__.columns)
        for token in (tenant.key, extra):
            assert token not in stored
            assert token.split("_", 1)[1] not in stored
        assert len(row.token_hash) == 64
        int(row.token_hash, 16)


# -- authentication and error shape -------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": ""},
        {"X-API-Key": "wrong"},
        {"X-API-Key": "mm_" + "A" * 43},
        {"X-API-Key": "x" * 5000},
        {"Authorization": "Bearer whatever"},
    ],
)
async def test_requests_without_a_valid_key_are_401(
    app: Any, tenant: Tenant, headers: dict[str, str]
) -> None:
    async with api_client(app, None) as client:
        response = await client.get("/subscriptions", headers=headers)
    assert_error(response, 401)


async def test_key_header_name_is_case_insensitive(app: Any, tenant: Tenant) -> None:
    async with api_client(app, None) as client:
        response = await client.get("/status", headers={"x-api-key": tenant.key})
    assert response.status_code == 200


async def test_unknown_route_is_404_in_error_shape(tenant: Tenant) -> None:
    assert_error(await tenant.client.get("/no-such-thing"), 404)
    assert_error(await tenant.client.get("/domains/example.com/no-such-thing"), 404)


async def test_wrong_method_is_405_in_error_shape(tenant: Tenant) -> None:
    response = await tenant.client.delete("/subscriptions")
    assert_error(response, 405)
    assert "GET" in response.headers.get("allow", "")
    assert_error(await tenant.client.patch("/lists/safelist"), 405)


# -- rate limit ---------------------------------------------------------------------------


async def hammer(client: httpx.AsyncClient, n: int) -> list[httpx.Response]:
    return [await client.get("/status") for _ in range(n)]


async def check_rate_limit(
    services: Services, limiter: RateLimiter, make_tenant: TenantFactory, handle: str
) -> None:
    """5 requests per second: the sixth quick one is refused, per customer, whatever key."""
    first = await make_tenant(f"{handle}-a")
    second = await make_tenant(f"{handle}-b")
    extra_key = (await services.keys.create(first.customer_id, "extra")).token
    app = create_api(services, limiter)
    async with (
        api_client(app, first.key) as a1,
        api_client(app, extra_key) as a2,
        api_client(app, second.key) as b,
    ):
        # Alternate the customer's two keys: they share one budget.
        responses = []
        for i in range(30):
            responses.append(await (a1 if i % 2 else a2).get("/status"))
            if responses[-1].status_code == 503:
                break
        codes = [r.status_code for r in responses]
        assert codes[:5] == [200] * 5, codes
        assert codes[-1] == 503 and len(codes) < 10, codes
        body = assert_error(responses[-1], 503)
        assert "rate limit" in body["message"]
        assert 1 <= int(responses[-1].headers["Retry-After"]) <= 2
        # Another customer has a budget of its own.
        assert [r.status_code for r in await hammer(b, 5)] == [200] * 5
        # The limit is per second: after a pause the customer may go on.
        await asyncio.sleep(2.1)
        assert (await a1.get("/status")).status_code == 200


async def test_rate_limit_in_memory(services: Services, make_tenant: TenantFactory) -> None:
    await check_rate_limit(services, RateLimiter(5), make_tenant, "rl")


async def test_unauthenticated_requests_are_refused_before_counting(
    services: Services, tenant: Tenant
) -> None:
    app = create_api(services, RateLimiter(5))
    async with api_client(app, "wrong") as wrong, api_client(app, tenant.key) as right:
        assert {r.status_code for r in await hammer(wrong, 10)} == {401}
        assert [r.status_code for r in await hammer(right, 5)] == [200] * 5


@pytest.fixture
async def redis_limiter() -> AsyncIterator[RateLimiter]:
    if not REDIS_URL:
        pytest.skip("MAILMOAT_TEST_REDIS_URL is not set")
    yield RateLimiter(5, REDIS_URL)


async def test_rate_limit_in_redis(
    services: Services, make_tenant: TenantFactory, redis_limiter: RateLimiter
) -> None:
    # Redis outlives the test database: make the customers unique to this run.
    await check_rate_limit(services, redis_limiter, make_tenant, f"rl-{uuid.uuid4().hex[:12]}")


async def test_rate_limit_in_redis_is_shared_by_nodes(
    services: Services, make_tenant: TenantFactory, redis_limiter: RateLimiter
) -> None:
    t = await make_tenant(f"rl-{uuid.uuid4().hex[:12]}")
    node1 = create_api(services, redis_limiter)
    node2 = create_api(services, RateLimiter(5, REDIS_URL))
    async with api_client(node1, t.key) as c1, api_client(node2, t.key) as c2:
        codes = [(await (c1 if i % 2 else c2).get("/status")).status_code for i in range(10)]
    assert codes[:5] == [200] * 5, codes
    assert 503 in codes, codes
