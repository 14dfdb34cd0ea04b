"""The address policy as a pure decision: an address (or host) and port in, a reason out."""

from __future__ import annotations

import pytest

from mailmoat.domain.addresses import AddressPolicy

STRICT = AddressPolicy()
ALLOWING = AddressPolicy(allow_private=True)
ME = AddressPolicy(
    own_names=frozenset({"mx.gateway.test"}),
    own_addresses=frozenset({"93.184.216.99", "10.0.0.5"}),
    smtp_listeners=frozenset({("0.0.0.0", 25)}),
)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "0.0.0.0",
        "::",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",  # shared address space
        "169.254.169.254",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::7f00:1",
        "64:ff9b::a00:1",
        "2002:7f00:1::1",
        "224.0.0.1",
        "ff02::1",
        "255.255.255.255",
    ],
)
def test_inside_addresses_are_refused_unless_allowed(address: str) -> None:
    refusal = STRICT.address_refusal(address, 25)
    assert refusal is not None and "not allowed by the operator" in str(refusal)
    assert not refusal.loop
    assert ALLOWING.address_refusal(address, 25) is None


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert STRICT.address_refusal(address, 25) is None
    assert STRICT.host_refusal(address, 25) is None


def test_own_listener_is_a_loop_even_when_inside_is_allowed() -> None:
    allowing = ME.allowing(True)
    for address in ("127.0.0.1", "0.0.0.0", "::ffff:127.0.0.1", "93.184.216.99", "10.0.0.5"):
        refusal = allowing.address_refusal(address, 25)
        assert refusal is not None and refusal.loop, address
        assert allowing.address_refusal(address, 2525) is None
    refusal = allowing.address_refusal("93.184.216.1", 25, own=["93.184.216.1"])
    assert refusal is not None and refusal.loop
    assert allowing.address_refusal("93.184.216.1", 25) is None


def test_a_listener_on_one_address_is_only_that_address() -> None:
    policy = AddressPolicy(allow_private=True, smtp_listeners=frozenset({("127.0.0.1", 2525)}))
    assert policy.address_refusal("127.0.0.1", 2525) is not None
    assert policy.address_refusal("0.0.0.0", 2525) is not None  # connects to 127.0.0.1
    assert policy.address_refusal("127.0.0.2", 2525) is None
    assert policy.address_refusal("::1", 2525) is None


def test_own_addresses_and_names_are_refused_unless_allowed() -> None:
    refusal = ME.address_refusal("93.184.216.99", 8080)
    assert refusal is not None and "mailmoat itself" in str(refusal)
    refusal = ME.host_refusal("MX.Gateway.Test.", 8080)
    assert refusal is not None and "own host name" in str(refusal)
    refusal = ME.allowing(True).host_refusal("mx.gateway.test", 25)
    assert refusal is not None and refusal.loop
    assert ME.allowing(True).host_refusal("mx.gateway.test", 8080) is None


def test_names_are_judged_by_what_they_say_until_they_are_resolved() -> None:
    assert STRICT.host_refusal("mx.customer.example", 25) is None
    for name in ("localhost", "mail.localhost.", "localhost.localdomain"):
        assert STRICT.host_refusal(name, 25) is not None
        assert ALLOWING.host_refusal(name, 25) is None
    assert STRICT.host_refusal("[::1]", 25) is not None


def test_targets_the_operator_set_are_only_refused_as_loops() -> None:
    assert ME.address_refusal("127.0.0.1", 2525, operator=True) is None
    assert ME.host_refusal("10.0.0.1", 2525, operator=True) is None
    refusal = ME.address_refusal("127.0.0.1", 25, operator=True)
    assert refusal is not None and refusal.loop
