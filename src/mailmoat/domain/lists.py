"""Safelist and blocklist entries: list names and item type detection."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailmoat.domain.names import InvalidName, parse_domain, parse_email, parse_ip_or_network


class ListAction(enum.StrEnum):
    SAFELIST = "safelist"
    BLOCKLIST = "blocklist"


class ListName(enum.StrEnum):
    """List names accepted in paths; whitelist/blacklist are deprecated spellings."""

    SAFELIST = "safelist"
    BLOCKLIST = "blocklist"
    WHITELIST = "whitelist"
    BLACKLIST = "blacklist"

    @property
    def action(self) -> ListAction:
        if self in (ListName.SAFELIST, ListName.WHITELIST):
            return ListAction.SAFELIST
        return ListAction.BLOCKLIST


class ItemType(enum.StrEnum):
    DOMAIN = "domain"
    EMAIL_ADDRESS = "email_address"
    IP_ADDRESS = "ip_address"


@dataclass(frozen=True, slots=True)
class ListItemValue:
    item: str
    item_type: ItemType


def parse_list_item(raw: str) -> ListItemValue:
    """Detect what a list item is and normalise it.

    Email addresses and domains are stored lower-case in A-label form; IPs and
    CIDR ranges in their canonical text form (a single address has no prefix).
    """
    text = raw.strip() if isinstance(raw, str) else ""
    if not text:
        raise InvalidName("list item is empty")
    if "@" in text:
        return ListItemValue(parse_email(text).ascii, ItemType.EMAIL_ADDRESS)
    if ":" in text or "/" in text or text.replace(".", "").isdigit():
        network = parse_ip_or_network(text)
        single = network.num_addresses == 1 and "/" not in text
        value = str(network.network_address) if single else str(network)
        return ListItemValue(value, ItemType.IP_ADDRESS)
    try:
        return ListItemValue(parse_domain(text).ascii, ItemType.DOMAIN)
    except InvalidName:
        raise InvalidName(
            f"{raw!r} is not a valid IP address, CIDR range, email address or domain"
        ) from None
