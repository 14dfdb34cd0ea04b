"""Parsing of domains, email addresses and IPs (mailmoat.domain.names)."""

from __future__ import annotations

import ipaddress

import pytest

from mailmoat.domain.names import (
    InvalidName,
    is_ip_literal,
    parse_domain,
    parse_email,
    parse_ip_or_network,
)

LABEL_63 = "a" * 63
# 3 labels of 63 + 1 label of 61 + 3 dots = 253 characters: the longest legal name.
LONGEST = ".".join([LABEL_63, LABEL_63, LABEL_63, "b" * 61])


@pytest.mark.parametrize(
    ("raw", "ascii_form", "unicode_form"),
    [
        ("example.com", "example.com", "example.com"),
        ("Example.COM", "example.com", "example.com"),
        ("  example.com  ", "example.com", "example.com"),
        ("mail.sub.example.co.uk", "mail.sub.example.co.uk", "mail.sub.example.co.uk"),
        ("bücher.example", "xn--bcher-kva.example", "bücher.example"),
        ("BÜCHER.example", "xn--bcher-kva.example", "bücher.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example", "bücher.example"),
        ("XN--BCHER-KVA.EXAMPLE", "xn--bcher-kva.example", "bücher.example"),
        ("münchen.de", "xn--mnchen-3ya.de", "münchen.de"),
        ("例え.jp", "xn--r8jz45g.jp", "例え.jp"),
        ("xn--r8jz45g.jp", "xn--r8jz45g.jp", "例え.jp"),
        ("a-b.example", "a-b.example", "a-b.example"),
        ("123.example", "123.example", "123.example"),
        (f"{LABEL_63}.example", f"{LABEL_63}.example", f"{LABEL_63}.example"),
        (LONGEST, LONGEST, LONGEST),
    ],
)
def test_parse_domain_gives_both_forms(raw: str, ascii_form: str, unicode_form: str) -> None:
    name = parse_domain(raw)
    assert name.ascii == ascii_form
    assert name.unicode == unicode_form
    assert str(name) == unicode_form


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "localhost",
        "example.",
        ".example.com",
        "a..example.com",
        "exa mple.com",
        "exa\tmple.com",
        "exa\nmple.com",
        "exa\x00mple.com",
        "-bad.example",
        "bad-.example",
        "under_score.example",
        "*.example.com",
        "user@example.com",
        "example.123",
        "192.0.2.1",
        "http://example.com",
        f"{'a' * 64}.example",
        LONGEST + "c",
        "xn--.example",
        "ab--cd.example",
        "xn--zz-invalid-punycode-.example",
    ],
)
def test_parse_domain_rejects(raw: str) -> None:
    with pytest.raises(InvalidName):
        parse_domain(raw)


@pytest.mark.parametrize("raw", [None, 42, b"example.com"])
def test_parse_domain_rejects_non_strings(raw: object) -> None:
    with pytest.raises(InvalidName):
        parse_domain(raw)  # type: ignore[arg-type]


def test_trailing_dot_only_when_allowed() -> None:
    assert parse_domain("mx.example.com.", allow_trailing_dot=True).ascii == "mx.example.com"
    with pytest.raises(InvalidName):
        parse_domain("mx.example.com.")


def test_invalid_name_is_a_value_error() -> None:
    # Callers that only know ValueError still catch bad names.
    with pytest.raises(ValueError):
        parse_domain("not a domain")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("user@example.com", "user@example.com"),
        ("User@Example.COM", "user@example.com"),
        (" user@example.com ", "user@example.com"),
        ("first.last@example.com", "first.last@example.com"),
        ("user+tag@example.com", "user+tag@example.com"),
        ("o'brien@example.com", "o'brien@example.com"),
        ("user@bücher.example", "user@xn--bcher-kva.example"),
        ("user@xn--bcher-kva.example", "user@xn--bcher-kva.example"),
        ("Jörg@bücher.example", "jörg@xn--bcher-kva.example"),
        (f"{'a' * 64}@example.com", f"{'a' * 64}@example.com"),
    ],
)
def test_parse_email_normalises(raw: str, expected: str) -> None:
    address = parse_email(raw)
    assert address.ascii == expected
    assert str(address) == expected


def test_parse_email_keeps_the_local_part_as_written() -> None:
    address = parse_email("John.Doe@Bücher.EXAMPLE")
    assert address.ascii == "john.doe@xn--bcher-kva.example"  # who the user is
    assert address.as_given == "John.Doe@xn--bcher-kva.example"  # where mail goes


def test_parse_email_keeps_both_domain_forms() -> None:
    address = parse_email("info@Bücher.example")
    assert address.local == "info"
    assert address.domain.ascii == "xn--bcher-kva.example"
    assert address.domain.unicode == "bücher.example"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "user",
        "@example.com",
        "user@",
        "user@@example.com",
        "us er@example.com",
        ".user@example.com",
        "user.@example.com",
        "us..er@example.com",
        '"quoted"@example.com',
        "user(comment)@example.com",
        "user@localhost",
        "user@exa mple.com",
        "user@-bad.example",
        f"{'a' * 65}@example.com",
        "<user@example.com>",
        "user@example.com, other@example.com",
    ],
)
def test_parse_email_rejects(raw: str) -> None:
    with pytest.raises(InvalidName):
        parse_email(raw)


@pytest.mark.parametrize("raw", [None, 7])
def test_parse_email_rejects_non_strings(raw: object) -> None:
    with pytest.raises(InvalidName):
        parse_email(raw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("192.0.2.1", "192.0.2.1/32"),
        ("192.0.2.0/24", "192.0.2.0/24"),
        ("192.0.2.77/24", "192.0.2.0/24"),
        ("2001:db8::1", "2001:db8::1/128"),
        ("2001:DB8:0:0::/32", "2001:db8::/32"),
        (" 10.0.0.0/8 ", "10.0.0.0/8"),
    ],
)
def test_parse_ip_or_network(raw: str, expected: str) -> None:
    assert parse_ip_or_network(raw) == ipaddress.ip_network(expected)


@pytest.mark.parametrize("raw", ["", "256.0.0.1", "1.2.3", "192.0.2.0/33", "2001:db8::/129", "x"])
def test_parse_ip_or_network_rejects(raw: str) -> None:
    with pytest.raises(InvalidName):
        parse_ip_or_network(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("192.0.2.1", True),
        ("2001:db8::1", True),
        (" 192.0.2.1 ", True),
        ("192.0.2.0/24", False),
        ("[192.0.2.1]", False),
        ("mx.example.com", False),
        ("", False),
    ],
)
def test_is_ip_literal(raw: str, expected: bool) -> None:
    assert is_ip_literal(raw) is expected
