"""The message page and the quarantine actions, through the console's forms."""

from __future__ import annotations

import html as html_lib

import pytest
from sqlalchemy import insert, select

from mailmoat.db.tables import DeliveryAttempt, Report
from mailmoat.services.container import Services
from tests.api.helpers import assert_error
from tests.console.conftest import (
    DOMAIN,
    Console,
    ConsoleFactory,
    World,
    content_kept,
    now,
)

CONSOLE_ACTOR = f"by {DOMAIN} admin (console session "


def section(page: str, heading: str) -> str:
    """The text of the card under ``<h2>heading</h2>``."""
    start = page.index(f"<h2>{heading}</h2>")
    return page[start : page.index("</section>", start)]


async def domain_list(world: World, name: str) -> list[str]:
    response = await world.api.get(f"/domains/{DOMAIN}/lists/{name}")
    assert response.status_code == 200, response.text
    return [e["item"] for e in response.json()]


async def reports(services: Services) -> list[Report]:
    async with services.db.read() as session:
        return list(await session.scalars(select(Report)))


async def act(console: Console, message_id: str, action: str, **form: str) -> str:
    """Post an action; it must redirect to the message page with its notice."""
    response = await console.post(f"/messages/{message_id}/{action}", form)
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


@pytest.fixture
async def console(open_console: ConsoleFactory, world: World) -> Console:
    return await open_console()


async def test_the_message_page_shows_envelope_headers_verdict_and_delivery(
    world: World, console: Console
) -> None:
    held = await world.send("Cheap watches", spam=True, sender="promo@sender.test")
    record = await world.record(held)
    page = await console.page(f"/messages/{held}")
    assert "<h1>Cheap watches</h1>" in page
    assert "quarantined" in page
    envelope = section(page, "Envelope")
    assert "promo@sender.test" in envelope
    assert f"bob@{DOMAIN}" in envelope
    assert "127.0.0.1" in envelope
    assert html_lib.escape(record["messageId"]) in envelope
    verdict = section(page, "Verdict")
    assert "spam, action quarantine" in verdict
    assert f"{record['score']:.2f}" in verdict
    rule_names = [r["name"] for r in record["rules"]]
    assert "GTUBE" in rule_names
    for name in rule_names:
        assert f'<td class="mono" data-label="Rule">{name}</td>' in verdict
    headers = section(page, "Headers")
    assert '<th class="mono">Subject</th><td class="mono">Cheap watches</td>' in headers
    assert '<th class="mono">From</th>' in headers
    delivery = section(page, "Delivery")
    assert "No delivery attempts." in delivery
    assert "Nobody has acted on this message." in section(page, "History")
    # Quarantined: the page offers the four actions.
    for action in ("release", "safelist", "block", "delete"):
        assert f'action="/console/messages/{held}/{action}"' in page


async def test_the_message_page_lists_delivery_attempts(
    services: Services, world: World, console: Console
) -> None:
    sent = await world.send("Hello")
    async with services.db.write() as session:
        await session.execute(
            insert(DeliveryAttempt).values(
                message_id=sent,
                attempted_at=now(),
                route="smtp",
                target="mx1.example.net.[192.0.2.1]:25",
                outcome="deferred",
                reply="451 4.3.0 try again later",
                recipients=[f"bob@{DOMAIN}"],
            )
        )
    delivery = section(await console.page(f"/messages/{sent}"), "Delivery")
    assert "mx1.example.net.[192.0.2.1]:25" in delivery
    assert "451 4.3.0 try again later" in delivery
    assert "deferred" in delivery
    assert "No delivery attempts." not in delivery


async def test_text_from_the_mail_is_escaped(world: World, console: Console) -> None:
    sent = await world.send('<script>alert("x")</script><img src=x>', spam=True)
    for path in ("/messages", "/quarantine", f"/messages/{sent}"):
        page = await console.page(path)
        assert "<script>" not in page and "<img src=x>" not in page, path
        assert "&lt;script&gt;" in page, path


async def test_release(world: World, console: Console) -> None:
    held = await world.send("Held", spam=True)
    location = await act(console, held, "release")
    assert location == f"/console/messages/{held}?done=released"
    page = await console.page(f"/messages/{held}", done="released")
    assert "Released: the message is on its way" in page
    assert await world.state(held) == "queued"  # no worker runs here
    history = section(page, "History")
    assert "<strong>released</strong>" in history
    assert CONSOLE_ACTOR in history
    assert f'action="/console/messages/{held}/release"' not in page  # no longer offered
    assert held not in await console.page("/quarantine")


async def test_release_from_the_quarantine_page_returns_there(
    world: World, console: Console
) -> None:
    held = await world.send("Held", spam=True)
    location = await act(console, held, "release", back="quarantine")
    assert location == "/console/quarantine?done=released"
    page = await console.page("/quarantine", done="released")
    assert "Released:" in page
    assert "Nothing in quarantine." in page


async def test_safelist_sender(world: World, console: Console) -> None:
    held = await world.send("Held", spam=True, sender="friend@sender.test")
    await act(console, held, "safelist")
    assert await world.state(held) == "queued"
    assert await domain_list(world, "safelist") == ["friend@sender.test"]
    assert await domain_list(world, "blocklist") == []
    lists = await console.page("/lists")
    assert "friend@sender.test" in section(lists, "Safelist")
    history = section(await console.page(f"/messages/{held}"), "History")
    assert "safelisted sender and released" in history and CONSOLE_ACTOR in history
    # The next mail from that sender is not filtered.
    again = await world.send("Again", spam=True, sender="friend@sender.test")
    assert await world.state(again) == "queued"


async def test_block_sender(services: Services, world: World, console: Console) -> None:
    held = await world.send("Held", spam=True, sender="spammer@sender.test")
    assert await content_kept(services, held)
    await act(console, held, "block")
    assert await world.state(held) == "deleted"
    assert_error(await world.api.get(f"/messages/{held}/raw"), 404)
    assert not await content_kept(services, held)
    assert await domain_list(world, "blocklist") == ["spammer@sender.test"]
    assert await domain_list(world, "safelist") == []
    assert "spammer@sender.test" in section(await console.page("/lists"), "Blocklist")
    page = await console.page(f"/messages/{held}", done="blocked")
    assert "Sender added to the blocklist" in page
    assert "The content of this message is no longer kept." in page
    history = section(page, "History")
    assert "blocked sender and deleted" in history and CONSOLE_ACTOR in history


async def test_delete(services: Services, world: World, console: Console) -> None:
    held = await world.send("Held", spam=True, sender="someone@sender.test")
    assert await content_kept(services, held)
    await act(console, held, "delete")
    assert await world.state(held) == "deleted"
    assert_error(await world.api.get(f"/messages/{held}/raw"), 404)
    assert not await content_kept(services, held)
    assert await domain_list(world, "blocklist") == []  # delete alone lists nobody
    page = await console.page(f"/messages/{held}", done="deleted")
    assert "Message deleted." in page
    assert "<strong>deleted</strong>" in section(page, "History")


@pytest.mark.parametrize("first", ["release", "delete"])
async def test_acting_on_a_message_no_longer_quarantined(
    world: World, console: Console, first: str
) -> None:
    held = await world.send("Held", spam=True)
    await act(console, held, first)
    state = await world.state(held)
    lists = (await domain_list(world, "safelist"), await domain_list(world, "blocklist"))
    for then in ("release", "safelist", "block", "delete"):
        response = await console.post(f"/messages/{held}/{then}")
        assert response.status_code == 409, (then, response.text)
        assert "Not possible now" in response.text
    assert await world.state(held) == state
    assert (await domain_list(world, "safelist"), await domain_list(world, "blocklist")) == lists


async def test_actions_on_delivered_mail_are_refused(world: World, console: Console) -> None:
    sent = await world.send("Clean")
    assert await world.state(sent) == "queued"
    for action in ("release", "delete"):
        response = await console.post(f"/messages/{sent}/{action}")
        assert response.status_code == 409, response.text
        assert "Not possible now" in response.text
    assert await world.state(sent) == "queued"


@pytest.mark.parametrize(
    ("action", "report_type", "audit_text", "notice"),
    [
        ("report-spam", "false_negative", "reported as spam", "reported as spam"),
        ("report-ham", "false_positive", "reported as not spam", "reported as not spam"),
    ],
)
async def test_reports(
    services: Services,
    world: World,
    console: Console,
    action: str,
    report_type: str,
    audit_text: str,
    notice: str,
) -> None:
    sent = await world.send("Reported", spam=action == "report-ham")
    before = await world.state(sent)
    location = await act(console, sent, action)
    page = await console.page(location.removeprefix("/console"))
    assert notice in page
    [report] = await reports(services)
    assert (report.report_type, report.message_id) == (report_type, sent)
    assert "Subject: Reported" in report.message_content
    history = section(page, "History")
    assert f"<strong>{audit_text}</strong>" in history and CONSOLE_ACTOR in history
    assert await world.state(sent) == before  # a report does not release or delete


async def test_a_report_on_a_deleted_message_is_refused(
    services: Services, world: World, console: Console
) -> None:
    held = await world.send("Held", spam=True)
    await act(console, held, "delete")
    response = await console.post(f"/messages/{held}/report-spam")
    assert response.status_code == 404, response.text
    assert "not kept" in response.text
    assert await reports(services) == []


@pytest.mark.parametrize("action", ["forward", "release-all", "RELEASE"])
async def test_unknown_actions(world: World, console: Console, action: str) -> None:
    held = await world.send("Held", spam=True)
    response = await console.post(f"/messages/{held}/{action}")
    assert response.status_code in (400, 404, 405), response.text
    assert await world.state(held) == "quarantined"


async def test_the_quarantine_page(world: World, console: Console) -> None:
    held = await world.send("Held one", spam=True, sender="promo@sender.test")
    await world.send("Fine one")
    page = await console.page("/quarantine")
    assert "1 message held" in page
    assert "Held one" in page and "Fine one" not in page
    assert "promo@sender.test" in page
    assert "spam-score (score" in page
    for action in ("release", "safelist", "block", "delete"):
        assert f'action="/console/messages/{held}/{action}"' in page
    assert '<input type="hidden" name="back" value="quarantine">' in page
