"""The recipient is relayed as the sender wrote it: a downstream server may treat
local parts as case-sensitive (RFC 5321 §2.4)."""

from __future__ import annotations

from tests.delivery.conftest import Mailroom, mx
from tests.downstream import Downstream
from tests.smtp.conftest import DOMAIN, message


async def test_the_local_part_is_relayed_as_written(
    mailroom: Mailroom, downstream: Downstream
) -> None:
    await mailroom.route(mx(downstream.port))
    message_id = await mailroom.send(message(), recipients=[f"John.Doe@{DOMAIN.upper()}"])
    record = await mailroom.wait_state(message_id, "delivered")
    (received,) = await downstream.wait_for_async(1)
    assert received.recipients == [f"John.Doe@{DOMAIN}"]  # the domain may be normalised
    assert record["recipients"] == [f"John.Doe@{DOMAIN}"]
    assert [d["address"] for d in record["deliveries"]] == [f"John.Doe@{DOMAIN}"]


async def test_one_mailbox_spelt_twice_gets_the_mail_once(
    mailroom: Mailroom, downstream: Downstream
) -> None:
    await mailroom.route(mx(downstream.port))
    message_id = await mailroom.send(
        message(), recipients=[f"John.Doe@{DOMAIN}", f"john.doe@{DOMAIN}", f"JOHN.DOE@{DOMAIN}"]
    )
    record = await mailroom.wait_state(message_id, "delivered")
    (received,) = await downstream.wait_for_async(1)
    assert received.recipients == [f"John.Doe@{DOMAIN}"]  # the first spelling
    assert record["recipients"] == [f"John.Doe@{DOMAIN}"]
