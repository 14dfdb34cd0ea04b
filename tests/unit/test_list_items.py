"""Safelist/blocklist items: type detection, normalisation, list names."""

from __future__ import annotations

import pytest

from mailmoat.domain.lists import ItemType, ListAction, ListName, parse_list_item
from mailmoat.domain.names import InvalidName

EMAIL, DOMAIN, IP = ItemType.EMAIL_ADDRESS, ItemType.DOMAIN, ItemType.IP_ADDRESS


@pytest.mark.parametrize(
    ("raw", "item", "item_type"),
    [
        ("sender@example.com", "sender@example.com", EMAIL),
        ("Sender@Example.COM", "sender@example.com", EMAIL),
        ("news+promo@bücher.example", "news+promo@xn--bcher-kva.example", EMAIL),
        ("example.com", "example.com", DOMAIN),
        ("Spam.EXAMPLE.com", "spam.example.com", DOMAIN),
        ("  example.org\t", "example.org", DOMAIN),
        ("bücher.example", "xn--bcher-kva.example", DOMAIN),
        ("xn--bcher-kva.example", "xn--bcher-kva.example", DOMAIN),
        ("123.example", "123.example", DOMAIN),
        ("192.0.2.1", "192.0.2.1", IP),
        ("10.0.0.0/8", "10.0.0.0/8", IP),
        ("192.0.2.77/24", "192.0.2.0/24", IP),
        ("192.0.2.1/32", "192.0.2.1/32", IP),
        ("2001:DB8::1", "2001:db8::1", IP),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1", IP),
        ("2001:db8:0:0::/32", "2001:db8::/32", IP),
        ("::1", "::1", IP),
    ],
)
def test_item_type_is_detected_and_normalised(raw: str, item: str, item_type: ItemType) -> None:
    value = parse_list_item(raw)
    assert (value.item, value.item_type) == (item, item_type)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "localhost",
        "not a domain",
        "user@",
        "@example.com",
        "us er@example.com",
        "256.1.1.1",
        "1.2.3",
        "12345",
        "192.0.2.0/33",
        "2001:db8::/129",
        "2001:db8:::1",
        "http://example.com",
        "*.example.com",
        "-bad.example",
    ],
)
def test_invalid_items_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidName):
        parse_list_item(raw)


def test_non_string_item_is_rejected() -> None:
    with pytest.raises(InvalidName):
        parse_list_item(None)  # type: ignore[arg-type]


def test_item_types_have_the_wire_names() -> None:
    assert {t.value for t in ItemType} == {"domain", "email_address", "ip_address"}


@pytest.mark.parametrize(
    ("name", "action"),
    [
        ("safelist", ListAction.SAFELIST),
        ("whitelist", ListAction.SAFELIST),
        ("blocklist", ListAction.BLOCKLIST),
        ("blacklist", ListAction.BLOCKLIST),
    ],
)
def test_deprecated_list_names_map_to_current_ones(name: str, action: ListAction) -> None:
    assert ListName(name).action is action
    assert action.value in ("safelist", "blocklist")


@pytest.mark.parametrize("name", ["greylist", "Safelist", "", "allowlist"])
def test_unknown_list_names(name: str) -> None:
    with pytest.raises(ValueError):
        ListName(name)
