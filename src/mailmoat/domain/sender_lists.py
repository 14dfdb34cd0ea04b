"""Which safelist or blocklist entry decides about a sender, across the three tiers.

Tiers, strongest first: user, domain, account. The first tier with any matching
entry decides; within it a safelist entry beats a blocklist entry. An entry
matches when it is:

- an email address equal to the envelope sender (case-insensitive, A-label form);
- a domain equal to the sender's domain or a parent of it (``example.com``
  matches ``mail.example.com`` too);
- an IP address or CIDR range containing the connecting client's address.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from mailmoat.domain.lists import ItemType, ListAction


class Tier(enum.StrEnum):
    USER = "user"
    DOMAIN = "domain"
    ACCOUNT = "account"


TIER_ORDER = (Tier.USER, Tier.DOMAIN, Tier.ACCOUNT)


@dataclass(frozen=True, slots=True)
class Entry:
    tier: Tier
    action: ListAction
    item: str
    item_type: ItemType


@dataclass(frozen=True, slots=True)
class Sender:
    """What is known of the sender at RCPT time. ``address`` is "" for the null sender."""

    address: str
    client_ip: str

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2] if "@" in self.address else ""


@dataclass(frozen=True, slots=True)
class ListDecision:
    action: ListAction
    tier: Tier
    item: str

    @property
    def rule(self) -> str:
        """The rule name recorded in the message log, e.g. ``domain-safelist``."""
        return f"{self.tier.value}-{self.action.value}"


@lru_cache(maxsize=4096)
def _network(item: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(item, strict=False)
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def matches(entry: Entry, sender: Sender) -> bool:
    if entry.item_type is ItemType.EMAIL_ADDRESS:
        return bool(sender.address) and entry.item == sender.address.lower()
    if entry.item_type is ItemType.DOMAIN:
        domain = sender.domain.lower()
        return bool(domain) and (domain == entry.item or domain.endswith("." + entry.item))
    client = _address(sender.client_ip)
    network = _network(entry.item)
    return (
        client is not None
        and network is not None
        and client.version == network.version
        and client in network
    )


def decide(entries: Iterable[Entry], sender: Sender) -> ListDecision | None:
    """The deciding entry for this sender, or None when no list mentions it."""
    best: dict[Tier, Entry] = {}
    for entry in entries:
        if not matches(entry, sender):
            continue
        current = best.get(entry.tier)
        if current is None or (
            current.action is ListAction.BLOCKLIST and entry.action is ListAction.SAFELIST
        ):
            best[entry.tier] = entry
    for tier in TIER_ORDER:
        if tier in best:
            found = best[tier]
            return ListDecision(found.action, tier, found.item)
    return None
