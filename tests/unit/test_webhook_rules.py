"""The pure rules of webhook routing: tokens, custom-domain keys, patterns, targets."""

from __future__ import annotations

import pytest

from mailmoat.domain.names import InvalidName
from mailmoat.domain.webhooks import (
    REASON_MAX_SIZE,
    REASON_WEBHOOK_DELAYED,
    REASON_WEBHOOK_REJECTED,
    StatusCategory,
    address_token,
    category_of,
    compile_pattern,
    custom_domain_keys,
    is_public_address,
    parse_custom_domain,
    parse_target,
    pattern_allows,
)


def test_plus_addressing_reaches_the_token() -> None:
    assert address_token("3B7E51+orders-12") == "3b7e51"
    assert address_token("3b7e51") == "3b7e51"


def test_custom_domain_keys_are_exact_then_one_wildcard_level() -> None:
    assert custom_domain_keys("eu.example.org") == ("eu.example.org", "*.example.org")
    assert custom_domain_keys("example.org") == ("example.org",)


def test_wildcard_custom_domains() -> None:
    wildcard = parse_custom_domain("*.Example.ORG")
    assert wildcard.wildcard and wildcard.ascii == "*.example.org"
    with pytest.raises(InvalidName):
        parse_custom_domain("a.*.example.org")


@pytest.mark.parametrize(
    ("pattern", "local", "allowed"),
    [
        (None, "anything", True),
        (r"^(support|sales)$", "support", True),
        (r"^(support|sales)$", "SALES", True),
        (r"^(support|sales)$", "supportx", False),
        (r"support", "support-team", False),  # the whole local part must match
        (r"^(support|sales)(\+.*)?$", "sales+eu", True),
    ],
)
def test_patterns_match_the_whole_local_part(
    pattern: str | None, local: str, allowed: bool
) -> None:
    assert pattern_allows(pattern, local) is allowed


@pytest.mark.parametrize(
    "pattern", [r"(a)\1", "(?=a)a", "(?<!x)a", "a++", "(", "x{1001}", r"\pL{1000}", "a" * 501]
)
def test_patterns_without_a_linear_time_match_are_refused(pattern: str) -> None:
    with pytest.raises(InvalidName):
        compile_pattern(pattern)


@pytest.mark.parametrize(
    ("pattern", "local", "allowed"),
    [
        ("(a+)+", "a" * 5000 + "!", False),
        ("(a*)*b", "a" * 5000, False),
        ("(x|xx)+y", "x" * 5000, False),
        ("(?:a?){26}a{26}", "a" * 40, True),
        ("(a?){30}a{30}", "a" * 5000, False),
        (r"^(support|sales)\Z", "Sales", True),  # Python's end of text, as RE2 writes it
        (r"[a-z]+\\Z", "abc\\Z", True),  # an escaped backslash, then Z
        (r"caf.", "CAFÉ", True),
    ],
)
def test_any_pattern_re2_compiles_matches_in_linear_time(
    pattern: str, local: str, allowed: bool
) -> None:
    assert pattern_allows(pattern, local) is allowed


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("100.64.0.1", False),  # shared address space
        ("169.254.169.254", False),  # link-local, cloud metadata
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::7f00:1", False),  # IPv4-compatible loopback
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b::5db8:d822", True),  # NAT64 of a public address
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("224.0.0.1", False),
        ("not an address", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def test_targets() -> None:
    target = parse_target("https://user:p%40ss@Hooks.Example.net:8443/in?x=1")
    assert (target.host, target.port, target.scheme) == ("hooks.example.net", 8443, "https")
    assert target.shown == "https://hooks.example.net:8443/in?x=1"
    assert parse_target("http://example.net").port == 80


@pytest.mark.parametrize(
    "raw",
    [
        "ftp://example.net/",
        "http:///x",
        "http://example.net:0/",
        "http://example.net/#frag",
        "http://[::1",
        "http://exa mple.net/",
        "",
        "http://example.net:99999/",
    ],
)
def test_bad_targets(raw: str) -> None:
    with pytest.raises(InvalidName):
        parse_target(raw)


@pytest.mark.parametrize(
    ("state", "reason", "category"),
    [
        ("delivered", "spam-score", StatusCategory.SUCCESSFUL),
        ("queued", "", StatusCategory.DELAYED),
        ("deferred", "", StatusCategory.DELAYED),
        ("rejected", REASON_WEBHOOK_DELAYED, StatusCategory.DELAYED),
        ("rejected", REASON_WEBHOOK_REJECTED, StatusCategory.REJECTED),
        ("failed", "", StatusCategory.REJECTED),
        ("rejected", REASON_MAX_SIZE, StatusCategory.MAX_SIZE),
    ],
)
def test_status_categories(state: str, reason: str, category: StatusCategory) -> None:
    assert category_of(state, reason) is category
