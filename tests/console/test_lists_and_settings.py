"""Safelists and blocklists of the domain and of its users; the domain's settings."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mailmoat.services.container import Services
from tests.api.helpers import DEFAULT_SETTINGS, add_user, provision
from tests.console.conftest import (
    DOMAIN,
    Console,
    ConsoleFactory,
    World,
    audit_rows,
)

KEYED = "keyed.example"
CONSOLE_ACTOR = f"{DOMAIN} admin (console session "


@pytest.fixture
async def console(open_console: ConsoleFactory, world: World) -> Console:
    return await open_console()


async def api_list(api: httpx.AsyncClient, path: str) -> list[str]:
    response = await api.get(path)
    assert response.status_code == 200, response.text
    return [e["item"] for e in response.json()]


def card(page: str, list_id: str) -> str:
    start = page.index(f'id="{list_id}"')
    return page[start : page.index("</section>", start)]


async def change(console: Console, how: str, expect: int = 303, **form: str) -> httpx.Response:
    response = await console.post(f"/lists/{how}", form)
    assert response.status_code == expect, response.text
    return response


# -- domain lists ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entered", "stored", "item_type"),
    [
        ("Spammer@Bad.Example", "spammer@bad.example", "email_address"),
        ("bad.example", "bad.example", "domain"),
        ("198.51.100.0/24", "198.51.100.0/24", "ip_address"),
    ],
)
async def test_add_and_remove_on_the_domains_blocklist(
    services: Services, world: World, console: Console, entered: str, stored: str, item_type: str
) -> None:
    path = f"/domains/{DOMAIN}/lists/blocklist"
    response = await change(console, "add", list="blocklist", item=entered)
    assert response.headers["location"] == "/console/lists?user=&done=added"
    assert await api_list(world.api, path) == [stored]
    assert await api_list(world.api, f"/domains/{DOMAIN}/lists/safelist") == []
    page = await console.page("/lists", done="added")
    assert "Added to the list." in page
    assert stored in card(page, "blocklist") and item_type in card(page, "blocklist")
    assert stored not in card(page, "safelist")

    response = await change(console, "remove", list="blocklist", item=stored)
    assert response.headers["location"] == "/console/lists?user=&done=removed"
    assert await api_list(world.api, path) == []
    page = await console.page("/lists", done="removed")
    assert "Removed from the list." in page and stored not in card(page, "blocklist")

    events = [(e.action, e.detail, e.actor) for e in await audit_rows(services)]
    assert ("added to blocklist", stored) in [(a, d) for a, d, _ in events]
    assert ("removed from blocklist", stored) in [(a, d) for a, d, _ in events]
    assert all(actor.startswith(CONSOLE_ACTOR) for a, _, actor in events if "list" in a)
    activity = await console.page("/activity")
    assert "added to blocklist" in activity and "removed from blocklist" in activity


async def test_the_safelist_is_a_separate_list(world: World, console: Console) -> None:
    await change(console, "add", list="safelist", item="friend.example")
    assert await api_list(world.api, f"/domains/{DOMAIN}/lists/safelist") == ["friend.example"]
    assert await api_list(world.api, f"/domains/{DOMAIN}/lists/blocklist") == []
    # Removing from the other list changes nothing.
    await change(console, "remove", list="blocklist", item="friend.example")
    assert await api_list(world.api, f"/domains/{DOMAIN}/lists/safelist") == ["friend.example"]


async def test_the_lists_page_shows_entries_made_through_the_api(
    world: World, console: Console
) -> None:
    response = await world.api.post(
        f"/domains/{DOMAIN}/lists/safelist", json={"item": "partner.example"}
    )
    assert response.status_code == 201, response.text
    assert "partner.example" in card(await console.page("/lists"), "safelist")


@pytest.mark.parametrize(
    ("form", "reason"),
    [
        ({"list": "blocklist", "item": "not an address!"}, "is not a valid"),
        ({"list": "blocklist", "item": "   "}, "empty"),
        ({"list": "blocklist", "item": "a@b@c"}, ""),
        ({"list": "greylist", "item": "bad.example"}, "list must be safelist or blocklist"),
    ],
)
async def test_invalid_items_are_refused_with_the_reason(
    services: Services, world: World, console: Console, form: dict[str, str], reason: str
) -> None:
    before = len(await audit_rows(services))
    response = await change(console, "add", expect=400, **form)
    assert "That did not work" in response.text
    assert reason in response.text
    for name in ("safelist", "blocklist"):
        assert await api_list(world.api, f"/domains/{DOMAIN}/lists/{name}") == []
    assert len(await audit_rows(services)) == before


async def test_an_unknown_list_change_is_refused(world: World, console: Console) -> None:
    response = await change(console, "replace", expect=400, list="blocklist", item="x.example")
    assert "unknown change" in response.text
    assert await api_list(world.api, f"/domains/{DOMAIN}/lists/blocklist") == []


# -- users' lists ------------------------------------------------------------------------------


async def test_a_users_lists(services: Services, world: World, console: Console) -> None:
    await world.send("Hello", to=f"bob@{DOMAIN}")  # bob exists once mail arrived for him
    await add_user(world.api, f"carol@{DOMAIN}")  # carol through the API
    page = await console.page("/lists")
    assert f'<option value="bob@{DOMAIN}"' in page and f'<option value="carol@{DOMAIN}"' in page

    await change(console, "add", list="safelist", item="friend@sender.test", user=f"bob@{DOMAIN}")
    await change(console, "add", list="blocklist", item="foe.example", user=f"carol@{DOMAIN}")
    assert await api_list(world.api, f"/users/bob@{DOMAIN}/lists/safelist") == [
        "friend@sender.test"
    ]
    assert await api_list(world.api, f"/users/carol@{DOMAIN}/lists/blocklist") == ["foe.example"]
    assert await api_list(world.api, f"/users/bob@{DOMAIN}/lists/blocklist") == []
    assert await api_list(world.api, f"/domains/{DOMAIN}/lists/safelist") == []

    bob = await console.page("/lists", user=f"bob@{DOMAIN}")
    assert f"Lists of bob@{DOMAIN}" in bob
    assert "friend@sender.test" in card(bob, "safelist")
    assert "foe.example" not in bob
    assert f'name="user" value="bob@{DOMAIN}"' in bob  # forms post to bob's lists
    domain_page = await console.page("/lists")
    assert "friend@sender.test" not in domain_page and "foe.example" not in domain_page

    response = await change(
        console, "remove", list="safelist", item="friend@sender.test", user=f"bob@{DOMAIN}"
    )
    assert "user=bob%40example.com" in response.headers["location"]
    assert await api_list(world.api, f"/users/bob@{DOMAIN}/lists/safelist") == []
    actions = [e.action for e in await audit_rows(services)]
    assert f"added to safelist of bob@{DOMAIN}" in actions
    assert f"removed from safelist of bob@{DOMAIN}" in actions
    assert f"added to blocklist of carol@{DOMAIN}" in actions


@pytest.mark.parametrize(
    ("user", "status"),
    [(f"nobody@{DOMAIN}", 404), ("not-an-address", 400)],
)
async def test_lists_of_an_unknown_user(
    world: World, console: Console, user: str, status: int
) -> None:
    response = await console.get("/lists", params={"user": user})
    assert response.status_code == status, response.text
    await change(console, "add", expect=status, list="safelist", item="x.example", user=user)
    assert await api_list(world.api, f"/domains/{DOMAIN}/lists/safelist") == []


# -- settings ---------------------------------------------------------------------------------


async def domain(api: httpx.AsyncClient, name: str = DOMAIN) -> dict[str, Any]:
    response = await api.get(f"/domains/{name}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_settings_page_shows_the_current_settings(world: World, console: Console) -> None:
    page = await console.page("/settings")
    assert f"Settings of {DOMAIN}" in page
    assert '<option value="quarantine" selected>' in page
    assert 'value="X-Spam-Flag"' in page
    assert "disabled" not in page


async def test_change_abuse_policy_and_spam_header(
    services: Services, world: World, console: Console
) -> None:
    form = {"abuse_policy": "flag", "spam_header_name": "X-Junk", "spam_header_value": "certainly"}
    response = await console.post("/settings", form)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console/settings?done=saved"
    settings = (await domain(world.api))["settings"]
    assert settings == {
        **DEFAULT_SETTINGS,
        "abusePolicy": "flag",
        "spamHeaderName": "X-Junk",
        "spamHeaderValue": "certainly",
    }
    page = await console.page("/settings", done="saved")
    assert "Settings saved." in page
    assert '<option value="flag" selected>' in page and 'value="X-Junk"' in page
    [event] = [e for e in await audit_rows(services) if e.action == "changed domain settings"]
    assert event.actor.startswith(CONSOLE_ACTOR) and "settings" in event.detail
    # The gateway applies it: spam is now delivered with the new header.
    sent = await world.send("Spam", spam=True)
    assert await world.state(sent) == "queued"
    raw = (await world.api.get(f"/messages/{sent}/raw")).content
    assert b"\r\nX-Junk: certainly\r\n" in raw


@pytest.mark.parametrize(
    "form",
    [
        {"abuse_policy": "sometimes", "spam_header_name": "X-Spam", "spam_header_value": "y"},
        {"abuse_policy": "block", "spam_header_name": "Bad Header:", "spam_header_value": "y"},
        {"abuse_policy": "block", "spam_header_name": "X-Spam", "spam_header_value": "a\r\nb"},
        {"abuse_policy": "block", "spam_header_name": "X-Spam"},
    ],
)
async def test_invalid_settings_are_refused(
    world: World, console: Console, form: dict[str, str]
) -> None:
    before = await domain(world.api)
    response = await console.post("/settings", form)
    assert response.status_code == 400, response.text
    assert "That did not work" in response.text
    assert await domain(world.api) == before


async def test_save_downstream_servers(services: Services, world: World, console: Console) -> None:
    form = {
        "target_0": "mx1.example.net",
        "port_0": "25",
        "priority_0": "10",
        "weight_0": "40",
        "target_1": "192.0.2.7",
        "port_1": "2525",
        "priority_1": "20",
        "weight_1": "0",
        "target_2": "",  # an empty row is left out
        "port_2": "25",
    }
    response = await console.post("/settings/downstreams", form)
    assert response.status_code == 303, response.text
    response = await world.api.get(f"/domains/{DOMAIN}/downstream-address")
    assert response.status_code == 200, response.text
    records = response.json()["records"]
    assert [(r["target"].rstrip("."), r["port"], r["priority"], r["weight"]) for r in records] == [
        ("mx1.example.net", 25, 10, 40),
        ("192.0.2.7", 2525, 20, 0),
    ]
    page = await console.page("/settings")
    assert "mx1.example.net" in page and 'value="2525"' in page
    assert "changed domain settings" in [e.action for e in await audit_rows(services)]

    # Emptying a row removes that server.
    response = await console.post("/settings/downstreams", {**form, "target_0": ""})
    assert response.status_code == 303, response.text
    records = (await world.api.get(f"/domains/{DOMAIN}/downstream-address")).json()["records"]
    assert [r["port"] for r in records] == [2525]


@pytest.mark.parametrize(
    "form",
    [
        {"target_0": "mx1.example.net", "port_0": "twenty-five"},
        {"target_0": "mx1.example.net", "port_0": "99999"},
        {"target_0": "not a host name!", "port_0": "25"},
    ],
)
async def test_invalid_downstream_rows_are_refused(
    world: World, console: Console, form: dict[str, str]
) -> None:
    before = await domain(world.api)
    response = await console.post("/settings/downstreams", form)
    assert response.status_code == 400, response.text
    assert "That did not work" in response.text
    assert await domain(world.api) == before


async def test_a_domain_tied_to_an_api_key_has_read_only_settings(
    services: Services, world: World, open_console: ConsoleFactory
) -> None:
    await provision(world.api, KEYED, world.tenant.subscription, params={"associate-key": "true"})
    console = await open_console(KEYED)
    page = await console.page("/settings")
    assert "Your provider manages these settings through its API" in page
    assert page.count("<fieldset disabled>") == 2
    before = await domain(world.api, KEYED)
    response = await console.post(
        "/settings",
        {"abuse_policy": "block", "spam_header_name": "X-Junk", "spam_header_value": "y"},
    )
    assert response.status_code == 403, response.text
    assert "Not allowed" in response.text and "API key" in response.text
    response = await console.post(
        "/settings/downstreams", {"target_0": "mx1.example.net", "port_0": "25"}
    )
    assert response.status_code == 403, response.text
    assert await domain(world.api, KEYED) == before
    assert "changed domain settings" not in [e.action for e in await audit_rows(services)]
    # Lists are not settings: the admin still manages them.
    response = await console.post("/lists/add", {"list": "blocklist", "item": "foe.example"})
    assert response.status_code == 303, response.text
    assert await api_list(world.api, f"/domains/{KEYED}/lists/blocklist") == ["foe.example"]
