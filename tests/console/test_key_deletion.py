"""Deleting an API key takes back what it issued: its unused login links stop working
and the console sessions started from its links end at once. What other keys issued
is untouched, and so is everything when the deletion is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from mailmoat.cli import app as cli_app
from mailmoat.services.container import Services
from tests.api.helpers import assert_error, listed, provision, provision_names
from tests.conftest import Tenant, api_client
from tests.console.conftest import Console, link_rows, login_token, session_rows, sign_in

DOMAIN = "keys.example"


@dataclass
class Key:
    id: str
    client: httpx.AsyncClient


@pytest.fixture
async def keys(tenant: Tenant, web_app: FastAPI) -> AsyncIterator[tuple[Key, Key]]:
    """Key A (the tenant's) and key B, made by key A through the API."""
    [a] = (await tenant.client.get("/api-keys")).json()
    created = (await tenant.client.post("/api-keys", json={"description": "key B"})).json()
    async with api_client(web_app, created["apiKey"]) as b_client:
        yield Key(a["id"], tenant.client), Key(created["id"], b_client)


@pytest.fixture
async def consoles() -> AsyncIterator[list[Console]]:
    opened: list[Console] = []
    yield opened
    for console in opened:
        await console.http.aclose()


async def signed_in(
    web_app: FastAPI, key: Key, consoles: list[Console], domain: str = DOMAIN
) -> Console:
    console = await sign_in(web_app, await login_token(key.client, domain), domain)
    consoles.append(console)
    return console


async def assert_working(console: Console) -> None:
    response = await console.get("/messages")
    assert response.status_code == 200, response.text
    assert console.domain in response.text


async def assert_ended(console: Console) -> None:
    response = await console.get("/messages")
    assert response.status_code == 401, response.text
    assert console.domain not in response.text


async def assert_link_unknown(anonymous: httpx.AsyncClient, token: str) -> None:
    for method in ("GET", "POST"):
        response = await anonymous.request(method, f"/console/login/{token}")
        assert response.status_code == 404, response.text
        assert "This login link is not valid" in response.text
        assert "set-cookie" not in response.headers


async def test_deleting_a_key_ends_its_sessions_and_deletes_its_unused_links(
    services: Services,
    tenant: Tenant,
    keys: tuple[Key, Key],
    web_app: FastAPI,
    consoles: list[Console],
    anonymous: httpx.AsyncClient,
) -> None:
    a, b = keys
    await provision_names(a.client, tenant.subscription, DOMAIN)
    a_console = await signed_in(web_app, a, consoles)
    a_unused = await login_token(a.client, DOMAIN)
    b_console = await signed_in(web_app, b, consoles)
    b_unused = await login_token(b.client, DOMAIN)
    await assert_working(a_console)

    deleted = await b.client.delete(f"/api-keys/{a.id}")
    assert deleted.status_code == 204, deleted.text

    await assert_ended(a_console)
    await assert_link_unknown(anonymous, a_unused)
    # Key B's session and link are untouched.
    await assert_working(b_console)
    consoles.append(await sign_in(web_app, b_unused, DOMAIN))
    assert {row.api_key_id for row in await session_rows(services)} == {b.id}
    # A used link of key A stays, so that a late click learns it was used.
    assert {(row.api_key_id, row.used_at is None) for row in await link_rows(services)} == {
        (a.id, False),
        (b.id, False),
    }


async def test_a_refused_deletion_changes_nothing(
    tenant: Tenant,
    keys: tuple[Key, Key],
    web_app: FastAPI,
    consoles: list[Console],
) -> None:
    a, b = keys
    await provision(a.client, DOMAIN, tenant.subscription, params={"associate-key": "true"})
    a_console = await signed_in(web_app, a, consoles)
    a_unused = await login_token(a.client, DOMAIN)

    assert_error(await b.client.delete(f"/api-keys/{a.id}"), 403)

    await assert_working(a_console)
    consoles.append(await sign_in(web_app, a_unused, DOMAIN))
    assert await listed(a.client) == ([DOMAIN], 1)


async def test_a_key_deleting_itself_ends_its_own_sessions(
    tenant: Tenant,
    keys: tuple[Key, Key],
    web_app: FastAPI,
    consoles: list[Console],
) -> None:
    a, b = keys
    await provision(a.client, DOMAIN, tenant.subscription, params={"associate-key": "true"})
    a_console = await signed_in(web_app, a, consoles)
    deleted = await a.client.delete(f"/api-keys/{a.id}")
    assert deleted.status_code == 204, deleted.text
    await assert_ended(a_console)
    # The domain is open to key B now, and B's links work.
    await assert_working(await signed_in(web_app, b, consoles))


async def test_the_command_line_deletes_any_key_and_says_what_it_released(
    services: Services,
    tenant: Tenant,
    keys: tuple[Key, Key],
    web_app: FastAPI,
    consoles: list[Console],
    anonymous: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    a, b = keys
    for name in (DOMAIN, "also.example"):
        await provision(a.client, name, tenant.subscription, params={"associate-key": "true"})
    await provision_names(b.client, tenant.subscription, "b.example")
    a_console = await signed_in(web_app, a, consoles)
    a_unused = await login_token(a.client, "also.example")
    b_console = await signed_in(web_app, b, consoles, "b.example")

    url = services.db.url.render_as_string(hide_password=False)
    args = ["keys", "delete", a.id, "--data-dir", str(tmp_path / "var"), "--database-url", url]
    result = await asyncio.to_thread(CliRunner().invoke, cli_app, args)

    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"deleted API key {a.id}",
        f"released domain associations: also.example, {DOMAIN}",
        "deleted 1 unused login link(s), ended 1 console session(s)",
    ]
    await assert_ended(a_console)
    await assert_link_unknown(anonymous, a_unused)
    await assert_working(b_console)
    assert await listed(b.client) == (["also.example", "b.example", DOMAIN], 3)
