"""At each connection, downstream servers and DSN recipients' mail servers pass the
address policy: no connection inside unless the operator allows it, never one to
mailmoat's own SMTP listener."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from mailmoat.pipeline.dns import DnsResolver
from tests.delivery.conftest import MailroomFactory, closed_port, mx
from tests.dnsserver import LocalDnsServer
from tests.downstream import Downstream
from tests.smtp.conftest import message

REFUSED = "refused by address policy"


@pytest.fixture
def dns() -> Iterator[LocalDnsServer]:
    with LocalDnsServer() as server:
        yield server


def resolver(dns: LocalDnsServer) -> DnsResolver:
    return DnsResolver(dns.servers, timeout=1.0)


def replies(record: dict[str, Any]) -> list[str]:
    return [a["reply"] for a in record["deliveryAttempts"]]


async def test_a_name_leading_to_loopback_is_not_connected_to_whether_or_not_it_listens(
    make_mailroom: MailroomFactory, downstream: Downstream, dns: LocalDnsServer
) -> None:
    """The same reply for an open and a closed port: nothing to scan ports with."""
    dns.zone["open.customer.test"] = {"A": ["127.0.0.1"]}
    dns.zone["closed.customer.test"] = {"A": ["93.184.216.34"], "AAAA": ["::1"]}
    room = await make_mailroom(resolver=resolver(dns), downstream_allow_private=False)
    shut = closed_port()
    await room.route(
        mx(downstream.port, priority=10, target="open.customer.test"),
        mx(shut, priority=20, target="closed.customer.test"),
    )
    message_id = await room.send(message())
    record = await room.wait_state(message_id, "deferred")
    await asyncio.sleep(0.3)
    assert downstream.connections == 0 and downstream.messages == []
    first, second = record["deliveryAttempts"][:2]
    assert first["outcome"] == second["outcome"] == "unreachable"
    assert first["reply"] == (
        f"451 4.7.0 open.customer.test:{downstream.port} {REFUSED}: 127.0.0.1 is a "
        "loopback address; private or loopback targets are not allowed by the operator"
    )
    assert second["reply"] == (
        f"451 4.7.0 closed.customer.test:{shut} {REFUSED}: ::1 is a "
        "loopback address; private or loopback targets are not allowed by the operator"
    )


async def test_an_inside_literal_set_while_allowed_is_refused_when_no_longer_allowed(
    make_mailroom: MailroomFactory, downstream: Downstream
) -> None:
    room = await make_mailroom(downstream_allow_private=False)
    await room.route(mx(downstream.port, target="::ffff:127.0.0.1"))
    message_id = await room.send(message())
    record = await room.wait_state(message_id, "deferred")
    assert REFUSED in replies(record)[0] and "(127.0.0.1) is a loopback" in replies(record)[0]
    assert downstream.connections == 0


@pytest.mark.parametrize("target", ["127.0.0.1", "0.0.0.0", "::ffff:127.0.0.1", "loop.test"])
async def test_mailmoats_own_smtp_listener_is_refused_even_when_inside_is_allowed(
    make_mailroom: MailroomFactory, dns: LocalDnsServer, target: str
) -> None:
    """Mail handed to mailmoat's own listener would come back to the same queue."""
    dns.zone["loop.test"] = {"A": ["127.0.0.1"]}
    room = await make_mailroom(resolver=resolver(dns))  # the fixture allows inside targets
    await room.route(mx(room.gateway.port, target=target))
    message_id = await room.send(message(), sender="alice@sender.test")
    record = await room.wait_state(message_id, "deferred")
    await asyncio.sleep(0.3)
    assert "own SMTP listener (mail would loop)" in replies(record)[0]
    assert replies(record)[0].startswith("451 4.4.6")
    assert len(await room.gateway.messages()) == 1  # nothing came back in


async def test_mailmoats_own_host_name_at_its_smtp_port_is_refused(
    make_mailroom: MailroomFactory, dns: LocalDnsServer, downstream: Downstream
) -> None:
    """Listening on every address, mailmoat knows itself by what its name resolves to."""
    dns.zone["mx.gateway.test"] = {"A": ["93.184.216.77"]}
    dns.zone["alias.customer.test"] = {"A": ["93.184.216.77"]}
    room = await make_mailroom(resolver=resolver(dns), smtp_listen=f"0.0.0.0:{downstream.port}")
    await room.route(mx(downstream.port, target="alias.customer.test"))
    message_id = await room.send(message())
    record = await room.wait_state(message_id, "deferred")
    assert "93.184.216.77 port" in replies(record)[0]
    assert "own SMTP listener" in replies(record)[0]
    assert ("mx.gateway.test", "A") in dns.queries


async def test_no_dsn_goes_to_a_senders_mail_server_on_loopback(
    make_mailroom: MailroomFactory, dns: LocalDnsServer
) -> None:
    """A forged sender whose MX is 127.0.0.1: the bounce is not sent there."""
    dns.zone["forged.test"] = {"MX": [(10, "mx.forged.test")]}
    dns.zone["mx.forged.test"] = {"A": ["127.0.0.1"]}
    room = await make_mailroom(
        resolver=resolver(dns),
        dsn_relay="",
        downstream_allow_private=False,
        delivery_lifetime=0.5,
    )
    await room.route(mx(closed_port(), target="10.0.0.1"))
    message_id = await room.send(message(), sender="victim@forged.test")
    await room.wait_state(message_id, "failed")
    (dsn,) = [m for m in await room.gateway.messages() if m["relatedId"] == message_id]
    record = await room.wait_state(dsn["id"], "deferred", "failed")
    assert replies(record)[0] == (
        f"451 4.7.0 mx.forged.test:25 {REFUSED}: 127.0.0.1 is a loopback address; "
        "private or loopback targets are not allowed by the operator"
    )
    assert ("mx.forged.test", "A") in dns.queries
