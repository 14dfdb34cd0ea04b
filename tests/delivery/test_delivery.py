"""Queued mail reaches the customer's downstream servers: real SMTP on both sides."""

from __future__ import annotations

import asyncio
import email
import email.policy
from typing import Any

from mailmoat.db import queue_repo
from mailmoat.services.container import Services
from tests.delivery.conftest import Mailroom, MailroomFactory, closed_port, mx
from tests.dnsserver import LocalDnsServer
from tests.downstream import Downstream, Received
from tests.smtp.conftest import DOMAIN, GTUBE, message


async def test_delivered_with_headers_intact(mailroom: Mailroom, downstream: Downstream) -> None:
    await mailroom.route(mx(downstream.port))
    body = message(body="first line\r\n.leading dot\r\n..two dots\r\nlast\r\n")
    message_id = await mailroom.send(body, sender="alice@sender.test")
    record = await mailroom.wait_state(message_id, "delivered")

    (received,) = await downstream.wait_for_async(1)
    assert received.mail_from == "alice@sender.test"
    assert received.recipients == [f"bob@{DOMAIN}"]
    kept = await mailroom.gateway.raw(message_id)
    assert received.data == kept  # byte for byte what the gateway kept, added headers included
    assert kept.endswith(body.split("\r\n\r\n", 1)[1].encode())
    assert received.data.startswith(b"Received: from")

    assert record["deliveries"] == [
        {
            "address": f"bob@{DOMAIN}",
            "status": "delivered",
            "reply": record["deliveries"][0]["reply"],
        }
    ]
    assert record["deliveries"][0]["reply"].startswith("250")
    (attempt,) = record["deliveryAttempts"]
    assert attempt["outcome"] == "delivered"
    assert attempt["target"] == f"[127.0.0.1]:{downstream.port}"
    assert attempt["recipients"] == [f"bob@{DOMAIN}"]


async def test_a_long_line_is_delivered_intact(mailroom: Mailroom, downstream: Downstream) -> None:
    await mailroom.route(mx(downstream.port))
    long_line = b"<td>" + b"cell " * 300 + b"</td>"  # 1,509 bytes
    body = b"Subject: wide\r\nFrom: alice@sender.test\r\n\r\nintro\r\n" + long_line + b"\r\nend\r\n"
    message_id = await mailroom.send(body)
    await mailroom.wait_state(message_id, "delivered")
    (received,) = await downstream.wait_for_async(1)
    assert received.data == await mailroom.gateway.raw(message_id)
    assert received.data.endswith(b"\r\n\r\nintro\r\n" + long_line + b"\r\nend\r\n")


async def test_weight_decides_the_share_within_one_priority(mailroom: Mailroom) -> None:
    with Downstream() as heavy, Downstream() as light:
        await mailroom.route(
            mx(heavy.port, priority=10, weight=40), mx(light.port, priority=10, weight=10)
        )
        count = 300
        async with mailroom.gateway.client() as smtp:
            for n in range(count):
                await smtp.sendmail("alice@sender.test", [f"bob@{DOMAIN}"], message(f"n{n}"))
        deadline = asyncio.get_running_loop().time() + 30
        while len(heavy.messages) + len(light.messages) < count:
            assert asyncio.get_running_loop().time() < deadline, "not everything was delivered"
            await asyncio.sleep(0.1)
        share = len(heavy.messages) / count
        # 40:10 is 80 %; the binomial spread over 300 messages is 2.3 %.
        assert 0.70 <= share <= 0.90, (len(heavy.messages), len(light.messages))
        assert len(heavy.messages) + len(light.messages) == count


async def test_the_next_priority_is_tried_when_every_best_one_fails(
    mailroom: Mailroom, downstream: Downstream
) -> None:
    down_a, down_b = closed_port(), closed_port()
    await mailroom.route(
        mx(downstream.port, priority=20),
        mx(down_a, priority=10, weight=5),
        mx(down_b, priority=10, weight=5),
    )
    message_id = await mailroom.send(message())
    record = await mailroom.wait_state(message_id, "delivered")
    assert len(await downstream.wait_for_async(1)) == 1
    tried = [(a["target"], a["outcome"]) for a in record["deliveryAttempts"]]
    assert sorted(tried[:2]) == sorted(
        [(f"[127.0.0.1]:{down_a}", "unreachable"), (f"[127.0.0.1]:{down_b}", "unreachable")]
    )
    assert tried[2] == (f"[127.0.0.1]:{downstream.port}", "delivered")
    assert "refused" in record["deliveryAttempts"][0]["reply"]


async def test_a_temporary_refusal_is_retried_until_accepted(
    mailroom: Mailroom, downstream: Downstream
) -> None:
    refusals = iter(["451 4.3.0 mailbox busy, try later"])
    downstream.data_reply = lambda _: next(refusals, None)
    await mailroom.route(mx(downstream.port))
    message_id = await mailroom.send(message())

    deferred = await mailroom.wait_state(message_id, "deferred", "delivered")
    if deferred["state"] == "deferred":
        assert deferred["nextAttemptAt"] is not None
        assert deferred["deliveries"][0]["status"] == "pending"
    record = await mailroom.wait_state(message_id, "delivered")
    assert [a["outcome"] for a in record["deliveryAttempts"]] == ["deferred", "delivered"]
    assert record["deliveryAttempts"][0]["reply"] == "451 4.3.0 mailbox busy, try later"
    assert len(await downstream.wait_for_async(1)) == 1
    assert record["nextAttemptAt"] is None


def _report(bounce: Received) -> tuple[email.message.EmailMessage, list[Any]]:
    parsed = email.message_from_bytes(bounce.data, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report"
    status = next(p for p in parsed.walk() if p.get_content_type() == "message/delivery-status")
    return parsed, status.get_payload()  # type: ignore[return-value]


async def test_a_permanent_refusal_fails_and_the_sender_gets_a_dsn(
    mailroom: Mailroom, downstream: Downstream
) -> None:
    downstream.rcpt_reply = lambda rcpt: "550 5.1.1 no such mailbox" if "bob" in rcpt else None
    await mailroom.route(mx(downstream.port))
    message_id = await mailroom.send(message(), sender="alice@sender.test")
    record = await mailroom.wait_state(message_id, "failed")
    assert record["deliveries"][0] == {
        "address": f"bob@{DOMAIN}",
        "status": "failed",
        "reply": "550 5.1.1 no such mailbox",
    }
    assert downstream.messages == []

    (bounce,) = await mailroom.bounces.wait_for_async(1)
    assert bounce.mail_from == "" and bounce.recipients == ["alice@sender.test"]
    parsed, blocks = _report(bounce)
    assert parsed["To"] == "alice@sender.test"
    assert blocks[1]["Final-Recipient"] == f"rfc822; bob@{DOMAIN}"
    assert blocks[1]["Status"] == "5.1.1"
    assert "550 5.1.1 no such mailbox" in blocks[1]["Diagnostic-Code"]

    log = await mailroom.gateway.messages()
    (dsn,) = [m for m in log if m["relatedId"] == message_id]
    await mailroom.wait_state(dsn["id"], "delivered")


async def test_no_dsn_to_the_null_sender_or_when_turned_off(
    make_mailroom: MailroomFactory, downstream: Downstream
) -> None:
    room = await make_mailroom(dsn=False)
    downstream.rcpt_reply = lambda _: "550 5.1.1 no such mailbox"
    await room.route(mx(downstream.port))
    from_someone = await room.send(message(), sender="alice@sender.test")
    from_nobody = await room.send(message(), sender="")
    for message_id in (from_someone, from_nobody):
        await room.wait_state(message_id, "failed")
    await asyncio.sleep(0.3)
    assert room.bounces.messages == []
    assert not any(m["relatedId"] for m in await room.gateway.messages())


async def test_a_downstream_down_for_a_while_gets_the_mail_when_back(
    mailroom: Mailroom, downstream: Downstream
) -> None:
    await mailroom.route(mx(downstream.port))
    downstream.stop()
    message_id = await mailroom.send(message())
    record = await mailroom.wait_state(message_id, "deferred")
    assert record["deliveryAttempts"][0]["outcome"] == "unreachable"
    await asyncio.sleep(0.8)  # a retry or two while it is down
    assert (await mailroom.record(message_id))["state"] == "deferred"
    downstream.start()
    record = await mailroom.wait_state(message_id, "delivered")
    assert len(await downstream.wait_for_async(1)) == 1
    assert len(record["deliveryAttempts"]) >= 2


async def test_mail_that_cannot_be_delivered_in_its_lifetime_is_returned(
    make_mailroom: MailroomFactory,
) -> None:
    room = await make_mailroom(delivery_lifetime=1.0)
    await room.route(mx(closed_port()))
    message_id = await room.send(message(), sender="alice@sender.test")
    record = await room.wait_state(message_id, "failed")
    assert record["deliveries"][0]["status"] == "failed"
    (bounce,) = await room.bounces.wait_for_async(1)
    _, blocks = _report(bounce)
    assert blocks[1]["Status"].startswith("4.4.")
    assert blocks[1]["Action"] == "failed"


async def test_each_recipient_gets_its_own_reply(
    mailroom: Mailroom, downstream: Downstream
) -> None:
    busy = iter(["450 4.2.1 mailbox busy"])
    replies = {
        f"ok@{DOMAIN}": lambda: None,
        f"busy@{DOMAIN}": lambda: next(busy, None),
        f"gone@{DOMAIN}": lambda: "550 5.1.1 gone",
    }
    downstream.rcpt_reply = lambda rcpt: replies[rcpt]()
    await mailroom.route(mx(downstream.port))
    message_id = await mailroom.send(message(), recipients=list(replies))
    record = await mailroom.wait_state(message_id, "failed")
    statuses = {d["address"]: d["status"] for d in record["deliveries"]}
    assert statuses == {
        f"ok@{DOMAIN}": "delivered",
        f"busy@{DOMAIN}": "delivered",
        f"gone@{DOMAIN}": "failed",
    }
    copies = await downstream.wait_for_async(2)
    assert [c.recipients for c in copies] == [[f"ok@{DOMAIN}"], [f"busy@{DOMAIN}"]]
    (bounce,) = await mailroom.bounces.wait_for_async(1)
    _, blocks = _report(bounce)
    assert [b["Final-Recipient"] for b in blocks[1:]] == [f"rfc822; gone@{DOMAIN}"]


async def test_a_failed_message_is_delivered_again_on_request(
    mailroom: Mailroom, downstream: Downstream, make_tenant: Any
) -> None:
    downstream.rcpt_reply = lambda _: "550 5.7.1 not today"
    await mailroom.route(mx(downstream.port))
    message_id = await mailroom.send(message(), sender="")
    await mailroom.wait_state(message_id, "failed")

    other = await make_tenant("other")
    assert (await other.client.post(f"/messages/{message_id}/redeliver")).status_code == 404

    downstream.rcpt_reply = None
    response = await mailroom.api.post(f"/messages/{message_id}/redeliver")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "queued"
    assert response.json()["deliveries"][0]["status"] == "pending"
    record = await mailroom.wait_state(message_id, "delivered")
    assert len(await downstream.wait_for_async(1)) == 1
    assert [a["outcome"] for a in record["deliveryAttempts"]] == ["failed", "delivered"]

    again = await mailroom.api.post(f"/messages/{message_id}/redeliver")
    assert again.status_code == 200  # a delivered message can be sent again too
    await mailroom.wait_state(message_id, "delivered")
    assert len(await downstream.wait_for_async(2)) == 2


async def test_only_failed_or_delivered_messages_can_be_redelivered(
    make_mailroom: MailroomFactory,
) -> None:
    room = await make_mailroom()  # no downstream: the message stays deferred
    message_id = await room.send(message())
    record = await room.wait_state(message_id, "deferred")
    assert "no downstream address is configured" in record["deliveryAttempts"][0]["reply"]
    response = await room.api.post(f"/messages/{message_id}/redeliver")
    assert response.status_code == 409
    assert response.json()["code"] == 409 and "deferred" in response.json()["message"]


async def test_released_quarantine_is_delivered(
    make_mailroom: MailroomFactory, downstream: Downstream
) -> None:
    room = await make_mailroom()
    settings = await room.api.put(
        f"/domains/{DOMAIN}/settings", json={"settings": {"abusePolicy": "quarantine"}}
    )
    assert settings.status_code == 200, settings.text
    await room.route(mx(downstream.port))
    message_id = await room.send(message(body=GTUBE + "\r\n"))
    assert (await room.record(message_id))["state"] == "quarantined"
    await asyncio.sleep(0.2)
    assert downstream.messages == []
    response = await room.api.post(f"/messages/{message_id}/release")
    assert response.status_code == 200, response.text
    await room.wait_state(message_id, "delivered")
    assert len(await downstream.wait_for_async(1)) == 1


async def test_a_target_name_is_resolved_through_the_configured_resolver(
    make_mailroom: MailroomFactory, downstream: Downstream
) -> None:
    from mailmoat.pipeline.dns import DnsResolver

    with LocalDnsServer({"mx1.customer.test": {"A": ["127.0.0.1"]}}) as dns:
        room = await make_mailroom(resolver=DnsResolver(dns.servers, timeout=1.0))
        await room.route(mx(downstream.port, target="mx1.customer.test."))
        message_id = await room.send(message())
        record = await room.wait_state(message_id, "delivered")
        assert ("mx1.customer.test", "A") in dns.queries
    assert (
        record["deliveryAttempts"][0]["target"]
        == f"mx1.customer.test.[127.0.0.1]:{downstream.port}"
    )
    assert len(await downstream.wait_for_async(1)) == 1


async def test_an_unknown_target_name_defers(
    make_mailroom: MailroomFactory, downstream: Downstream
) -> None:
    from mailmoat.pipeline.dns import DnsResolver

    with LocalDnsServer({}) as dns:
        room = await make_mailroom(resolver=DnsResolver(dns.servers, timeout=1.0))
        await room.route(mx(downstream.port, target="nowhere.customer.test."))
        message_id = await room.send(message())
        record = await room.wait_state(message_id, "deferred")
    assert record["deliveryAttempts"][0]["outcome"] == "unreachable"
    assert "nowhere.customer.test" in record["deliveryAttempts"][0]["reply"]


async def test_a_claim_abandoned_by_a_dead_worker_is_taken_over(
    make_mailroom: MailroomFactory, services: Services, downstream: Downstream
) -> None:
    from datetime import UTC, datetime, timedelta

    room = await make_mailroom(delivery_poll_interval=0.05)
    await room.worker.stop()  # this test plays the workers itself
    await room.route(mx(downstream.port))
    message_id = await room.send(message())

    def claim(owner: str, seconds: float) -> Any:
        now, lease = datetime.now(UTC), timedelta(seconds=seconds)
        return services.commits.run(lambda c: queue_repo.claim(c, owner, 10, lease, now))

    claimed = await claim("dead-worker", 1)
    assert [j.message_id for j in claimed.jobs] == [message_id]
    # While the lease runs, nobody else gets the message.
    assert (await claim("other", 1)).jobs == []
    await asyncio.sleep(1.1)
    again = await claim("successor", 30)
    assert [j.message_id for j in again.jobs] == [message_id]


async def test_metrics_count_attempts_and_results(
    mailroom: Mailroom, downstream: Downstream
) -> None:
    import re

    import httpx

    from mailmoat.api.app import create_api
    from mailmoat.api.ratelimit import RateLimiter

    await mailroom.route(mx(closed_port(), priority=1), mx(downstream.port, priority=2))
    await mailroom.wait_state(await mailroom.send(message()), "delivered")
    app = create_api(mailroom.gateway.services, RateLimiter(0))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway.test"
    ) as client:
        text = (await client.get("/metrics")).text
    for outcome in ("unreachable", "delivered"):
        assert re.search(
            rf'mailmoat_delivery_attempts_total\{{outcome="{outcome}",route="smtp"\}} [1-9]', text
        ), outcome
    assert re.search(
        r'mailmoat_delivery_recipients_total\{result="delivered",route="smtp"\} [1-9]', text
    )
    assert 'mailmoat_messages_by_state{state="delivered"} 1.0' in text
    assert "mailmoat_delivery_seconds_bucket" in text


async def test_recipients_a_server_defers_are_offered_to_the_next_one(
    mailroom: Mailroom, downstream: Downstream
) -> None:
    with Downstream() as busy:
        busy.rcpt_reply = lambda rcpt: "451 4.3.2 busy" if rcpt.startswith("b") else None
        await mailroom.route(mx(busy.port, priority=10), mx(downstream.port, priority=20))
        message_id = await mailroom.send(message(), recipients=[f"a@{DOMAIN}", f"b@{DOMAIN}"])
        record = await mailroom.wait_state(message_id, "delivered")
        assert [m.recipients for m in await busy.wait_for_async(1)] == [[f"a@{DOMAIN}"]]
    assert [m.recipients for m in await downstream.wait_for_async(1)] == [[f"b@{DOMAIN}"]]
    outcomes = [(a["outcome"], a["recipients"]) for a in record["deliveryAttempts"]]
    assert sorted(outcomes) == sorted(
        [
            ("delivered", [f"a@{DOMAIN}"]),
            ("deferred", [f"b@{DOMAIN}"]),
            ("delivered", [f"b@{DOMAIN}"]),
        ]
    )


async def test_a_bug_during_delivery_defers_the_message_and_it_still_expires(
    make_mailroom: MailroomFactory, downstream: Downstream, monkeypatch: Any
) -> None:
    from mailmoat.delivery.relay import Relay

    async def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a bug in mailmoat")

    monkeypatch.setattr(Relay, "send", broken)  # simulates a defect: nothing real fails so
    room = await make_mailroom(delivery_lifetime=1.0)
    await room.route(mx(downstream.port))
    message_id = await room.send(message(), sender="alice@sender.test")
    record = await room.wait_state(message_id, "failed")
    assert "local error in mailmoat" in record["deliveries"][0]["reply"]
    assert record["deliveryAttempts"][0]["outcome"] == "deferred"
    monkeypatch.undo()  # the DSN must get out
    (bounce,) = await room.bounces.wait_for_async(1)
    assert bounce.recipients == ["alice@sender.test"]


async def test_mail_handed_to_a_stopping_worker_goes_back_to_the_queue(
    make_mailroom: MailroomFactory, services: Services
) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from mailmoat.db.message_rows import NewMessage
    from mailmoat.db.tables import Delivery

    room = await make_mailroom()
    await room.worker.stop()
    message_id = await room.send(message())  # stopped: the row is not leased to it
    lease = timedelta(minutes=5)
    now = datetime.now(UTC)
    await services.commits.run(lambda c: queue_repo.claim(c, room.worker.name, 10, lease, now))
    # As if intake had committed this message for the worker just as it stopped:
    handed = NewMessage(
        id=message_id, customer_id="", domain_id=None, domain_name=DOMAIN,
        received_at=now, client_ip="", client_helo="", mail_from="",
        recipients=[(f"bob@{DOMAIN}", None)], verdict="ham", action="accept",
        reason="clean", state="queued", reply="", data=b"x",
    )  # fmt: skip
    room.worker.take([handed])
    for _ in range(50):
        async with services.db.read() as session:
            row = await session.scalar(select(Delivery).where(Delivery.message_id == message_id))
        assert row is not None
        if row.lease_owner is None:
            break
        await asyncio.sleep(0.02)
    assert row.lease_owner is None and row.due_at <= datetime.now(UTC)
