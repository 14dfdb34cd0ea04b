"""The message log: filters by state, sender, recipient, subject and date, and paging."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select

import mailmoat.console.app as console_app
import mailmoat.services.console as console_service
from mailmoat.db.tables import Message
from mailmoat.services.container import Services
from tests.console.conftest import COOKIE, DOMAIN, Console, ConsoleFactory, World, set_message

_ROW_SUBJECT = re.compile(
    r'<td data-label="Subject"><a href="/console/messages/[0-9a-f]+">([^<]*)</a>'
)


def subjects(page: str) -> list[str]:
    """The subjects in the log's table, top to bottom."""
    return _ROW_SUBJECT.findall(page)


@pytest.fixture
async def console(open_console: ConsoleFactory, world: World) -> Console:
    return await open_console()


@pytest.fixture
async def log(world: World) -> dict[str, str]:
    """Four messages, oldest first: two clean, one quarantined, one for another user."""
    return {
        "lunch": await world.send("Lunch on Friday", sender="alice@sender.test"),
        "report": await world.send("Quarterly REPORT", sender="Bob.Smith@Partner.test"),
        "spam": await world.send("Cheap pills", spam=True, sender="promo@spam.test"),
        "carol": await world.send("For carol", to=f"carol@{DOMAIN}", sender="dave@sender.test"),
    }


async def test_the_log_lists_newest_first(console: Console, log: dict[str, str]) -> None:
    page = await console.page("/messages")
    assert subjects(page) == ["For carol", "Cheap pills", "Quarterly REPORT", "Lunch on Friday"]
    assert "4 messages" in page


FILTERS: list[tuple[dict[str, str], list[str]]] = [
    ({"state": "quarantined"}, ["Cheap pills"]),
    ({"state": "queued"}, ["For carol", "Quarterly REPORT", "Lunch on Friday"]),
    ({"state": "delivered"}, []),
    ({"sender": "alice@sender.test"}, ["Lunch on Friday"]),
    ({"sender": "BOB.SMITH@partner.TEST"}, ["Quarterly REPORT"]),
    ({"sender": "sender.test"}, []),  # the whole address, not a part
    ({"recipient": f"carol@{DOMAIN}"}, ["For carol"]),
    ({"recipient": f"CAROL@{DOMAIN.upper()}"}, ["For carol"]),
    ({"subject": "report"}, ["Quarterly REPORT"]),
    ({"subject": "  LUNCH "}, ["Lunch on Friday"]),
    ({"subject": "o"}, ["For carol", "Quarterly REPORT", "Lunch on Friday"]),
    ({"subject": "nothing like it"}, []),
    (
        {"state": "queued", "sender": "alice@sender.test", "subject": "lunch"},
        ["Lunch on Friday"],
    ),
    ({"state": "quarantined", "subject": "lunch"}, []),
]


async def test_filters(console: Console, log: dict[str, str]) -> None:
    for params, expected in FILTERS:
        page = await console.page("/messages", **params)
        assert subjects(page) == expected, params
        if not expected:
            assert "No messages match." in page, params
        for name, value in params.items():  # the form keeps what was asked
            if name != "state":
                assert f'name="{name}" type="text" value="{value}"' in page, params
            elif value in console_app.LOG_STATES:
                assert f'<option value="{value}" selected>' in page, params


async def test_the_state_filter_offers_every_state_shown_in_the_log(
    world: World, console: Console
) -> None:
    held = await world.send("Held", spam=True)
    await world.send("Clean")
    assert (await console.post(f"/messages/{held}/delete")).status_code == 303
    page = await console.page("/messages")
    shown = set(re.findall(r'<span class="badge state-(\w+)">', page))
    assert shown == {"queued", "deleted"}
    for state in shown:
        assert f'<option value="{state}"' in page, state


async def test_subject_filter_takes_wildcards_literally(world: World, console: Console) -> None:
    for subject in ("100% off", "1000 off", "a_b", "axb"):
        await world.send(subject)
    assert subjects(await console.page("/messages", subject="100%")) == ["100% off"]
    assert subjects(await console.page("/messages", subject="a_b")) == ["a_b"]


async def test_date_range(services: Services, world: World, console: Console) -> None:
    moments = {
        "tenth noon": datetime(2026, 1, 10, 12, 0, tzinfo=UTC),
        "eleventh late": datetime(2026, 1, 11, 23, 59, 30, tzinfo=UTC),
        "twelfth midnight": datetime(2026, 1, 12, 0, 0, 0, tzinfo=UTC),
    }
    for subject, moment in moments.items():
        sent = await world.send(subject)
        await set_message(services, sent, received_at=moment)

    async def shown(**params: str) -> list[str]:
        return subjects(await console.page("/messages", **params))

    assert await shown(since="2026-01-11", until="2026-01-11") == ["eleventh late"]
    assert await shown(since="2026-01-11") == ["twelfth midnight", "eleventh late"]
    assert await shown(until="2026-01-10") == ["tenth noon"]
    assert await shown(until="2026-01-11") == ["eleventh late", "tenth noon"]
    assert await shown(since="2026-01-12", until="2026-01-12") == ["twelfth midnight"]
    assert await shown(since="2026-01-13") == []
    assert await shown(since="2026-01-12", until="2026-01-10") == []


BAD_FILTERS: list[dict[str, str]] = [
    {"since": "11/01/2026"},
    {"until": "yesterday"},
    {"since": "2026-13-01"},
    {"state": "lost"},
    {"recipient": "not an address"},
    {"page": "0"},
    {"page": "two"},
]


async def test_bad_filters_are_refused(world: World, console: Console) -> None:
    await world.send("Lunch on Friday")
    for params in BAD_FILTERS:
        response = await console.get("/messages", params=params)
        assert response.status_code == 400, (params, response.text)
        assert "That did not work" in response.text
        assert "Lunch on Friday" not in response.text


async def test_a_bad_date_names_the_field(console: Console) -> None:
    response = await console.get("/messages", params={"since": "11/01/2026"})
    assert "from must be a date like" in response.text
    response = await console.get("/messages", params={"until": "11/01/2026"})
    assert "until must be a date like" in response.text


@pytest.fixture
def page_size(monkeypatch: pytest.MonkeyPatch) -> int:
    """Pages of 2, in the service and in the routes' page count."""
    monkeypatch.setattr(console_service, "PAGE_SIZE", 2)
    monkeypatch.setattr(console_app, "PAGE_SIZE", 2)
    return 2


async def test_paging(page_size: int, world: World, console: Console) -> None:
    for n in range(5):
        await world.send(f"Message {n}")
    first = await console.page("/messages")
    assert subjects(first) == ["Message 4", "Message 3"]
    assert "5 messages, page 1 of 3" in first
    assert 'href="?page=2" rel="next"' in first and 'rel="prev"' not in first
    second = await console.page("/messages", page=2)
    assert subjects(second) == ["Message 2", "Message 1"]
    assert 'href="?page=1" rel="prev"' in second and 'href="?page=3" rel="next"' in second
    third = await console.page("/messages", page=3)
    assert subjects(third) == ["Message 0"]
    assert 'rel="next"' not in third
    beyond = await console.page("/messages", page=4)
    assert subjects(beyond) == [] and "No messages match." in beyond


async def test_paging_keeps_the_filters(page_size: int, world: World, console: Console) -> None:
    for n in range(3):
        await world.send(f"Wanted {n}")
        await world.send(f"Other {n}")
    first = await console.page("/messages", subject="wanted")
    assert subjects(first) == ["Wanted 2", "Wanted 1"]
    assert 'href="?subject=wanted&amp;page=2" rel="next"' in first
    second = await console.page("/messages", subject="wanted", page=2)
    assert subjects(second) == ["Wanted 0"]


async def test_quarantine_paging(page_size: int, world: World, console: Console) -> None:
    for n in range(3):
        await world.send(f"Held {n}", spam=True)
    await world.send("Clean")
    first = await console.page("/quarantine")
    assert "3 messages held" in first
    assert "Held 2" in first and "Held 1" in first and "Held 0" not in first
    assert 'href="?page=2" rel="next"' in first
    second = await console.page("/quarantine", page=2)
    assert "Held 0" in second and "Held 1" not in second and "Clean" not in second


async def test_fifty_one_messages_make_two_pages(
    services: Services, world: World, console: Console
) -> None:
    """The real page size (50), with records copied from one received message."""
    assert console_service.PAGE_SIZE == 50
    sent = await world.send("Copy")
    async with services.db.write() as session:
        original = await session.scalar(select(Message).where(Message.id == sent))
        assert original is not None
        columns = {
            c.key: getattr(original, c.key)
            for c in Message.__table__.columns
            if c.key not in ("id", "received_at", "subject", "spool_key")
        }
        start = original.received_at
        await session.execute(
            insert(Message),
            [
                {
                    **columns,
                    "id": f"{n:032x}",
                    "received_at": start - timedelta(minutes=n),
                    "subject": f"Copy {n}",
                    "spool_key": None,
                }
                for n in range(1, 51)
            ],
        )
    first = await console.page("/messages")
    assert "51 messages, page 1 of 2" in first
    assert len(subjects(first)) == 50 and subjects(first)[0] == "Copy"
    second = await console.page("/messages", page=2)
    assert subjects(second) == ["Copy 50"]


@pytest.mark.parametrize("value", ["0001-01-01T00:00+01:00", "9999-12-31T23:00-05:00"])
async def test_a_date_out_of_range_is_refused(
    web_app: FastAPI, console: Console, value: str
) -> None:
    transport = httpx.ASGITransport(app=web_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", cookies={COOKIE: console.cookie}
    ) as browser:
        for field in ("since", "until"):
            response = await browser.get("/console/messages", params={field: value})
            assert response.status_code == 400, (field, response.status_code)
            assert "That did not work" in response.text
