"""API additions that came with the Domain Console: the subject filter of the message log,
the audit trail of API actions on mail, and batch login links that fail one by one."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, select, update

from mailmoat.db.tables import Delivery, LoginLink, MessageRecipient
from mailmoat.services.container import Services
from tests.api.helpers import assert_error, provision_names
from tests.conftest import api_client
from tests.console import conftest as console_fixtures
from tests.console.conftest import (
    B_DOMAIN,
    DOMAIN,
    OTHER_DOMAIN,
    ConsoleFactory,
    World,
    audit_rows,
    key_id,
    set_message,
    sign_in,
    token_of,
)

# The console tests' fixtures: a gateway, the web application, signed-in consoles.
make_gateway = console_fixtures.make_gateway
web_app = console_fixtures.web_app
world = console_fixtures.world
open_console = console_fixtures.open_console

# -- the subject filter --------------------------------------------------------------------


async def subjects(world: World, **params: Any) -> list[str]:
    response = await world.api.get(f"/domains/{DOMAIN}/messages", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["messages"])
    return [m["subject"] for m in body["messages"]]


async def test_messages_by_a_part_of_the_subject_in_any_case(world: World) -> None:
    for subject in ("Invoice 2026-001", "Your INVOICE is ready", "Lunch", "100% off", "1000 off"):
        await world.send(subject)
    await world.send("Invoice for b", to=f"carol@{B_DOMAIN}")
    assert await subjects(world, subject="invoice") == ["Your INVOICE is ready", "Invoice 2026-001"]
    assert await subjects(world, subject="INVOICE IS") == ["Your INVOICE is ready"]
    assert await subjects(world, subject="lunch") == ["Lunch"]
    assert await subjects(world, subject="100%") == ["100% off"]  # % is not a wildcard
    assert await subjects(world, subject="nothing") == []
    assert await subjects(world, subject="invoice", state="quarantined") == []
    assert len(await subjects(world)) == 5


async def test_subject_filter_is_limited_in_length(world: World) -> None:
    response = await world.api.get(f"/domains/{DOMAIN}/messages", params={"subject": "x" * 999})
    assert_error(response, 400)


async def test_messages_without_a_subject_do_not_match(world: World) -> None:
    await world.send("Something")
    sent = await world.send("Other")
    # A message whose Subject header was missing has no subject in the log.
    services = world.gateway.services
    await set_message(services, sent, subject=None)
    assert await subjects(world, subject="o") == ["Something"]


# -- the audit trail of API actions -----------------------------------------------------------


@pytest.fixture
async def api_actor(services: Services, world: World) -> str:
    return f"API key {(await key_id(services, world.tenant.customer_id))[:12]}"


def history(page: str) -> str:
    start = page.index("<h2>History</h2>")
    return page[start : page.index("</section>", start)]


async def test_api_release_and_delete_are_in_the_audit_trail(
    services: Services, world: World, api_actor: str, open_console: ConsoleFactory
) -> None:
    released = await world.send("Released", spam=True)
    deleted = await world.send("Deleted", spam=True)
    response = await world.api.post(f"/messages/{released}/release")
    assert response.status_code == 200, response.text
    response = await world.api.delete(f"/messages/{deleted}")
    assert response.status_code == 204, response.text

    assert [(e.actor, e.action) for e in await audit_rows(services, released)] == [
        (api_actor, "released")
    ]
    assert [(e.actor, e.action) for e in await audit_rows(services, deleted)] == [
        (api_actor, "deleted")
    ]
    console = await open_console()
    assert f"<strong>released</strong> by {api_actor}" in history(
        await console.page(f"/messages/{released}")
    )
    assert f"<strong>deleted</strong> by {api_actor}" in history(
        await console.page(f"/messages/{deleted}")
    )
    activity = await console.page("/activity")
    assert activity.count(f"by {api_actor}") == 2


async def test_api_redeliver_is_in_the_audit_trail(
    services: Services, world: World, api_actor: str, open_console: ConsoleFactory
) -> None:
    sent = await world.send("Sent")
    # As if a worker had delivered it (no worker runs in these tests): the message
    # leaves the queue and is marked delivered.
    async with services.db.write() as session:
        await session.execute(delete(Delivery).where(Delivery.message_id == sent))
        await session.execute(
            update(MessageRecipient)
            .where(MessageRecipient.message_id == sent)
            .values(delivery_status="delivered", delivery_reply="250 ok")
        )
    await set_message(services, sent, state="delivered")
    response = await world.api.post(f"/messages/{sent}/redeliver")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "queued"
    [event] = await audit_rows(services, sent)
    assert (event.actor, event.action, event.detail) == (api_actor, "redelivered", "was delivered")
    console = await open_console()
    assert f"<strong>redelivered</strong> by {api_actor} — was delivered" in history(
        await console.page(f"/messages/{sent}")
    )


async def test_refused_api_actions_leave_no_audit_trail(services: Services, world: World) -> None:
    sent = await world.send("Clean")
    assert_error(await world.api.post(f"/messages/{sent}/release"), 409)
    assert_error(await world.api.delete(f"/messages/{sent}"), 409)
    assert_error(await world.api.post(f"/messages/{sent}/redeliver"), 409)
    foreign = await world.send("Theirs", spam=True, to=f"dave@{OTHER_DOMAIN}")
    assert_error(await world.api.post(f"/messages/{foreign}/release"), 404)
    assert await audit_rows(services, sent) == []
    assert await audit_rows(services, foreign) == []


async def test_api_actions_of_a_second_key_name_that_key(
    services: Services, world: World, shared_app: FastAPI
) -> None:
    second = await services.keys.create(world.tenant.customer_id, "second")
    held = await world.send("Held", spam=True)
    async with api_client(shared_app, second.token) as client:
        response = await client.post(f"/messages/{held}/release")
        assert response.status_code == 200, response.text
    [event] = await audit_rows(services, held)
    assert event.actor == f"API key {second.key.id[:12]}"


# -- batch login links ----------------------------------------------------------------------


async def test_batch_login_links_fail_one_by_one(
    services: Services, world: World, web_app: FastAPI
) -> None:
    """An unknown domain and another customer's domain each get their own error;
    the valid domains of the same call get working links."""
    response = await world.api.post(
        "/domains/batch/login-link",
        json={
            "domains": [
                {"domain": DOMAIN},
                {"domain": "unknown.example"},
                {"domain": OTHER_DOMAIN},
                {"domain": B_DOMAIN},
            ]
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"successes", "errors"}
    successes = {s["domain"]: s for s in body["successes"]}
    errors = {e["domain"]: e for e in body["errors"]}
    assert set(successes) == {DOMAIN, B_DOMAIN}
    assert set(errors) == {"unknown.example", OTHER_DOMAIN}

    unknown, foreign = errors["unknown.example"], errors[OTHER_DOMAIN]
    assert unknown["code"] == 404 and "does not exist" in unknown["comment"]
    assert foreign["code"] == 401 and "another customer" in foreign["comment"]
    assert "unknown.example" in unknown["comment"] and OTHER_DOMAIN in foreign["comment"]
    for error in (unknown, foreign):
        assert error.get("loginLink") is None
    for success in successes.values():
        assert success["code"] == 200
        assert success["comment"]  # e.g. until when the link is valid

    async with services.db.read() as session:
        assert len(list(await session.scalars(select(LoginLink)))) == 2
    # Each link signs in to its own domain.
    for domain, success in successes.items():
        console = await sign_in(web_app, token_of(success["loginLink"]), domain)
        assert f"Messages for {domain}" in await console.page("/messages")
        await console.http.aclose()
    # The other customer's domain is untouched: its owner still gets links for it.
    response = await world.other.client.get(f"/domains/{OTHER_DOMAIN}/login-link")
    assert response.status_code == 200, response.text


async def test_batch_login_links_when_every_domain_fails(services: Services, world: World) -> None:
    response = await world.api.post(
        "/domains/batch/login-link",
        json={"domains": [{"domain": "unknown.example"}, {"domain": OTHER_DOMAIN}]},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["successes"] == []
    assert sorted(e["code"] for e in body["errors"]) == [401, 404]
    async with services.db.read() as session:
        assert list(await session.scalars(select(LoginLink))) == []


async def test_another_customers_domain_is_never_linked(world: World) -> None:
    await provision_names(world.other.client, world.other.subscription, "second-other.example")
    response = await world.api.post(
        "/domains/batch/login-link",
        json={"domains": [{"domain": "second-other.example"}, {"domain": OTHER_DOMAIN}]},
    )
    body = response.json()
    assert body["successes"] == []
    assert {e["code"] for e in body["errors"]} == {401}


async def test_a_date_out_of_range_is_refused(world: World, shared_app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=shared_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://gateway.test/inbound/v1",
        headers={"X-API-Key": world.tenant.key},
    ) as client:
        response = await client.get(
            f"/domains/{DOMAIN}/messages", params={"since": "0001-01-01T00:00+01:00"}
        )
    assert_error(response, 400)
