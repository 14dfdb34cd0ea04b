"""Where mail goes: downstream targets and DSN recipients' MX, through a local DNS server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailmoat.delivery.destinations import Candidate, Destinations, Unresolvable
from mailmoat.domain.addresses import AddressPolicy
from mailmoat.pipeline.dns import DnsResolver
from tests.dnsserver import LocalDnsServer

ZONE = {
    "sender.test": {"MX": [(20, "mx2.sender.test"), (10, "mx1.sender.test")]},
    "mx1.sender.test": {"A": ["192.0.2.1"], "AAAA": ["2001:db8::1"]},
    "mx2.sender.test": {"A": ["192.0.2.2"]},
    "nomx.test": {"A": ["192.0.2.3"]},
    "nullmx.test": {"MX": [(0, ".")]},
}


@pytest.fixture
def dns() -> Iterator[LocalDnsServer]:
    with LocalDnsServer(dict(ZONE)) as server:
        yield server


@pytest.fixture
def destinations(dns: LocalDnsServer) -> Destinations:
    # 192.0.2.0/24 and 2001:db8::/32 are documentation ranges, not public ones.
    return Destinations(
        DnsResolver(dns.servers, timeout=0.5),
        mx_port=2525,
        policy=AddressPolicy(allow_private=True),
    )


async def test_dsns_go_to_the_mx_hosts_in_preference_order(destinations: Destinations) -> None:
    candidates = await destinations.for_dsn("alice@sender.test")
    assert candidates == [Candidate("mx1.sender.test", 2525), Candidate("mx2.sender.test", 2525)]
    servers = await destinations.resolve(candidates[0])
    assert [(s.address, s.port) for s in servers] == [("192.0.2.1", 2525), ("2001:db8::1", 2525)]
    assert str(servers[0]) == "mx1.sender.test[192.0.2.1]:2525"


async def test_a_domain_without_mx_is_its_own_mail_host(destinations: Destinations) -> None:
    assert await destinations.for_dsn("a@nomx.test") == [Candidate("nomx.test", 2525)]


async def test_a_null_mx_refuses_dsns_for_good(destinations: Destinations) -> None:
    with pytest.raises(Unresolvable) as refused:
        await destinations.for_dsn("a@nullmx.test")
    assert refused.value.permanent and refused.value.reply.startswith("556 5.1.10")


async def test_a_relay_takes_every_dsn(dns: LocalDnsServer) -> None:
    relayed = Destinations(DnsResolver(dns.servers, timeout=0.5), dsn_relay=("127.0.0.1", 2526))
    assert await relayed.for_dsn("alice@sender.test") == [Candidate("127.0.0.1", 2526)]
    assert dns.queries == []


async def test_names_without_addresses_and_silent_servers_are_temporary(
    dns: LocalDnsServer, destinations: Destinations
) -> None:
    with pytest.raises(Unresolvable) as missing:
        await destinations.resolve(Candidate("nowhere.test.", 25))
    assert missing.value.reply.startswith("451 4.4.4") and not missing.value.permanent
    dns.timeouts.add("slow.test")
    with pytest.raises(Unresolvable) as slow:
        await destinations.resolve(Candidate("slow.test.", 25))
    assert slow.value.reply.startswith("451 4.4.3")


async def test_answers_are_cached_for_a_while(
    dns: LocalDnsServer, destinations: Destinations
) -> None:
    for _ in range(3):
        await destinations.resolve(Candidate("mx2.sender.test.", 25))
    assert dns.queries.count(("mx2.sender.test", "A")) == 1


async def test_ip_literals_need_no_lookup(dns: LocalDnsServer, destinations: Destinations) -> None:
    (server,) = await destinations.resolve(Candidate("[2001:db8::9]", 25))
    assert server.address == "2001:db8::9"
    assert dns.queries == []


async def test_a_dsn_to_a_domain_without_any_mail_host_fails_for_good(
    destinations: Destinations,
) -> None:
    with pytest.raises(Unresolvable) as refused:
        await destinations.for_dsn("someone@nonexistent.test")
    assert refused.value.permanent and refused.value.reply.startswith("550 5.1.2")


async def test_a_failing_mx_lookup_for_a_dsn_is_temporary(
    dns: LocalDnsServer, destinations: Destinations
) -> None:
    dns.timeouts.add("broken.test")
    with pytest.raises(Unresolvable) as later:
        await destinations.for_dsn("someone@broken.test")
    assert not later.value.permanent and later.value.reply.startswith("451 4.4.3")
