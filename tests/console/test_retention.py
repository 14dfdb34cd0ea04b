"""Quarantine retention: quarantined mail is deleted after 7 days, and the console says when."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import update

from mailmoat import housekeeping
from mailmoat.db.tables import ConsoleSession, LoginLink
from mailmoat.services.container import Services
from mailmoat.services.messages import RETENTION_ACTOR, MessageService
from tests.api.helpers import assert_error
from tests.console.conftest import (
    Console,
    ConsoleFactory,
    World,
    audit_rows,
    content_kept,
    link_rows,
    login_token,
    now,
    session_rows,
    set_message,
)

WEEK = timedelta(days=7)


@pytest.fixture
async def console(open_console: ConsoleFactory, world: World) -> Console:
    return await open_console()


async def assert_expired(services: Services, world: World, message_id: str) -> None:
    assert await world.state(message_id) == "deleted"
    assert_error(await world.api.get(f"/messages/{message_id}/raw"), 404)
    assert not await content_kept(services, message_id)
    [event] = await audit_rows(services, message_id)
    assert (event.actor, event.action) == (RETENTION_ACTOR, "deleted")
    assert event.detail == "quarantined longer than 7 days"


async def test_expiry_deletes_only_quarantined_mail_older_than_the_retention(
    services: Services, world: World, console: Console
) -> None:
    fresh = await world.send("Fresh", spam=True)
    older = await world.send("Older", spam=True)
    await set_message(services, older, state_changed_at=now() - timedelta(days=2))
    clean = await world.send("Clean")
    await set_message(services, clean, state_changed_at=now() - timedelta(days=30))
    released = await world.send("Released", spam=True)
    assert (await console.post(f"/messages/{released}/release")).status_code == 303
    for message in (fresh, older, clean, released):
        assert await content_kept(services, message)

    # Six days on, only the message quarantined two days earlier is past its week.
    assert await services.messages.expire_quarantine(now=now() + timedelta(days=6)) == 1
    await assert_expired(services, world, older)
    assert await world.state(fresh) == "quarantined"

    # Eight days on, the fresh one goes too; the others were never quarantined long.
    assert await services.messages.expire_quarantine(now=now() + timedelta(days=8)) == 1
    await assert_expired(services, world, fresh)
    for kept in (clean, released):
        assert await world.state(kept) == "queued"
        assert await content_kept(services, kept)
    assert await services.messages.expire_quarantine(now=now() + timedelta(days=8)) == 0

    # The console shows who deleted it.
    page = await console.page(f"/messages/{fresh}")
    assert f"<strong>deleted</strong> by {RETENTION_ACTOR}" in page
    assert "The content of this message is no longer kept." in page
    assert "Nothing in quarantine." in await console.page("/quarantine")


async def test_a_shorter_retention(services: Services, world: World) -> None:
    held = await world.send("Held", spam=True)
    await set_message(services, held, state_changed_at=now() - timedelta(days=1, minutes=1))
    daily = MessageService(services.db, services.messages.contents, timedelta(days=1))
    assert await services.messages.expire_quarantine() == 0
    assert await daily.expire_quarantine() == 1
    assert await world.state(held) == "deleted"
    [event] = await audit_rows(services, held)
    assert event.detail == "quarantined longer than 1 day"


async def test_housekeeping_sweeps_quarantine_and_ended_sessions(
    services: Services, world: World, open_console: ConsoleFactory
) -> None:
    held = await world.send("Held", spam=True)
    young = await world.send("Young", spam=True)
    await set_message(services, held, state_changed_at=now() - WEEK - timedelta(minutes=1))
    await set_message(services, young, state_changed_at=now() - WEEK + timedelta(minutes=5))
    consoles, ids = [], []
    for _ in range(3):  # live, ended, idle
        known = {r.id for r in await session_rows(services)}
        consoles.append(await open_console())
        ids += [r.id for r in await session_rows(services) if r.id not in known]
    live, ended, idle = consoles
    async with services.db.write() as session:
        await session.execute(
            update(ConsoleSession)
            .where(ConsoleSession.id == ids[1])
            .values(expires_at=now() - timedelta(seconds=1))
        )
        await session.execute(
            update(ConsoleSession)
            .where(ConsoleSession.id == ids[2])
            .values(
                last_seen_at=now() - services.console_policy.session_idle - timedelta(seconds=1)
            )
        )

    assert await housekeeping.sweep_once(services) == 1
    assert await world.state(held) == "deleted"
    assert await world.state(young) == "quarantined"
    assert [r.id for r in await session_rows(services)] == [ids[0]]
    assert (await live.get("/messages")).status_code == 200
    for gone in (ended, idle):
        assert (await gone.get("/messages")).status_code == 401
    assert await housekeeping.sweep_once(services) == 0


async def test_the_countdown(services: Services, world: World, console: Console) -> None:
    held = await world.send("Held", spam=True)
    quarantine = await console.page("/quarantine")
    assert "deleted 7 days after it arrived" in quarantine
    assert "deleted in 6 days 23 hours" in quarantine
    assert "deleted in 6 days 23 hours" in await console.page(f"/messages/{held}")

    await set_message(
        services, held, state_changed_at=now() - WEEK + timedelta(hours=11, minutes=30)
    )
    assert "deleted in 11 hours 29 minutes" in await console.page("/quarantine")
    await set_message(
        services, held, state_changed_at=now() - WEEK + timedelta(minutes=10, seconds=30)
    )
    assert "deleted in 10 minutes" in await console.page(f"/messages/{held}")
    await set_message(services, held, state_changed_at=now() - WEEK - timedelta(minutes=1))
    assert "deleted in any moment now" in await console.page("/quarantine")

    # Released mail is no longer counted down.
    assert (await console.post(f"/messages/{held}/release")).status_code == 303
    assert "deleted in" not in await console.page(f"/messages/{held}")


def parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


async def test_the_api_record_says_when_quarantined_mail_is_deleted(world: World) -> None:
    held = await world.send("Held", spam=True)
    clean = await world.send("Clean")
    record = await world.record(held)
    deletes_at = parse(record["deletesAt"])
    assert abs(deletes_at - (parse(record["receivedAt"]) + WEEK)) < timedelta(seconds=5)
    assert deletes_at == parse(record["stateChangedAt"]) + WEEK
    assert (await world.record(clean))["deletesAt"] is None
    quarantine = (await world.api.get("/quarantine")).json()["messages"]
    assert [m["deletesAt"] for m in quarantine] == [record["deletesAt"]]
    log = (await world.api.get("/domains/example.com/messages")).json()["messages"]
    assert {m["id"]: m["deletesAt"] for m in log} == {held: record["deletesAt"], clean: None}

    released = await world.api.post(f"/messages/{held}/release")
    assert released.status_code == 200, released.text
    assert released.json()["deletesAt"] is None
    assert (await world.record(held))["deletesAt"] is None


async def test_housekeeping_forgets_login_links_a_day_after_they_expire(
    services: Services, world: World, anonymous: httpx.AsyncClient
) -> None:
    tokens = [await login_token(world.api) for _ in range(3)]
    by_hash = {r.token_hash: r for r in await link_rows(services)}
    links = [by_hash[services.console_sessions.hasher.hash(t)] for t in tokens]
    ages = [timedelta(hours=-1), timedelta(hours=1), timedelta(days=1, minutes=1)]
    async with services.db.write() as session:
        for link, age in zip(links, ages, strict=True):
            await session.execute(
                update(LoginLink).where(LoginLink.id == link.id).values(expires_at=now() - age)
            )
    await housekeeping.sweep_once(services)
    assert {r.id for r in await link_rows(services)} == {links[0].id, links[1].id}
    fresh, expired, forgotten = tokens
    assert (await anonymous.get(f"/console/login/{fresh}")).status_code == 200
    response = await anonymous.get(f"/console/login/{expired}")
    assert response.status_code == 410 and "has expired" in response.text
    assert (await anonymous.get(f"/console/login/{forgotten}")).status_code == 404
