"""The gateway scanning with SpamAssassin's spamd: a real daemon, and one that is not there.

The daemon is the session fixture ``spamd_port`` of tests/daemons.py (one spamd for
the whole run); its tests skip only when the spamd binary is not installed.
"""

from __future__ import annotations

import aiosmtplib
import pytest

from mailmoat.scanners.spamd import SpamdScanner
from tests.daemons import free_port
from tests.smtp.conftest import GTUBE, Gateway, GatewayFactory, message

SPAM = message(subject="Test", body=f"{GTUBE}\r\n")
HAM = message(
    subject="Notes from Tuesday's planning meeting",
    body=(
        "Hi Bob,\r\n\r\nthanks for joining the planning meeting yesterday. As agreed, Carol\r\n"
        "will draft the budget for the second quarter and I will collect the open\r\n"
        "questions from the team. Let's meet again next Tuesday at ten.\r\n\r\n"
        "Best regards,\r\nAlice\r\n"
    ),
)


@pytest.fixture
async def spamd_gateway(make_gateway: GatewayFactory, spamd_port: int) -> Gateway:
    return await make_gateway(scanner=SpamdScanner("127.0.0.1", spamd_port, timeout=30))


def closed_port_scanner() -> SpamdScanner:
    return SpamdScanner("127.0.0.1", free_port(), timeout=5)


async def test_gtube_is_quarantined_with_spamds_rules(spamd_gateway: Gateway) -> None:
    errors, reply = await spamd_gateway.send(SPAM)
    assert errors == {}
    assert reply.startswith("2.0.0 Ok: queued as ")
    record = await spamd_gateway.only_message()
    assert (record["state"], record["verdict"], record["action"], record["reason"]) == (
        "quarantined",
        "spam",
        "quarantine",
        "spam-score",
    )
    assert record["score"] >= 1000
    gtube = [rule for rule in record["rules"] if rule["name"] == "GTUBE"]
    assert len(gtube) == 1, record["rules"]
    assert gtube[0]["score"] >= 1000
    assert "Unsolicited Bulk Email" in gtube[0]["description"]
    spam_rule = next(rule for rule in record["rules"] if rule["name"] == "spam-score")
    assert "(spamd)" in spam_rule["description"]
    kept = await spamd_gateway.raw(record["id"])
    assert GTUBE.encode() in kept


async def test_ordinary_mail_is_queued_as_ham(spamd_gateway: Gateway) -> None:
    errors, reply = await spamd_gateway.send(HAM)
    assert errors == {}
    assert reply.startswith("2.0.0 Ok: queued as ")
    record = await spamd_gateway.only_message()
    assert (record["state"], record["verdict"], record["action"], record["reason"]) == (
        "queued",
        "ham",
        "accept",
        "clean",
    )
    assert record["score"] is not None and record["score"] < 5
    assert "GTUBE" not in {rule["name"] for rule in record["rules"]}


async def test_unreachable_spamd_is_a_temporary_failure(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(scanner=closed_port_scanner())
    with pytest.raises(aiosmtplib.SMTPDataError) as deferred:
        await gateway.send(SPAM)
    assert deferred.value.code == 451
    assert "4.7.1" in deferred.value.message
    assert await gateway.messages() == []


async def test_unreachable_spamd_can_be_accepted_unscanned(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(scanner=closed_port_scanner(), accept_when_scanner_fails=True)
    errors, reply = await gateway.send(SPAM)  # GTUBE, but nobody looks at it
    assert errors == {}
    assert reply.startswith("2.0.0 Ok: queued as ")
    record = await gateway.only_message()
    assert (record["state"], record["verdict"], record["action"]) == (
        "queued",
        "unscanned",
        "accept",
    )
    assert record["score"] is None
    unavailable = [rule for rule in record["rules"] if rule["name"] == "scanner-unavailable"]
    assert len(unavailable) == 1, record["rules"]
    assert "spamd" in unavailable[0]["description"]
