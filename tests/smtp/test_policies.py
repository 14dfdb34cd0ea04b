"""GTUBE under each abuse policy, the flag header, and the quarantine through the API."""

from __future__ import annotations

import aiosmtplib
import pytest
from sqlalchemy import update

from mailmoat.db.tables import Recipient
from tests.api.helpers import add_user, assert_error
from tests.smtp.conftest import DOMAIN, GTUBE, Gateway, message

SPAM = message(subject="Test", body=f"{GTUBE}\r\n")


async def set_policy(gateway: Gateway, **settings: object) -> None:
    response = await gateway.api.put(f"/domains/{DOMAIN}/settings", json=settings)
    assert response.status_code == 200, response.text


async def test_block_policy_refuses_spam_at_end_of_data(gateway: Gateway) -> None:
    await set_policy(gateway, abusePolicy="block")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await gateway.send(SPAM)
    assert refused.value.code == 550
    assert "5.7.1" in refused.value.message
    assert "spam" in refused.value.message
    record = await gateway.only_message()
    assert (record["state"], record["action"], record["reason"]) == (
        "rejected",
        "block",
        "spam-score",
    )
    assert record["score"] >= 1000
    assert "GTUBE" in {r["name"] for r in record["rules"]}
    response = await gateway.api.get(f"/messages/{record['id']}/raw")
    assert_error(response, 404)  # refused mail is not kept


async def test_flag_policy_delivers_with_the_domains_header(gateway: Gateway) -> None:
    await set_policy(
        gateway, abusePolicy="flag", spamHeaderName="X-Junk", spamHeaderValue="certainly"
    )
    errors, _ = await gateway.send(SPAM)
    assert errors == {}
    record = await gateway.only_message()
    assert (record["state"], record["action"], record["verdict"]) == ("queued", "flag", "spam")
    raw = await gateway.raw(record["id"])
    assert b"\r\nX-Junk: certainly\r\n" in raw


async def test_flag_header_is_not_added_to_clean_mail_and_forgeries_are_removed(
    gateway: Gateway,
) -> None:
    await set_policy(gateway, abusePolicy="flag")
    errors, _ = await gateway.send(message(extra_headers="X-Spam-Flag: YES\r\n"))
    assert errors == {}
    record = await gateway.only_message()
    assert record["action"] == "accept"
    assert b"X-Spam-Flag" not in await gateway.raw(record["id"])


async def test_default_policy_quarantines_and_release_queues(gateway: Gateway) -> None:
    errors, reply = await gateway.send(SPAM)
    assert errors == {}
    assert reply.startswith("2.0.0")  # the sender is not told
    record = await gateway.only_message()
    assert record["state"] == "quarantined"
    listed = (await gateway.api.get("/quarantine")).json()
    assert [m["id"] for m in listed["messages"]] == [record["id"]]
    assert listed["total"] == 1
    assert [m["id"] for m in await gateway.messages(state="quarantined")] == [record["id"]]
    assert await gateway.messages(state="queued") == []
    detail = (await gateway.api.get(f"/messages/{record['id']}")).json()
    assert detail["subject"] == "Test"
    released = await gateway.api.post(f"/messages/{record['id']}/release")
    assert released.status_code == 200, released.text
    assert released.json()["state"] == "queued"
    assert (await gateway.api.get("/quarantine")).json()["messages"] == []
    again = await gateway.api.post(f"/messages/{record['id']}/release")
    assert_error(again, 409)


async def test_deleting_quarantined_mail_removes_its_content(gateway: Gateway) -> None:
    await gateway.send(SPAM)
    record = await gateway.only_message()
    response = await gateway.api.delete(f"/messages/{record['id']}")
    assert response.status_code == 204, response.text
    assert (await gateway.only_message())["state"] == "deleted"
    assert_error(await gateway.api.get(f"/messages/{record['id']}/raw"), 404)
    assert_error(await gateway.api.delete(f"/messages/{record['id']}"), 409)


async def test_users_own_policy_applies_unless_the_domain_overrides(gateway: Gateway) -> None:
    user = f"strict@{DOMAIN}"
    await add_user(gateway.api, user)
    async with gateway.services.db.write() as session:
        await session.execute(
            update(Recipient).where(Recipient.email == user).values(abuse_policy="block")
        )
    with pytest.raises(aiosmtplib.SMTPDataError):
        await gateway.send(SPAM, recipients=[user])
    await set_policy(gateway, abusePolicyOverride=True)  # the domain's quarantine wins
    errors, _ = await gateway.send(SPAM, recipients=[user])
    assert errors == {}
    states = sorted(m["state"] for m in await gateway.messages())
    assert states == ["quarantined", "rejected"]


async def test_another_customer_cannot_see_or_release(gateway: Gateway, make_tenant) -> None:  # type: ignore[no-untyped-def]
    await gateway.send(SPAM)
    record = await gateway.only_message()
    other = await make_tenant("other")
    assert_error(await other.client.get(f"/messages/{record['id']}"), 404)
    assert_error(await other.client.post(f"/messages/{record['id']}/release"), 404)
    assert_error(await other.client.delete(f"/messages/{record['id']}"), 404)
    assert_error(await other.client.get(f"/domains/{DOMAIN}/messages"), 403)
    assert (await other.client.get("/quarantine")).json()["messages"] == []
