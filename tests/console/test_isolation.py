"""A console session sees and changes its own domain only.

example.com and b.example belong to the same customer; other.example to another.
"""

from __future__ import annotations

import pytest

from tests.api.helpers import add_user
from tests.console.conftest import (
    B_DOMAIN,
    DOMAIN,
    OTHER_DOMAIN,
    Console,
    ConsoleFactory,
    World,
)


@pytest.fixture
async def mail(world: World) -> dict[str, str]:
    """A quarantined message in each domain, and a clean one in example.com."""
    return {
        "a": await world.send("Subject for A", spam=True, to=f"bob@{DOMAIN}"),
        "a-clean": await world.send("Clean for A", to=f"bob@{DOMAIN}"),
        "b": await world.send("Subject for B", spam=True, to=f"carol@{B_DOMAIN}"),
        "other": await world.send("Subject for other", spam=True, to=f"dave@{OTHER_DOMAIN}"),
    }


@pytest.fixture
async def console(open_console: ConsoleFactory, world: World) -> Console:
    return await open_console(DOMAIN)


FOREIGN = ["b", "other"]


async def test_the_log_and_quarantine_show_only_the_domains_mail(
    console: Console, mail: dict[str, str]
) -> None:
    log = await console.page("/messages")
    assert "2 messages" in log
    assert "Subject for A" in log and "Clean for A" in log
    quarantine = await console.page("/quarantine")
    assert "1 message held" in quarantine and "Subject for A" in quarantine
    for page in (log, quarantine):
        for foreign in FOREIGN:
            assert mail[foreign] not in page
        assert "Subject for B" not in page and "Subject for other" not in page
    # Filters cannot reach outside the domain either.
    for params in ({"recipient": f"carol@{B_DOMAIN}"}, {"subject": "Subject for"}):
        page = await console.page("/messages", **params)
        assert "Subject for B" not in page and "Subject for other" not in page


@pytest.mark.parametrize("foreign", FOREIGN)
async def test_another_domains_message_page_is_not_found(
    console: Console, mail: dict[str, str], foreign: str
) -> None:
    response = await console.get(f"/messages/{mail[foreign]}")
    assert response.status_code == 404, response.text
    assert "Not found" in response.text
    assert "Subject for" not in response.text
    assert "@sender.test" not in response.text


ACTIONS = ["release", "safelist", "block", "delete", "report-spam", "report-ham"]


@pytest.mark.parametrize("foreign", FOREIGN)
async def test_another_domains_message_cannot_be_acted_on(
    world: World, console: Console, mail: dict[str, str], foreign: str
) -> None:
    for action in ACTIONS:
        response = await console.post(f"/messages/{mail[foreign]}/{action}")
        assert response.status_code == 404, (action, response.text)
        assert "Subject for" not in response.text
    api = world.other.client if foreign == "other" else world.api
    assert await world.state(mail[foreign], api) == "quarantined"
    domain = OTHER_DOMAIN if foreign == "other" else B_DOMAIN
    for name in ("safelist", "blocklist"):
        for listed in (DOMAIN, domain):
            client = world.other.client if listed == OTHER_DOMAIN else world.api
            entries = (await client.get(f"/domains/{listed}/lists/{name}")).json()
            assert entries == [], (listed, name, entries)
    activity = await console.page("/activity")
    assert "reported" not in activity and "released" not in activity


async def test_another_domains_users_and_lists_are_out_of_reach(
    world: World, console: Console, mail: dict[str, str]
) -> None:
    await add_user(world.api, f"erin@{B_DOMAIN}")
    lists = await console.page("/lists")
    assert f"carol@{B_DOMAIN}" not in lists and f"erin@{B_DOMAIN}" not in lists
    assert f"bob@{DOMAIN}" in lists  # the domain's own user, there since mail arrived
    for user in (f"carol@{B_DOMAIN}", f"erin@{B_DOMAIN}", f"dave@{OTHER_DOMAIN}"):
        response = await console.get("/lists", params={"user": user})
        assert response.status_code == 404, (user, response.text)
        for change in ("add", "remove"):
            response = await console.post(
                f"/lists/{change}", {"list": "blocklist", "item": "x@bad.example", "user": user}
            )
            assert response.status_code == 404, (user, response.text)
    for user in (f"carol@{B_DOMAIN}", f"erin@{B_DOMAIN}"):
        entries = (await world.api.get(f"/users/{user}/lists/blocklist")).json()
        assert entries == [], entries
    entries = (await world.other.client.get(f"/users/dave@{OTHER_DOMAIN}/lists/blocklist")).json()
    assert entries == []


async def test_activity_shows_only_the_domains_events(
    world: World, open_console: ConsoleFactory, console: Console, mail: dict[str, str]
) -> None:
    b_console = await open_console(B_DOMAIN)
    other_console = await open_console(OTHER_DOMAIN, api=world.other.client)
    response = await b_console.post(f"/messages/{mail['b']}/release")
    assert response.status_code == 303
    response = await b_console.post("/lists/add", {"list": "safelist", "item": "b-friend.example"})
    assert response.status_code == 303
    response = await other_console.post(f"/messages/{mail['other']}/delete")
    assert response.status_code == 303
    response = await console.post("/lists/add", {"list": "blocklist", "item": "a-foe.example"})
    assert response.status_code == 303

    activity = await console.page("/activity")
    assert "a-foe.example" in activity
    assert f"{DOMAIN} admin (console session" in activity
    assert "b-friend.example" not in activity
    assert "<strong>released</strong>" not in activity
    assert "<strong>deleted</strong>" not in activity
    assert B_DOMAIN not in activity and OTHER_DOMAIN not in activity
    b_activity = await b_console.page("/activity")
    assert "b-friend.example" in b_activity and "<strong>released</strong>" in b_activity
    assert "a-foe.example" not in b_activity
    assert f"{DOMAIN} admin" not in b_activity


async def test_the_session_is_bound_to_the_links_domain(
    world: World, open_console: ConsoleFactory, mail: dict[str, str]
) -> None:
    b_console = await open_console(B_DOMAIN)
    log = await b_console.page("/messages")
    assert f"Messages for {B_DOMAIN}" in log
    assert "Subject for B" in log and "Subject for A" not in log
    response = await b_console.get(f"/messages/{mail['a']}")
    assert response.status_code == 404
    settings = await b_console.page("/settings")
    assert f"Settings of {B_DOMAIN}" in settings
