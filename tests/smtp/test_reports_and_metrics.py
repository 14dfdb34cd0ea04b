"""Misclassification reports are matched to the message log and teach the classifier."""

from __future__ import annotations

import re

import httpx

from tests.api.helpers import assert_error, provision_names
from tests.conftest import TenantFactory
from tests.smtp.conftest import DOMAIN, Gateway, message

PITCH = (
    "Exclusive offer on premium replica watches and designer handbags. "
    "Limited stock, order today and enjoy free worldwide shipping.\r\n"
)


def bayes(record: dict[str, object]) -> list[str]:
    rules = record["rules"]
    assert isinstance(rules, list)
    return [r["name"] for r in rules if str(r["name"]).startswith("BAYES")]


async def report(
    client: httpx.AsyncClient, content: str, report_type: str = "false_negative", **envelope: str
) -> httpx.Response:
    body: dict[str, object] = {"messageContent": content}
    if envelope:
        body["smtpEnvelopeInformation"] = envelope
    return await client.post("/report", params={"report_type": report_type}, json=body)


async def test_false_negative_report_raises_the_score_of_similar_mail(gateway: Gateway) -> None:
    first = message(subject="Replica watches", body=PITCH, message_id="<pitch-1@sender.test>")
    await gateway.send(first)
    [before] = await gateway.messages()
    assert before["state"] == "queued"  # it got through: a false negative

    response = await report(gateway.api, first)
    assert response.status_code == 204, response.text

    similar = message(subject="Replica watches", body=PITCH.replace("today", "now"))
    await gateway.send(similar)
    after = (await gateway.messages())[0]
    assert after["id"] != before["id"]
    assert after["score"] > before["score"]
    assert bayes(after), after["rules"]


async def test_false_positive_report_lowers_the_score_of_similar_mail(gateway: Gateway) -> None:
    # Teach it some spam first, so that the classifier has an opinion to revise.
    spam = message(subject="Replica watches", body=PITCH, message_id="<s@sender.test>")
    await gateway.send(spam)
    assert (await report(gateway.api, spam)).status_code == 204
    await gateway.send(message(subject="Replica watches", body=PITCH))
    scored = (await gateway.messages())[0]
    assert (
        await report(
            gateway.api,
            message(subject="Replica watches", body=PITCH, message_id=scored["messageId"]),
            "false_positive",
        )
    ).status_code == 204
    await gateway.send(message(subject="Replica watches", body=PITCH))
    rescored = (await gateway.messages())[0]
    assert rescored["score"] < scored["score"]


async def test_report_of_an_unknown_message_is_404(gateway: Gateway) -> None:
    response = await report(gateway.api, message(message_id="<never-seen@sender.test>"))
    assert_error(response, 404, mentions="not found")
    no_id = "From: a@sender.test\r\nSubject: x\r\n\r\nbody\r\n"
    assert_error(await report(gateway.api, no_id), 404)


async def test_report_of_another_customers_message_is_401(
    gateway: Gateway, make_tenant: TenantFactory
) -> None:
    other = await make_tenant("other")
    await provision_names(other.client, other.subscription, "other.example")
    theirs = message(to="eve@other.example", message_id="<theirs@sender.test>")
    await gateway.send(theirs, recipients=["eve@other.example"])
    assert_error(await report(gateway.api, theirs), 401)
    assert (await report(other.client, theirs)).status_code == 204


async def test_report_is_linked_to_the_record_of_the_reported_recipient(
    gateway: Gateway,
) -> None:
    await provision_names(gateway.api, gateway.tenant.subscription, "second.example")
    both = message(message_id="<both@sender.test>")
    await gateway.send(both, recipients=[f"bob@{DOMAIN}", "bob@second.example"])
    response = await report(gateway.api, both, rcptTo="bob@second.example")
    assert response.status_code == 204, response.text
    from sqlalchemy import select

    from mailmoat.db.tables import Message, Report

    async with gateway.services.db.read() as session:
        [stored] = (await session.scalars(select(Report))).all()
        linked = await session.get(Message, stored.message_id)
    assert linked is not None and linked.domain_name == "second.example"


async def test_metrics_count_messages_replies_and_states(gateway: Gateway) -> None:
    await gateway.send(message())
    from mailmoat.api.app import create_api
    from mailmoat.api.ratelimit import RateLimiter

    app = create_api(gateway.services, RateLimiter(0))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway.test"
    ) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    text = response.text
    assert re.search(r'mailmoat_smtp_replies_total\{code="250",command="DATA"\} [1-9]', text)
    assert re.search(
        r'mailmoat_messages_total\{action="accept",reason="clean",verdict="ham"\} [1-9]', text
    )
    assert 'mailmoat_messages_by_state{state="queued"} 1.0' in text
    assert "mailmoat_scan_seconds_bucket" in text
