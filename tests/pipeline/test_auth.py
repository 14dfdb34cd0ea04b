"""SPF, DKIM and DMARC checks against a DNS server on loopback that the test fills."""

from __future__ import annotations

import asyncio
import re
import time

import authres
import authres.dmarc
import dkim
import pytest

from mailmoat.pipeline.auth import AuthResult, SenderAuthenticator, organizational_domain
from mailmoat.pipeline.dns import DnsResolver, DnsTempError, parse_dns_servers
from tests import dnsserver
from tests.dkim_keys import Key, sign, signature
from tests.dnsserver import LocalDnsServer

TIMEOUT = 0.25  # per attempt; a lookup gives up after twice that
GOOD_IP = "192.0.2.10"
BAD_IP = "203.0.113.66"

dns_server = dnsserver.fixture()


@pytest.fixture(autouse=True)
def _loopback_dns_only(monkeypatch: pytest.MonkeyPatch) -> None:
    dnsserver.forbid_other_dns(monkeypatch)


@pytest.fixture
def resolver(dns_server: LocalDnsServer) -> DnsResolver:
    return DnsResolver(dns_server.servers, timeout=TIMEOUT)


@pytest.fixture
def authenticator(resolver: DnsResolver) -> SenderAuthenticator:
    return SenderAuthenticator(resolver, "mx.gateway.test")


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Key:
    return Key(tmp_path_factory.mktemp("dkim"))  # 2048 bits: a record over 255 bytes


def message(author: str = "Alice <alice@example.test>", body: bytes = b"Hello Bob.\r\n") -> bytes:
    head = (
        f"From: {author}\r\n"
        "To: bob@customer.test\r\n"
        "Subject: quarterly report\r\n"
        "Date: Mon, 06 Jan 2025 10:00:00 +0000\r\n"
        "Message-ID: <1@example.test>\r\n\r\n"
    )
    return head.encode() + body


def publish_key(server: LocalDnsServer, key: Key, domain: str, selector: str = "sel") -> None:
    server.zone[f"{selector}._domainkey.{domain}"] = {"TXT": [key.record]}


def publish(server: LocalDnsServer, name: str, rtype: str, *values: object) -> None:
    server.zone.setdefault(name, {}).setdefault(rtype, []).extend(values)


async def check(
    authenticator: SenderAuthenticator,
    raw: bytes | None = None,
    *,
    ip: str = GOOD_IP,
    helo: str = "mail.example.test",
    mail_from: str = "alice@example.test",
) -> AuthResult:
    return await authenticator.check(
        message() if raw is None else raw, client_ip=ip, helo=helo, mail_from=mail_from
    )


def parse_header(value: str) -> authres.AuthenticationResultsHeader:
    return authres.FeatureContext(authres.dmarc).parse_value(value)


def methods(value: str) -> list[tuple[str, str]]:
    return [(result.method, result.result) for result in parse_header(value).results]


# SPF ---------------------------------------------------------------------------------


async def test_spf_pass_for_an_authorised_address(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator
) -> None:
    publish(
        dns_server,
        "example.test",
        "TXT",
        "google-site-verification=x",
        "v=spf1 ip4:192.0.2.0/24 -all",
    )
    result = await check(authenticator)
    assert result.spf == "pass"
    assert "spf=pass smtp.mailfrom=alice@example.test" in result.header_value


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("v=spf1 ip4:192.0.2.0/24 -all", "fail"),
        ("v=spf1 ip4:192.0.2.0/24 ~all", "softfail"),
        ("v=spf1 ip4:192.0.2.0/24 ?all", "neutral"),
    ],
)
async def test_spf_result_for_an_address_not_listed(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator, record: str, expected: str
) -> None:
    publish(dns_server, "example.test", "TXT", record)
    assert (await check(authenticator, ip=BAD_IP)).spf == expected
    assert (await check(authenticator, ip=GOOD_IP)).spf == "pass"


async def test_spf_follows_include(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator
) -> None:
    publish(dns_server, "example.test", "TXT", "v=spf1 include:_spf.provider.test -all")
    publish(
        dns_server, "_spf.provider.test", "TXT", "v=spf1 ip4:198.51.100.0/24 ip6:2001:db8::/32 -all"
    )
    assert (await check(authenticator, ip="198.51.100.7")).spf == "pass"
    assert (await check(authenticator, ip="2001:db8::25")).spf == "pass"
    assert (await check(authenticator, ip=BAD_IP)).spf == "fail"


async def test_spf_a_and_mx_mechanisms(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator
) -> None:
    publish(dns_server, "example.test", "TXT", "v=spf1 mx a:out.example.test -all")
    publish(dns_server, "example.test", "MX", (10, "mx1.example.test"), (20, "mx2.example.test"))
    publish(dns_server, "mx2.example.test", "A", "192.0.2.20")
    publish(dns_server, "mx1.example.test", "A", "192.0.2.21")
    publish(dns_server, "out.example.test", "CNAME", "relay.provider.test")
    publish(dns_server, "relay.provider.test", "A", "198.51.100.30")
    assert (await check(authenticator, ip="192.0.2.20")).spf == "pass"
    assert (await check(authenticator, ip="198.51.100.30")).spf == "pass"
    assert (await check(authenticator, ip="192.0.2.22")).spf == "fail"


async def test_spf_none_without_a_record(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator
) -> None:
    publish(dns_server, "example.test", "TXT", "some-other-verification=1")
    assert (await check(authenticator)).spf == "none"
    assert (await check(authenticator, mail_from="alice@unknown.test")).spf == "none"


async def test_spf_permerror_past_the_void_lookup_limit(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator
) -> None:
    publish(
        dns_server,
        "example.test",
        "TXT",
        "v=spf1 a:n1.example.test a:n2.example.test a:n3.example.test ip4:192.0.2.0/24 -all",
    )
    assert (await check(authenticator)).spf == "permerror"


async def test_null_sender_is_checked_against_helo(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator
) -> None:
    publish(dns_server, "example.test", "TXT", "v=spf1 -all")
    publish(dns_server, "mail.example.test", "TXT", "v=spf1 ip4:192.0.2.10 -all")
    result = await check(authenticator, mail_from="", helo="mail.example.test")
    assert result.spf == "pass"
    assert ("example.test", "TXT") not in dns_server.queries
    assert "spf=pass smtp.helo=mail.example.test" in result.header_value
    assert (await check(authenticator, ip=BAD_IP, mail_from="")).spf == "fail"


async def test_null_sender_with_address_literal_helo_is_none(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator
) -> None:
    result = await check(authenticator, mail_from="", helo="[192.0.2.10]")
    assert result.spf == "none"
    assert not [
        query for query in dns_server.queries if query[1] == "TXT" and "_dmarc" not in query[0]
    ]


# DKIM --------------------------------------------------------------------------------


async def test_dkim_pass_with_a_long_key_record(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator, key: Key
) -> None:
    assert len(key.record) > 255
    publish_key(dns_server, key, "example.test")
    result = await check(authenticator, sign(message(), key, "example.test"))
    assert result.dkim == "pass"
    assert result.dkim_domains == ("example.test",)
    assert "dkim=pass header.d=example.test header.s=sel" in result.header_value


async def test_dkim_fails_when_the_body_changed_after_signing(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator, key: Key
) -> None:
    publish_key(dns_server, key, "example.test")
    signed = sign(message(), key, "example.test")
    result = await check(authenticator, signed.replace(b"Hello Bob.", b"Hello Eve."))
    assert result.dkim == "fail"
    assert result.dkim_domains == ()


async def test_dkim_fails_when_a_signed_header_changed(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator, key: Key
) -> None:
    publish_key(dns_server, key, "example.test")
    signed = sign(message(), key, "example.test")
    result = await check(authenticator, signed.replace(b"quarterly report", b"invoice"))
    assert result.dkim == "fail"


async def test_dkim_without_published_key_is_permerror(
    authenticator: SenderAuthenticator, key: Key
) -> None:
    result = await check(authenticator, sign(message(), key, "example.test"))
    assert result.dkim == "permerror"
    assert result.dkim_domains == ()


async def test_unsigned_message_is_dkim_none(authenticator: SenderAuthenticator) -> None:
    result = await check(authenticator)
    assert result.dkim == "none"
    assert "dkim=none" in result.header_value


@pytest.mark.parametrize(
    "signature",
    [
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.test; garbage\r\n",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=sel; h=from; bh=!!; b=@@\r\n",
        b"DKIM-Signature: \xff\xfe\x00;;;==\r\n",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=ex\xc3\xa4mple.test; s=sel; h=from; "
        b"bh=AAAA; b=AAAA\r\n",
    ],
)
async def test_garbage_signature_is_permerror(
    authenticator: SenderAuthenticator, signature: bytes
) -> None:
    result = await check(authenticator, signature + message())
    assert result.dkim == "permerror"
    parse_header(result.header_value)


async def test_one_valid_signature_among_several_passes(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator, key: Key
) -> None:
    publish_key(dns_server, key, "example.test")
    publish_key(dns_server, key, "mailer.test")
    stale = signature(message(body=b"An earlier draft.\r\n"), key, "mailer.test")
    raw = stale + signature(message(), key, "example.test") + message()
    result = await check(authenticator, raw)
    assert result.dkim == "pass"
    assert result.dkim_domains == ("example.test",)
    header = parse_header(result.header_value)
    assert [(r.result, r.header_d) for r in header.results if r.method == "dkim"] == [
        ("fail", "mailer.test"),
        ("pass", "example.test"),
    ]


async def test_dkim_verifies_a_message_with_a_field_folded_over_thousands_of_lines(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator, key: Key
) -> None:
    publish_key(dns_server, key, "example.test")
    fold = b"X-Folded: start\r\n" + b"".join(b"\tline %d\r\n" % n for n in range(22_000))
    signed = sign(message(), key, "example.test")
    result = await check(authenticator, fold + signed)  # not covered by the signature
    assert result.dkim == "pass"


async def test_dkim_relaxed_body_canonicalization(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator, key: Key
) -> None:
    publish_key(dns_server, key, "example.test")
    raw = message(body=b"Hello  Bob.\r\n" + b"A line\twith  blanks \r\n" * 5000 + b"\r\n\r\n")
    field = dkim.sign(
        raw, b"sel", b"example.test", key.private_pem, canonicalize=(b"relaxed", b"relaxed")
    )
    assert (await check(authenticator, field + raw)).dkim == "pass"
    respaced = raw.replace(b"Hello  Bob.", b"Hello \t Bob.  ")
    assert (await check(authenticator, field + respaced)).dkim == "pass"
    changed = raw.replace(b"Hello  Bob.", b"Hello  Eve.")
    assert (await check(authenticator, field + changed)).dkim == "fail"


async def test_a_large_relaxed_body_does_not_stall_the_event_loop(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator, key: Key
) -> None:
    publish_key(dns_server, key, "example.test")
    raw = message(body=b"a line of a large body with a few words \r\n" * 80_000)  # 3.4 MB
    field = dkim.sign(
        raw, b"sel", b"example.test", key.private_pem, canonicalize=(b"relaxed", b"relaxed")
    )
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    try:
        result = await check(authenticator, field + raw)
    finally:
        task.cancel()
    assert result.dkim == "pass"
    assert max(gaps) < 0.2


async def test_a_signature_full_of_white_space_costs_no_cpu_to_refuse(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator, key: Key
) -> None:
    publish_key(dns_server, key, "example.test")
    spaced = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=sel; h=from : to;\r\n"
        b" bh=AAAA; b=A" + b" " * 30_000 + b"!\r\n"
    )
    started = time.process_time()
    result = await check(authenticator, spaced + message())
    assert time.process_time() - started < 0.5  # CPU of this process, every thread
    assert result.dkim == "permerror"


async def test_a_signature_naming_thousands_of_fields_costs_no_cpu_to_refuse(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator, key: Key
) -> None:
    publish_key(dns_server, key, "example.test")
    names = [b"from", *(b"x%d" % n for n in range(1200))]
    field = dkim.sign(message(), b"sel", b"example.test", key.private_pem, include_headers=names)
    # dkimpy looks for each name from the bottom up, past every other field.
    fields = b"".join(b"%s: v\r\n" % name for name in names[1:]) + b"Y: v\r\n" * 20_000
    started = time.process_time()
    result = await check(authenticator, field + fields + message())
    assert time.process_time() - started < 0.5
    assert result.dkim == "permerror"


# DMARC -------------------------------------------------------------------------------


async def test_dmarc_passes_on_aligned_dkim_when_spf_fails(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator, key: Key
) -> None:
    publish(dns_server, "example.test", "TXT", "v=spf1 -all")
    publish(dns_server, "_dmarc.example.test", "TXT", "v=DMARC1; p=reject")
    publish_key(dns_server, key, "example.test")
    result = await check(authenticator, sign(message(), key, "example.test"))
    assert (result.spf, result.dkim, result.dmarc) == ("fail", "pass", "pass")
    assert result.dmarc_policy is None
    assert result.from_domain == "example.test"
    assert "dmarc=pass header.from=example.test" in result.header_value


async def test_dmarc_passes_on_relaxed_spf_alignment_unless_strict(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator
) -> None:
    publish(dns_server, "bounces.example.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    publish(dns_server, "_dmarc.example.test", "TXT", "v=DMARC1; p=reject")
    relaxed = await check(authenticator, mail_from="b-123@bounces.example.test")
    assert (relaxed.spf, relaxed.dmarc) == ("pass", "pass")
    dns_server.zone["_dmarc.example.test"] = {"TXT": ["v=DMARC1; p=reject; aspf=s"]}
    strict = await check(authenticator, mail_from="b-123@bounces.example.test")
    assert (strict.spf, strict.dmarc, strict.dmarc_policy) == ("pass", "fail", "reject")


async def test_dkim_alignment_honours_adkim(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator, key: Key
) -> None:
    publish_key(dns_server, key, "example.test")
    publish(dns_server, "_dmarc.news.example.test", "TXT", "v=DMARC1; p=quarantine")
    raw = sign(message("news@news.example.test"), key, "example.test")
    assert (await check(authenticator, raw, mail_from="")).dmarc == "pass"  # relaxed
    dns_server.zone["_dmarc.news.example.test"] = {"TXT": ["v=DMARC1; p=quarantine; adkim=s"]}
    strict = await check(authenticator, raw, mail_from="")
    assert (strict.dkim, strict.dmarc, strict.dmarc_policy) == ("pass", "fail", "quarantine")


@pytest.mark.parametrize("policy", ["reject", "quarantine", "none"])
async def test_dmarc_fail_reports_the_published_policy(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator, policy: str
) -> None:
    publish(dns_server, "example.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    publish(
        dns_server, "_dmarc.example.test", "TXT", f"v=DMARC1; p={policy}; rua=mailto:d@example.test"
    )
    result = await check(authenticator, ip=BAD_IP)
    assert (result.dmarc, result.dmarc_policy) == ("fail", policy)
    assert ("dmarc", "fail") in methods(result.header_value)


async def test_third_party_signature_does_not_align(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator, key: Key
) -> None:
    publish(dns_server, "_dmarc.example.test", "TXT", "v=DMARC1; p=reject")
    publish_key(dns_server, key, "mailer.test")
    result = await check(authenticator, sign(message(), key, "mailer.test"), mail_from="")
    assert (result.dkim, result.dmarc, result.dmarc_policy) == ("pass", "fail", "reject")


async def test_subdomain_policy_comes_from_sp(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator
) -> None:
    publish(dns_server, "_dmarc.example.test", "TXT", "v=DMARC1; p=reject; sp=quarantine")
    sub = await check(authenticator, message("news@news.example.test"), ip=BAD_IP)
    assert (sub.dmarc, sub.dmarc_policy, sub.from_domain) == (
        "fail",
        "quarantine",
        "news.example.test",
    )
    top = await check(authenticator, ip=BAD_IP)
    assert (top.dmarc, top.dmarc_policy) == ("fail", "reject")


async def test_policy_falls_back_to_the_organisational_domain(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator
) -> None:
    publish(dns_server, "_dmarc.example.test", "TXT", "v=DMARC1; p=reject")
    result = await check(authenticator, message("news@deep.news.example.test"), ip=BAD_IP)
    assert (result.dmarc, result.dmarc_policy) == ("fail", "reject")
    assert result.from_domain == "deep.news.example.test"
    dmarc_queries = [name for name, _ in dns_server.queries if name.startswith("_dmarc.")]
    assert dmarc_queries == ["_dmarc.deep.news.example.test", "_dmarc.example.test"]


async def test_own_record_of_a_subdomain_wins(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator
) -> None:
    publish(dns_server, "_dmarc.example.test", "TXT", "v=DMARC1; p=reject; sp=reject")
    publish(dns_server, "_dmarc.news.example.test", "TXT", "v=DMARC1; p=none")
    result = await check(authenticator, message("news@news.example.test"), ip=BAD_IP)
    assert (result.dmarc, result.dmarc_policy) == ("fail", "none")


def test_organizational_domain_uses_the_public_suffix_list() -> None:
    assert organizational_domain("deep.news.example.test") == "example.test"
    assert organizational_domain("example.test") == "example.test"
    assert organizational_domain("mail.example.co.uk") == "example.co.uk"
    assert organizational_domain("a.b.example.com") == "example.com"


@pytest.mark.parametrize(
    "records",
    [
        [],
        ["not a dmarc record"],
        ["v=DMARC1; p=reject", "v=DMARC1; p=none"],  # several: DMARC does not apply
        ["v=DMARC1; p=bogus"],  # invalid p= and no rua=
    ],
)
async def test_no_usable_dmarc_record_is_none(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator, records: list[str]
) -> None:
    publish(dns_server, "example.test", "TXT", "v=spf1 -all")
    if records:
        publish(dns_server, "_dmarc.example.test", "TXT", *records)
    result = await check(authenticator)
    assert (result.spf, result.dmarc, result.dmarc_policy) == ("fail", "none", None)
    assert result.from_domain == "example.test"


async def test_invalid_policy_with_reports_counts_as_p_none(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator
) -> None:
    publish(
        dns_server, "_dmarc.example.test", "TXT", "v=DMARC1; p=bogus; rua=mailto:d@example.test"
    )
    result = await check(authenticator, mail_from="")
    assert (result.dmarc, result.dmarc_policy) == ("fail", "none")


async def test_several_authors_get_the_strictest_failing_policy(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator
) -> None:
    publish(dns_server, "lax.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    publish(dns_server, "_dmarc.lax.test", "TXT", "v=DMARC1; p=none")
    publish(dns_server, "_dmarc.bank.test", "TXT", "v=DMARC1; p=reject")
    raw = message("a@lax.test").replace(
        b"From: a@lax.test\r\n", b"From: a@lax.test\r\nFrom: Bank <b@bank.test>\r\n"
    )
    result = await check(authenticator, raw, mail_from="a@lax.test")
    assert (result.dmarc, result.dmarc_policy, result.from_domain) == (
        "fail",
        "reject",
        "bank.test",
    )
    one_field = await check(
        authenticator, message("a@lax.test, b@bank.test"), mail_from="a@lax.test"
    )
    assert (one_field.dmarc, one_field.dmarc_policy) == ("fail", "reject")


async def test_no_from_header_is_dmarc_permerror(authenticator: SenderAuthenticator) -> None:
    result = await check(authenticator, b"Subject: no author\r\n\r\nbody\r\n")
    assert (result.dmarc, result.dmarc_policy, result.from_domain) == ("permerror", None, None)
    assert ("dmarc", "permerror") in methods(result.header_value)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\r\n\r\n", id="no-header"),
        pytest.param(b"no header at all, just text", id="text"),
        pytest.param(
            b"From alice@example.test Mon Jan  6 10:00:00 2025\r\nFrom: a@example.test\r\n\r\nx",
            id="mbox-from-line",
        ),
        pytest.param(b"From: a@example.test\r\nthis line has no colon\r\n\r\nbody", id="no-colon"),
        pytest.param(
            b"From: J\xc3\xb6rg <j@m\xc3\xbcller.test>\r\nSubject: \xff\xfe\r\n\r\n\xff",
            id="8bit",
        ),
        pytest.param(b"From: <>\r\n\r\n", id="empty-address"),
        pytest.param(b"From: undisclosed:;\r\n\r\n", id="group"),
        pytest.param(b"From: a@example.test\nSubject: bare LF\n\nbody\n", id="bare-lf"),
        pytest.param(b"From: " + b"x" * 100_000 + b"@example.test\r\n\r\n", id="long-line"),
        pytest.param(b"DKIM-Signature: v=1\r\n\x00\x01\x02", id="binary"),
    ],
)
async def test_malformed_messages_never_raise(
    authenticator: SenderAuthenticator, raw: bytes
) -> None:
    result = await check(authenticator, raw)
    assert result.dmarc in {"none", "permerror"}
    header = parse_header(result.header_value)
    assert [r.method for r in header.results] == ["spf", "dkim", "dmarc"]


async def test_u_label_author_domain_is_checked_in_a_label_form(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator
) -> None:
    publish(dns_server, "_dmarc.xn--mller-kva.test", "TXT", "v=DMARC1; p=reject")
    result = await check(authenticator, message("J\u00f6rg <j@m\u00fcller.test>"), mail_from="")
    assert (result.dmarc, result.from_domain) == ("fail", "xn--mller-kva.test")


# DNS failures ------------------------------------------------------------------------


async def test_spf_timeout_is_temperror_and_keeps_dmarc_from_failing(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator
) -> None:
    dns_server.timeouts.add("example.test")
    publish(dns_server, "_dmarc.example.test", "TXT", "v=DMARC1; p=reject")
    started = time.monotonic()
    result = await check(authenticator)
    assert time.monotonic() - started < 2.5
    assert (result.spf, result.dmarc, result.dmarc_policy) == ("temperror", "temperror", None)


async def test_dkim_key_timeout_is_temperror(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator, key: Key
) -> None:
    dns_server.timeouts.add("sel._domainkey.example.test")
    result = await check(authenticator, sign(message(), key, "example.test"), mail_from="")
    assert (result.dkim, result.dkim_domains) == ("temperror", ())


async def test_dmarc_record_timeout_is_temperror(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator
) -> None:
    dns_server.timeouts.add("_dmarc.example.test")
    publish(dns_server, "example.test", "TXT", "v=spf1 -all")
    started = time.monotonic()
    result = await check(authenticator)
    assert time.monotonic() - started < 2.5
    assert (result.spf, result.dmarc, result.dmarc_policy) == ("fail", "temperror", None)


async def test_check_does_not_block_the_event_loop(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator
) -> None:
    dns_server.timeouts.update({"example.test", "_dmarc.example.test"})
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await check(authenticator)  # two lookups that time out: about a second
    finally:
        task.cancel()
    assert ticks >= 10


# Authentication-Results --------------------------------------------------------------


async def test_header_value_is_well_formed(
    dns_server: LocalDnsServer, authenticator: SenderAuthenticator, key: Key
) -> None:
    publish(dns_server, "example.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    publish(dns_server, "_dmarc.example.test", "TXT", "v=DMARC1; p=reject")
    publish_key(dns_server, key, "example.test")
    result = await check(authenticator, sign(message(), key, "example.test"))
    assert result.header_value.startswith("mx.gateway.test; ")
    header = parse_header(result.header_value)
    assert header.authserv_id == "mx.gateway.test"
    spf, dkim_result, dmarc = header.results
    assert (spf.method, spf.result, spf.smtp_mailfrom) == ("spf", "pass", "alice@example.test")
    assert (dkim_result.result, dkim_result.header_d, dkim_result.header_s) == (
        "pass",
        "example.test",
        "sel",
    )
    assert (dmarc.method, dmarc.result, dmarc.header_from) == ("dmarc", "pass", "example.test")


@pytest.mark.parametrize(
    ("helo", "mail_from", "reported"),
    [
        ("evil.test\r\nX-Injected: yes", "", "evil.testX-Injected: yes"),
        ("evil.test\r\n\r\n<html>", "", "evil.test<html>"),
        (
            "mail.example.test",
            "x@evil.test\r\nAuthentication-Results: mx.gateway.test; dkim=pass",
            "x@evil.testAuthentication-Results: mx.gateway.test; dkim=pass",
        ),
        ("mail.example.test", "x;dkim=pass@evil.test", "x;dkim=pass@evil.test"),
        ("mail.example.test", '"a\\"; dkim=pass"@evil.test', '"a\\"; dkim=pass"@evil.test'),
        ("evil.test; dkim=pass header.d=bank.test", "", "evil.test; dkim=pass header.d=bank.test"),
        ("evil@test; dkim=pass", "", "evil@test; dkim=pass"),
    ],
)
async def test_smtp_identities_cannot_inject_into_the_header(
    authenticator: SenderAuthenticator, helo: str, mail_from: str, reported: str
) -> None:
    result = await check(authenticator, helo=helo, mail_from=mail_from)
    assert "\r" not in result.header_value and "\n" not in result.header_value
    header = parse_header(result.header_value)
    assert [(r.method, r.result) for r in header.results] == [
        ("spf", result.spf),
        ("dkim", "none"),
        ("dmarc", result.dmarc),
    ]
    spf = header.results[0]
    value = spf.smtp_mailfrom if mail_from else spf.smtp_helo
    assert re.sub(r"\\(.)", r"\1", value) == reported  # authres leaves quoted-pairs escaped


def test_authserv_id_must_be_a_host_name(resolver: DnsResolver) -> None:
    with pytest.raises(ValueError, match="authserv-id"):
        SenderAuthenticator(resolver, "mx.gateway.test\r\nX: y")


# The resolver --------------------------------------------------------------------------


def test_resolver_joins_long_txt_records_and_retries_over_tcp(
    dns_server: LocalDnsServer, resolver: DnsResolver
) -> None:
    long_value = "v=spf1 " + " ".join(f"ip4:192.0.2.{i}" for i in range(60)) + " -all"
    assert len(long_value) > 512
    publish(dns_server, "long.example.test", "TXT", long_value)
    assert resolver.txt("long.example.test") == [long_value.encode()]
    assert ("long.example.test", "TXT") in dns_server.tcp_queries


def test_resolver_dnsfunc_follows_dkimpy_contract(
    dns_server: LocalDnsServer, resolver: DnsResolver
) -> None:
    publish(dns_server, "sel._domainkey.example.test", "TXT", ["v=DKIM1; ", "p=abc"])
    publish(dns_server, "other.example.test", "A", "192.0.2.1")
    assert resolver.dnsfunc(b"sel._domainkey.example.test.", timeout=1) == b"v=DKIM1; p=abc"
    assert resolver.dnsfunc(b"missing._domainkey.example.test.") is None  # NXDOMAIN
    assert resolver.dnsfunc("other.example.test") is None  # no TXT at the name
    assert resolver.dnsfunc(b"bad name\r\n.example.test") is None
    assert resolver.dnsfunc(b"\xff.example.test") is None


def test_resolver_timeout_raises_dns_temp_error(
    dns_server: LocalDnsServer, resolver: DnsResolver
) -> None:
    dns_server.timeouts.add("slow.example.test")
    started = time.monotonic()
    with pytest.raises(DnsTempError):
        resolver.dnsfunc(b"slow.example.test.")
    assert time.monotonic() - started < 3 * TIMEOUT


def test_resolver_only_asks_the_configured_server(dns_server: LocalDnsServer) -> None:
    publish(dns_server, "example.test", "A", "192.0.2.1")
    resolver = DnsResolver(dns_server.servers, timeout=TIMEOUT)
    assert [r.address for r in resolver.query("example.test", "A")] == ["192.0.2.1"]
    assert dns_server.queries == [("example.test", "A")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("  ", None),
        ("127.0.0.1", [("127.0.0.1", 53)]),
        ("127.0.0.1:5353, ::1", [("127.0.0.1", 5353), ("::1", 53)]),
        ("[::1]:5353 [2001:db8::1]", [("::1", 5353), ("2001:db8::1", 53)]),
        ("2001:DB8::53", [("2001:db8::53", 53)]),
    ],
)
def test_parse_dns_servers(text: str, expected: list[tuple[str, int]] | None) -> None:
    assert parse_dns_servers(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "dns.example.test",
        "127.0.0.1:abc",
        "127.0.0.1:0",
        "127.0.0.1:70000",
        "[127.0.0.1]:53",
        "[::1",
        "[::1]x",
        "1.2.3",
    ],
)
def test_parse_dns_servers_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="invalid DNS server"):
        parse_dns_servers(text)


def test_resolver_rejects_an_empty_server_list() -> None:
    with pytest.raises(ValueError):
        DnsResolver([], timeout=1)


async def test_an_unforeseen_library_error_still_gives_a_result(
    authenticator: SenderAuthenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("library bug")

    monkeypatch.setattr(dkim, "DKIM", explode)  # caught per stage: DKIM cannot be checked
    assert (await check(authenticator, b"DKIM-Signature: v=1\r\n" + message())).dkim == "permerror"
    monkeypatch.setattr(authenticator, "_check", explode)  # caught at the top
    result = await check(authenticator)
    assert (result.spf, result.dkim, result.dmarc) == ("temperror", "temperror", "temperror")
    assert methods(result.header_value) == [
        ("spf", "temperror"),
        ("dkim", "temperror"),
        ("dmarc", "temperror"),
    ]
