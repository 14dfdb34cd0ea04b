"""Limits on the header section at the end of DATA: its size, and Received hops (loops)."""

from __future__ import annotations

import aiosmtplib
import pytest

from tests.smtp.conftest import DOMAIN, GatewayFactory, message

MIB = 1024 * 1024


def received(count: int) -> str:
    return "".join(
        f"Received: from relay{n}.sender.test by relay{n + 1}.sender.test; "
        "Sun, 22 Nov 2026 10:00:00 +0000\r\n"
        for n in range(count)
    )


def with_head_of(size: int) -> bytes:
    """A message whose header section is ``size`` bytes (fields and their CRLFs)."""
    head = message(subject="big head").encode().partition(b"\r\n\r\n")[0] + b"\r\n"
    filler = b"X-Filler: " + b"f" * 900 + b"\r\n"
    count, rest = divmod(size - len(head), len(filler))
    pad = b"X-Last: " + b"l" * (rest - len(b"X-Last: \r\n")) + b"\r\n" if rest else b""
    assert rest == 0 or rest >= len(b"X-Last: x\r\n")
    raw = head + filler * count + pad
    assert len(raw) == size
    return raw + b"\r\nA short body.\r\n"


async def test_a_header_section_over_the_limit_gets_552_and_a_rejected_record(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(max_message_size=4 * MIB)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await gateway.send(with_head_of(MIB + 100))
    assert refused.value.code == 552
    assert refused.value.message.startswith("5.3.4")
    [record] = await gateway.messages()
    assert (record["state"], record["reason"]) == ("rejected", "header-size")
    assert record["smtpReply"].startswith("552 5.3.4")
    assert record["recipients"] == [f"bob@{DOMAIN}"]
    assert record["size"] > MIB


async def test_a_header_section_at_the_limit_is_accepted(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(max_message_size=4 * MIB, max_header_size=64 * 1024)
    errors, reply = await gateway.send(with_head_of(64 * 1024))
    assert errors == {} and reply.startswith("2.0.0")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await gateway.send(with_head_of(64 * 1024 + 100))
    assert refused.value.code == 552
    states = sorted(m["state"] for m in await gateway.messages())
    assert states == ["queued", "rejected"]


async def test_a_header_without_a_body_is_measured_too(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(max_header_size=4096)
    raw = with_head_of(8192).partition(b"\r\n\r\n")[0] + b"\r\n"  # no empty line at all
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await gateway.send(raw)
    assert refused.value.code == 552


async def test_more_than_100_received_fields_is_a_loop_refused_with_554(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway()
    errors, reply = await gateway.send(message(subject="100 hops", extra_headers=received(100)))
    assert errors == {} and reply.startswith("2.0.0")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await gateway.send(message(subject="101 hops", extra_headers=received(101)))
    assert refused.value.code == 554
    assert refused.value.message.startswith("5.4.6")
    records = {m["state"]: m for m in await gateway.messages()}
    assert set(records) == {"queued", "rejected"}
    assert records["rejected"]["reason"] == "mail-loop"
    assert records["rejected"]["smtpReply"].startswith("554 5.4.6")
    # The copy accepted carries one more hop: mailmoat's own Received field.
    raw = await gateway.raw(records["queued"]["id"])
    assert raw.lower().count(b"\r\nreceived:") + raw.lower().startswith(b"received:") == 101


async def test_received_fields_are_counted_whatever_their_case_and_spacing(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(max_hops=3)
    hops = (
        "RECEIVED: from a\r\nreceived : from b\r\n\tby c\r\n"
        "Received:\r\n from d\r\nreceived\t:e\r\n"
    )
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await gateway.send(message(extra_headers=hops))
    assert refused.value.code == 554
    # A Received line in the body is not a hop.
    body = "Received: quoted in the body\r\n" * 5
    errors, _ = await gateway.send(message(extra_headers=received(3), body=body))
    assert errors == {}


async def test_a_loop_refusal_is_recorded_for_every_recipient_of_the_transaction(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway()
    recipients = [f"bob@{DOMAIN}", f"carol@{DOMAIN}"]
    with pytest.raises(aiosmtplib.SMTPDataError):
        await gateway.send(message(extra_headers=received(101)), recipients=recipients)
    [record] = await gateway.messages()
    assert sorted(record["recipients"]) == recipients
    assert record["state"] == "rejected"
