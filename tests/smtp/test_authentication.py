"""SPF, DKIM and DMARC through real SMTP, against a DNS server on loopback the test fills.

The client connects from 127.0.0.1, so an SPF record with ``ip4:127.0.0.1`` authorises
it and one without denies it. The envelope sender and the From: header are both at
``sender.test`` (its own organisational domain: ``.test`` is not on the suffix list).
"""

from __future__ import annotations

import re
import time

import aiosmtplib
import authres
import pytest

from mailmoat.pipeline.auth import SenderAuthenticator
from mailmoat.pipeline.dns import DnsResolver
from tests import dkim_keys, dnsserver
from tests.api.helpers import assert_error
from tests.dkim_keys import Key
from tests.dnsserver import LocalDnsServer
from tests.smtp.conftest import DOMAIN, HOSTNAME, Gateway, GatewayFactory, message

SENDER = "alice@sender.test"
SENDER_DOMAIN = "sender.test"
SPF_PASS = "v=spf1 ip4:127.0.0.1 -all"
SPF_FAIL = "v=spf1 ip4:192.0.2.1 -all"  # 127.0.0.1 is not listed

dns_server = dnsserver.fixture()


@pytest.fixture(autouse=True)
def _loopback_dns_only(monkeypatch: pytest.MonkeyPatch) -> None:
    dnsserver.forbid_other_dns(monkeypatch)


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, dns_server: LocalDnsServer) -> Gateway:
    resolver = DnsResolver([("127.0.0.1", dns_server.port)], timeout=1.0)
    return await make_gateway(authenticator=SenderAuthenticator(resolver, HOSTNAME))


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Key:
    return Key(tmp_path_factory.mktemp("dkim"))


def sign(raw: bytes, key: Key, domain: str = SENDER_DOMAIN, selector: str = "sel") -> bytes:
    return dkim_keys.sign(raw, key, domain, selector)


def publish(
    server: LocalDnsServer,
    *,
    spf: str | None = None,
    dmarc: str | None = None,
    key: Key | None = None,
) -> None:
    if spf is not None:
        server.zone[SENDER_DOMAIN] = {"TXT": [spf]}
    if dmarc is not None:
        server.zone[f"_dmarc.{SENDER_DOMAIN}"] = {"TXT": [dmarc]}
    if key is not None:
        server.zone[f"sel._domainkey.{SENDER_DOMAIN}"] = {"TXT": [key.record]}


def auth_headers(raw: bytes) -> list[str]:
    """Every Authentication-Results value in the header block, unfolded."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    unfolded = re.sub(r"\r\n[ \t]+", " ", head)
    return [
        value.strip()
        for name, _, value in (line.partition(":") for line in unfolded.split("\r\n"))
        if name.strip().lower() == "authentication-results"
    ]


def own_header(raw: bytes) -> str:
    """mailmoat's Authentication-Results value; there must be exactly one."""
    ours = [v for v in auth_headers(raw) if v.lower().startswith(HOSTNAME)]
    assert len(ours) == 1, auth_headers(raw)
    return ours[0]


async def set_policy(gateway: Gateway, **settings: object) -> None:
    response = await gateway.api.put(f"/domains/{DOMAIN}/settings", json=settings)
    assert response.status_code == 200, response.text


def rule_names(record: dict[str, object]) -> set[str]:
    rules = record["rules"]
    assert isinstance(rules, list)
    return {rule["name"] for rule in rules}


async def test_spf_dkim_and_dmarc_pass_is_queued_with_one_header(
    gateway: Gateway, dns_server: LocalDnsServer, key: Key
) -> None:
    publish(dns_server, spf=SPF_PASS, dmarc="v=DMARC1; p=reject", key=key)
    raw = sign(message().encode(), key)
    errors, reply = await gateway.send(raw, sender=SENDER)
    assert errors == {}
    assert reply.startswith("2.0.0 Ok: queued as ")
    record = await gateway.only_message()
    assert (record["state"], record["action"], record["reason"]) == ("queued", "accept", "clean")
    assert not rule_names(record) & {"dmarc-reject", "dmarc-quarantine", "dmarc-none", "spf-fail"}
    kept = await gateway.raw(record["id"])
    assert len(auth_headers(kept)) == 1
    value = own_header(kept)
    assert re.fullmatch(
        r"mx\.gateway\.test; spf=pass smtp\.mailfrom=alice@sender\.test; "
        r"dkim=pass header\.d=sender\.test header\.s=sel; "
        r"dmarc=pass header\.from=sender\.test",
        value,
    ), value
    assert record["authenticationResults"] == value
    # The DNS server was really asked for each of the three.
    for name in (SENDER_DOMAIN, f"sel._domainkey.{SENDER_DOMAIN}", f"_dmarc.{SENDER_DOMAIN}"):
        assert (name, "TXT") in dns_server.queries
    assert kept.endswith(b"Shall we meet at noon at the usual place?\r\n")


@pytest.mark.parametrize("policy", ["block", "flag", "quarantine"])
async def test_dmarc_reject_is_refused_whatever_the_domain_policy(
    gateway: Gateway, dns_server: LocalDnsServer, policy: str
) -> None:
    publish(dns_server, spf=SPF_FAIL, dmarc="v=DMARC1; p=reject")
    await set_policy(gateway, abusePolicy=policy)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await gateway.send(message(), sender=SENDER)
    assert refused.value.code == 550
    assert "5.7.1" in refused.value.message
    assert "DMARC" in refused.value.message
    record = await gateway.only_message()
    assert (record["state"], record["action"], record["reason"]) == (
        "rejected",
        "block",
        "dmarc-reject",
    )
    assert {"dmarc-reject", "spf-fail"} <= rule_names(record)
    assert record["smtpReply"].startswith("550 5.7.1")
    results = record["authenticationResults"]
    assert "spf=fail" in results and "dkim=none" in results and "dmarc=fail" in results
    assert_error(await gateway.api.get(f"/messages/{record['id']}/raw"), 404)


async def test_dmarc_quarantine_under_quarantine_policy_is_quarantined(
    gateway: Gateway, dns_server: LocalDnsServer
) -> None:
    publish(dns_server, spf=SPF_FAIL, dmarc="v=DMARC1; p=quarantine")
    await set_policy(gateway, abusePolicy="quarantine")
    errors, reply = await gateway.send(message(), sender=SENDER)
    assert errors == {}
    assert reply.startswith("2.0.0 Ok: queued as ")  # the sender is not told
    record = await gateway.only_message()
    assert (record["state"], record["action"], record["reason"]) == (
        "quarantined",
        "quarantine",
        "dmarc-quarantine",
    )
    assert record["verdict"] == "ham"  # the content itself is fine
    value = own_header(await gateway.raw(record["id"]))
    assert "spf=fail" in value
    assert re.search(r"dmarc=fail\b.*policy\.dmarc=quarantine", value), value


async def test_dmarc_quarantine_under_flag_policy_is_queued_with_the_flag(
    gateway: Gateway, dns_server: LocalDnsServer
) -> None:
    publish(dns_server, spf=SPF_FAIL, dmarc="v=DMARC1; p=quarantine")
    await set_policy(
        gateway, abusePolicy="flag", spamHeaderName="X-Junk", spamHeaderValue="dmarc-failed"
    )
    errors, _ = await gateway.send(message(), sender=SENDER)
    assert errors == {}
    record = await gateway.only_message()
    assert (record["state"], record["action"], record["reason"]) == (
        "queued",
        "flag",
        "dmarc-quarantine",
    )
    kept = await gateway.raw(record["id"])
    assert b"\r\nX-Junk: dmarc-failed\r\n" in kept
    assert "dmarc=fail" in own_header(kept)


async def test_dmarc_quarantine_under_block_policy_is_refused(
    gateway: Gateway, dns_server: LocalDnsServer
) -> None:
    publish(dns_server, spf=SPF_FAIL, dmarc="v=DMARC1; p=quarantine")
    await set_policy(gateway, abusePolicy="block")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await gateway.send(message(), sender=SENDER)
    assert refused.value.code == 550
    assert "5.7.1" in refused.value.message
    assert "DMARC policy of sender.test is quarantine" in refused.value.message
    record = await gateway.only_message()
    assert (record["state"], record["action"], record["reason"]) == (
        "rejected",
        "block",
        "dmarc-quarantine",
    )


async def test_dmarc_none_is_only_recorded(gateway: Gateway, dns_server: LocalDnsServer) -> None:
    publish(dns_server, spf=SPF_FAIL, dmarc="v=DMARC1; p=none")
    await set_policy(gateway, abusePolicy="block")  # even the strictest policy lets it in
    errors, reply = await gateway.send(message(), sender=SENDER)
    assert errors == {}
    assert reply.startswith("2.0.0 Ok: queued as ")
    record = await gateway.only_message()
    assert (record["state"], record["action"], record["reason"]) == ("queued", "accept", "clean")
    assert {"dmarc-none", "spf-fail"} <= rule_names(record)
    value = own_header(await gateway.raw(record["id"]))
    assert "spf=fail" in value and "dmarc=fail" in value


async def test_broken_dkim_signature_still_passes_dmarc_through_aligned_spf(
    gateway: Gateway, dns_server: LocalDnsServer, key: Key
) -> None:
    publish(dns_server, spf=SPF_PASS, dmarc="v=DMARC1; p=reject", key=key)
    signed = sign(message().encode(), key)
    tampered = signed.replace(b"at noon", b"at midnight")
    assert tampered != signed
    errors, _ = await gateway.send(tampered, sender=SENDER)
    assert errors == {}
    record = await gateway.only_message()
    assert (record["state"], record["reason"]) == ("queued", "clean")
    assert "dmarc-reject" not in rule_names(record)
    value = own_header(await gateway.raw(record["id"]))
    assert "spf=pass smtp.mailfrom=alice@sender.test" in value
    assert "dkim=fail header.d=sender.test header.s=sel" in value
    assert "dmarc=pass header.from=sender.test" in value


async def test_broken_dkim_signature_without_spf_is_rejected(
    gateway: Gateway, dns_server: LocalDnsServer, key: Key
) -> None:
    """The counterpart of the test above: the broken signature alone does not pass."""
    publish(dns_server, spf=SPF_FAIL, dmarc="v=DMARC1; p=reject", key=key)
    tampered = sign(message().encode(), key).replace(b"at noon", b"at midnight")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await gateway.send(tampered, sender=SENDER)
    assert refused.value.code == 550
    record = await gateway.only_message()
    assert record["reason"] == "dmarc-reject"
    assert "dkim=fail" in record["authenticationResults"]


async def test_null_sender_is_checked_against_the_helo_name(
    gateway: Gateway, dns_server: LocalDnsServer
) -> None:
    publish(dns_server, spf=SPF_FAIL, dmarc="v=DMARC1; p=reject")
    dns_server.zone[f"mail.{SENDER_DOMAIN}"] = {"TXT": [SPF_PASS]}
    errors, _ = await gateway.send(message(), sender="", local_hostname=f"mail.{SENDER_DOMAIN}")
    assert errors == {}
    record = await gateway.only_message()
    assert (record["mailFrom"], record["clientHelo"]) == ("", f"mail.{SENDER_DOMAIN}")
    assert (record["state"], record["reason"]) == ("queued", "clean")
    value = own_header(await gateway.raw(record["id"]))
    assert "spf=pass smtp.helo=mail.sender.test" in value
    assert "dmarc=pass header.from=sender.test" in value  # relaxed alignment
    assert (SENDER_DOMAIN, "TXT") not in dns_server.queries


async def test_forged_header_for_this_host_is_removed_and_others_are_kept(
    gateway: Gateway, dns_server: LocalDnsServer
) -> None:
    publish(dns_server, spf=SPF_FAIL, dmarc="v=DMARC1; p=none")
    forged = (
        "Authentication-Results: mx.gateway.test; spf=pass smtp.mailfrom=alice@sender.test;\r\n"
        "\tdkim=pass header.d=bank.test; dmarc=pass header.from=bank.test\r\n"
        "Authentication-Results: MX.Gateway.Test; dkim=pass header.d=bank.test\r\n"
        "authentication-results :\r\n mx.gateway.test;\r\n\tdmarc=pass header.from=bank.test\r\n"
        "Authentication-Results: relay.elsewhere.test; spf=pass smtp.mailfrom=x@relay.test\r\n"
    )
    errors, _ = await gateway.send(message(extra_headers=forged), sender=SENDER)
    assert errors == {}
    record = await gateway.only_message()
    kept = await gateway.raw(record["id"])
    values = auth_headers(kept)
    assert len(values) == 2, values
    ours = own_header(kept)
    assert "spf=fail" in ours and "bank.test" not in ours
    assert "relay.elsewhere.test; spf=pass smtp.mailfrom=x@relay.test" in values
    assert b"bank.test" not in kept


async def test_forged_header_with_a_leading_comment_is_removed(
    gateway: Gateway, dns_server: LocalDnsServer
) -> None:
    publish(dns_server, spf=SPF_FAIL, dmarc="v=DMARC1; p=none")
    forged = "Authentication-Results: (trusted) mx.gateway.test; dkim=pass header.d=bank.test\r\n"
    errors, _ = await gateway.send(message(extra_headers=forged), sender=SENDER)
    assert errors == {}
    kept = await gateway.raw((await gateway.only_message())["id"])
    # A reader of the header (here authres, as a downstream filter would) takes it
    # for one of this host's.
    claimed = [authres.AuthenticationResultsHeader.parse_value(v) for v in auth_headers(kept)]
    assert [h.authserv_id for h in claimed].count(HOSTNAME) == 1, auth_headers(kept)


@pytest.mark.parametrize(
    ("unanswered", "zone", "spf", "dmarc"),
    [
        pytest.param(
            SENDER_DOMAIN,
            {f"_dmarc.{SENDER_DOMAIN}": {"TXT": ["v=DMARC1; p=reject"]}},
            "temperror",
            "temperror",
            id="spf-name",
        ),
        pytest.param(
            f"_dmarc.{SENDER_DOMAIN}",
            {SENDER_DOMAIN: {"TXT": [SPF_FAIL]}},
            "fail",
            "temperror",
            id="dmarc-name",
        ),
    ],
)
async def test_dns_timeout_gives_temperror_and_no_rejection(
    gateway: Gateway,
    dns_server: LocalDnsServer,
    unanswered: str,
    zone: dict[str, dict[str, list[str]]],
    spf: str,
    dmarc: str,
) -> None:
    dns_server.zone.update(zone)
    dns_server.timeouts.add(unanswered)
    await set_policy(gateway, abusePolicy="block")
    started = time.monotonic()
    errors, reply = await gateway.send(message(), sender=SENDER)
    elapsed = time.monotonic() - started
    assert errors == {}
    assert reply.startswith("2.0.0 Ok: queued as ")
    assert elapsed < 6, elapsed  # one lookup gives up after 2 s (twice the 1 s timeout)
    assert (unanswered, "TXT") in dns_server.queries
    record = await gateway.only_message()
    assert (record["state"], record["action"], record["reason"]) == ("queued", "accept", "clean")
    assert "dmarc-reject" not in rule_names(record)
    value = own_header(await gateway.raw(record["id"]))
    assert f"spf={spf}" in value
    assert f"dmarc={dmarc}" in value


async def test_safelisted_sender_skips_authentication(
    gateway: Gateway, dns_server: LocalDnsServer
) -> None:
    publish(dns_server, spf=SPF_FAIL, dmarc="v=DMARC1; p=reject")
    forged = "Authentication-Results: mx.gateway.test; dmarc=pass header.from=sender.test\r\n"
    with pytest.raises(aiosmtplib.SMTPDataError):  # unlisted, it is refused
        await gateway.send(message(extra_headers=forged), sender=SENDER)
    response = await gateway.api.post(f"/domains/{DOMAIN}/lists/safelist", json={"item": SENDER})
    assert response.status_code == 201, response.text
    dns_server.queries.clear()
    errors, reply = await gateway.send(message(extra_headers=forged), sender=SENDER)
    assert errors == {}
    assert reply.startswith("2.0.0 Ok: queued as ")
    record = (await gateway.messages(state="queued"))[0]
    assert (record["state"], record["verdict"], record["action"], record["reason"]) == (
        "queued",
        "unscanned",
        "accept",
        "domain-safelist",
    )
    assert record["authenticationResults"] is None
    assert dns_server.queries == []  # no SPF, DKIM or DMARC lookup at all
    kept = await gateway.raw(record["id"])
    # Not authenticated, so no header of mailmoat's; the forged one is still removed.
    assert auth_headers(kept) == []
