"""GET /incoming_statuses: each filter narrows the list; one customer never sees
another's; what redelivery refuses."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.helpers import assert_error
from tests.conftest import Tenant, TenantFactory
from tests.smtp.conftest import DOMAIN
from tests.webhooks.conftest import (
    AccountFactory,
    Answer,
    Hooks,
    account_client,
    simple_message,
)


def ids(statuses: list[dict[str, Any]]) -> list[str]:
    return [s["id"] for s in statuses]


@pytest.fixture
async def three(hooks: Hooks) -> dict[str, Any]:
    """m1 (A, alice, 200), m2 (A, carol, 403), m3 (B, alice, 500), sent in that order."""
    hooks.listener.answer(
        Answer(200), Answer(403, b"no", "text/plain"), Answer(500, b"down", "text/plain")
    )
    a = await hooks.address("/a")
    b = await hooks.address("/b")
    sent = [
        (a, "alice@sender.test", "Invoice 1", 250),
        (a, "Carol@Other.test", "Weekly report", 554),
        (b, "alice@sender.test", "invoice 2", 450),
    ]
    for address, sender, subject, code in sent:
        transcript = await hooks.send(simple_message(subject), address["email"], sender=sender)
        assert transcript.data_code == code, transcript
    m3, m2, m1 = await hooks.account.statuses()
    assert [m1["subject"], m2["subject"], m3["subject"]] == [
        "Invoice 1",
        "Weekly report",
        "invoice 2",
    ]
    return {"a": a, "b": b, "m1": m1["id"], "m2": m2["id"], "m3": m3["id"], "rows": [m1, m2, m3]}


async def test_each_filter_narrows_the_list(hooks: Hooks, three: dict[str, Any]) -> None:
    a, b, m1, m2, m3 = (three[k] for k in ("a", "b", "m1", "m2", "m3"))
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({}, [m3, m2, m1]),
        ({"address_id": a["id"]}, [m2, m1]),
        ({"address_id": b["id"]}, [m3]),
        ({"status": 200}, [m1]),
        ({"status": 403}, [m2]),
        ({"status": 500}, [m3]),
        ({"status": 404}, []),
        ({"status_category": "successful"}, [m1]),
        ({"status_category": "rejected"}, [m2]),
        ({"status_category": "delayed"}, [m3]),
        ({"status_category": "max_size"}, []),
        ({"to": a["email"]}, [m2, m1]),
        ({"to": a["email"].upper()}, [m2, m1]),
        ({"to": b["email"]}, [m3]),
        ({"to": "nobody@example.net"}, []),
        ({"from": "carol@other.test"}, [m2]),
        ({"from": "ALICE@sender.test"}, [m3, m1]),
        ({"subject": "INVOICE"}, [m3, m1]),
        ({"subject": "report"}, [m2]),
        ({"subject": "100%"}, []),
        ({"address_id": a["id"], "status_category": "rejected"}, [m2]),
        ({"from": "alice@sender.test", "status": 500}, [m3]),
    ]
    for params, expected in cases:
        assert ids(await hooks.account.statuses(**params)) == expected, params


async def test_since_and_until(hooks: Hooks, three: dict[str, Any]) -> None:
    m1, m2, m3 = three["rows"]
    assert m1["created_at"] < m2["created_at"] < m3["created_at"]
    account = hooks.account
    assert ids(await account.statuses(since=m2["created_at"])) == [m3["id"], m2["id"]]
    assert ids(await account.statuses(until=m2["created_at"])) == [m1["id"]]
    assert ids(await account.statuses(since=m1["created_at"], until=m3["created_at"])) == [
        m2["id"],
        m1["id"],
    ]
    assert (
        ids(await account.statuses(since="2000-01-01T00:00:00Z", until="2000-01-02T00:00:00Z"))
        == []
    )


async def test_paging_and_bad_filters(hooks: Hooks, three: dict[str, Any]) -> None:
    response = await hooks.account.client.get(
        "/incoming_statuses", params={"limit": 1, "offset": 1}
    )
    assert response.status_code == 200, response.text
    assert ids(response.json()) == [three["m2"]]
    assert response.headers["X-Total-Count"] == "3"
    for params in (
        {"status_category": "bogus"},
        {"address_id": "nope"},
        {"status": 42},
        {"since": "yesterday"},
        {"limit": 0},
    ):
        response = await hooks.account.client.get("/incoming_statuses", params=params)
        assert_error(response, 400)


async def test_only_webhook_mail_is_listed(hooks: Hooks) -> None:
    transcript = await hooks.send(simple_message(), f"bob@{DOMAIN}")  # a filtered domain
    assert transcript.data_code == 250
    message_id = transcript.queued_id
    assert await hooks.account.statuses() == []
    response = await hooks.account.client.get(f"/incoming_statuses/{message_id}")
    assert_error(response, 404)
    response = await hooks.account.client.post(f"/incoming_statuses/{message_id}/redeliver")
    assert_error(response, 404)


async def test_another_customers_statuses_never_appear(
    hooks: Hooks,
    tenant: Tenant,
    make_tenant: TenantFactory,
    make_account: AccountFactory,
    shared_app: Any,
) -> None:
    other_tenant = await make_tenant("other")
    other = await make_account(other_tenant)
    mine = await hooks.address("/mine")
    theirs = await other.create_address(hooks.listener.url("/theirs"))
    for email in (mine["email"], theirs["email"]):
        transcript = await hooks.send(simple_message(), email)
        assert transcript.data_code == 250, transcript
    [my_status] = await hooks.account.statuses()
    [their_status] = await other.statuses()
    assert my_status["address_id"] == mine["id"]
    assert their_status["address_id"] == theirs["id"]
    assert await hooks.account.statuses(address_id=theirs["id"]) == []
    assert await hooks.account.statuses(to=theirs["email"]) == []
    for response in (
        await hooks.account.client.get(f"/incoming_statuses/{their_status['id']}"),
        await hooks.account.client.post(f"/incoming_statuses/{their_status['id']}/redeliver"),
        await hooks.account.client.get(f"/addresses/{theirs['id']}"),
    ):
        assert_error(response, 404)
    # a key used on another account's path, or no key at all
    wrong = account_client(shared_app, "other", tenant.key)
    anonymous = account_client(shared_app, "acme", "")
    anonymous.headers.pop("Authorization")
    try:
        assert_error(await wrong.get("/incoming_statuses"), 403)
        assert_error(await anonymous.get("/incoming_statuses"), 401)
    finally:
        await wrong.aclose()
        await anonymous.aclose()


async def test_redelivery_refusals(hooks: Hooks) -> None:
    address = await hooks.address(max_size=1024)
    transcript = await hooks.send(simple_message(size=4096), address["email"])
    assert transcript.rcpt[0][0] == 552
    [too_big] = await hooks.account.statuses()
    response = await hooks.account.client.post(f"/incoming_statuses/{too_big['id']}/redeliver")
    assert_error(response, 409)
    response = await hooks.account.client.post(f"/incoming_statuses/{'0' * 32}/redeliver")
    assert_error(response, 404)
    assert hooks.listener.hits == []
