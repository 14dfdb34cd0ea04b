"""Every state-changing form post needs the session's CSRF token; without it nothing changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from mailmoat.db.tables import Report
from mailmoat.services.container import Services
from tests.console.conftest import (
    B_DOMAIN,
    COOKIE,
    DOMAIN,
    Console,
    ConsoleFactory,
    World,
    session_rows,
)

FORM_EXPIRED = "This form has expired"

Snapshot = Callable[[], Awaitable[Any]]


@dataclass
class Case:
    path: str
    data: dict[str, str]
    snapshot: Snapshot  # what the post would change


async def domain_settings(world: World) -> Any:
    response = await world.api.get(f"/domains/{DOMAIN}")
    assert response.status_code == 200, response.text
    body = response.json()
    return body["settings"], body["downstreamAddresses"]


async def domain_list(world: World, name: str) -> list[str]:
    response = await world.api.get(f"/domains/{DOMAIN}/lists/{name}")
    assert response.status_code == 200, response.text
    return sorted(e["item"] for e in response.json())


async def report_count(services: Services) -> int:
    async with services.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Report)) or 0)


async def make_case(action: str, services: Services, world: World) -> Case:
    if action in ("release", "delete", "safelist", "block", "report-spam", "report-ham"):
        held = await world.send("Held", spam=True)

        async def message_snapshot() -> Any:
            record = await world.record(held)
            return (
                record["state"],
                await domain_list(world, "safelist"),
                await domain_list(world, "blocklist"),
                await report_count(services),
            )

        return Case(f"/messages/{held}/{action}", {}, message_snapshot)
    if action in ("lists/add", "lists/remove"):
        added = await world.api.post(
            f"/domains/{DOMAIN}/lists/blocklist", json={"item": "spam@bad.example"}
        )
        assert added.status_code == 201, added.text
        item = "new@bad.example" if action == "lists/add" else "spam@bad.example"

        async def list_snapshot() -> Any:
            return await domain_list(world, "blocklist")

        return Case(f"/{action}", {"list": "blocklist", "item": item}, list_snapshot)
    if action == "settings":
        data = {
            "abuse_policy": "block",
            "spam_header_name": "X-Junk",
            "spam_header_value": "yes",
        }
        return Case("/settings", data, lambda: domain_settings(world))
    if action == "settings/downstreams":
        data = {"target_0": "mx.example.net", "port_0": "25", "priority_0": "10", "weight_0": "1"}
        return Case("/settings/downstreams", data, lambda: domain_settings(world))
    assert action == "logout"

    async def sessions_snapshot() -> Any:
        return len(await session_rows(services))

    return Case("/logout", {}, sessions_snapshot)


ACTIONS = [
    "release",
    "delete",
    "safelist",
    "block",
    "report-spam",
    "report-ham",
    "lists/add",
    "lists/remove",
    "settings",
    "settings/downstreams",
    "logout",
]


def assert_form_expired(response: httpx.Response) -> None:
    assert response.status_code == 403, (response.status_code, response.text)
    assert FORM_EXPIRED in response.text


async def refused_posts(
    console: Console, case: Case, same_domain: Console, other_domain: Console
) -> list[httpx.Response]:
    return [
        await console.post(case.path, case.data, csrf="0" * 40),
        await console.post(case.path, case.data, csrf=console.csrf[:-1]),
        await console.post(case.path, case.data, csrf=console.csrf + "0"),
        await console.post(case.path, case.data, csrf=same_domain.csrf),  # another session's
        await console.post(case.path, case.data, csrf=other_domain.csrf),
    ]


@pytest.mark.parametrize("action", ACTIONS)
async def test_a_post_with_a_wrong_token_changes_nothing(
    services: Services, world: World, open_console: ConsoleFactory, action: str
) -> None:
    console = await open_console()
    same_domain = await open_console()
    other_domain = await open_console(B_DOMAIN)
    case = await make_case(action, services, world)
    before = await case.snapshot()
    for response in await refused_posts(console, case, same_domain, other_domain):
        assert_form_expired(response)
    # Without the field, or with it empty, the post is refused too (see the next test
    # for how).
    for response in (
        await console.post_without_csrf(case.path, case.data),
        await console.post(case.path, case.data, csrf=""),
    ):
        assert response.status_code in (400, 403), response.text
    assert await case.snapshot() == before
    # The same post with the session's own token does change it: the form was right.
    done = await console.post(case.path, case.data)
    assert done.status_code in (200, 303), done.text
    assert await case.snapshot() != before


@pytest.mark.parametrize("action", ACTIONS)
async def test_a_post_without_the_token_field_says_the_form_expired(
    services: Services, world: World, open_console: ConsoleFactory, action: str
) -> None:
    console = await open_console()
    case = await make_case(action, services, world)
    before = await case.snapshot()
    missing = await console.post_without_csrf(case.path, case.data)
    empty = await console.post(case.path, case.data, csrf="")
    assert await case.snapshot() == before
    assert_form_expired(missing)
    assert_form_expired(empty)


@pytest.mark.parametrize("action", ["release", "settings"])
async def test_a_token_with_non_ascii_characters(
    services: Services,
    world: World,
    open_console: ConsoleFactory,
    web_app: FastAPI,
    action: str,
) -> None:
    console = await open_console()
    case = await make_case(action, services, world)
    before = await case.snapshot()
    transport = httpx.ASGITransport(app=web_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", cookies={COOKIE: console.cookie}
    ) as browser:
        response = await browser.post(
            f"/console{case.path}", data={"csrf": "\u00e9" + console.csrf[1:], **case.data}
        )
    assert await case.snapshot() == before
    assert_form_expired(response)
