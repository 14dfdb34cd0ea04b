"""Downstream mail servers of a domain: validation of targets."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass

from mailmoat.domain.names import InvalidName, is_ip_literal, parse_domain

MAX_DOWNSTREAM_ADDRESSES = 10
MAX_TARGET_LENGTH = 255


@dataclass(frozen=True, slots=True)
class DownstreamAddress:
    priority: int
    weight: int
    port: int
    target: str


def normalize_target(raw: str) -> str:
    """A target is a hostname (with or without the final dot) or a literal IP.

    Hostnames are kept in A-label form, lower-case, with the final dot if it was
    given, since a final dot means "do not append a search domain" to resolvers.
    """
    text = raw.strip()
    if not text or len(text) > MAX_TARGET_LENGTH:
        raise InvalidName("downstream target must be 1-255 characters")
    bracketless = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if is_ip_literal(bracketless):
        # Canonical form: 2001:DB8:0::1 becomes 2001:db8::1.
        return str(ipaddress.ip_address(bracketless.strip()))
    dotted = text.endswith(".")
    name = parse_domain(text, allow_trailing_dot=True).ascii
    return name + "." if dotted else name


def validate_downstream(address: DownstreamAddress) -> DownstreamAddress:
    if not 1 <= address.port <= 65535:
        raise InvalidName(f"downstream port {address.port} is not between 1 and 65535")
    if not 0 <= address.priority <= 65535:
        raise InvalidName("downstream priority must be between 0 and 65535")
    if not 0 <= address.weight <= 65535:
        raise InvalidName("downstream weight must be between 0 and 65535")
    return DownstreamAddress(
        priority=address.priority,
        weight=address.weight,
        port=address.port,
        target=normalize_target(address.target),
    )


def delivery_order(
    addresses: Sequence[DownstreamAddress], rng: random.Random | None = None
) -> list[DownstreamAddress]:
    """The order in which to try a domain's downstream addresses for one message.

    Lowest priority number first. Within one priority the first choice is
    proportional to weight (40 and 10 give 80 % and 20 %), then the next among
    those left, and so on, so that every address of a group is tried before the
    next group, as MX fallback does. Addresses of weight 0 come after the weighted
    ones of their group, in random order; a group that is all weight 0 is tried in
    random order.
    """
    rng = rng or random.Random()
    groups: dict[int, list[DownstreamAddress]] = {}
    for address in addresses:
        groups.setdefault(address.priority, []).append(address)
    ordered: list[DownstreamAddress] = []
    for priority in sorted(groups):
        weighted = [a for a in groups[priority] if a.weight > 0]
        unweighted = [a for a in groups[priority] if a.weight == 0]
        while weighted:
            pick = rng.uniform(0, sum(a.weight for a in weighted))
            for index, candidate in enumerate(weighted):
                pick -= candidate.weight
                if pick <= 0 or index == len(weighted) - 1:
                    ordered.append(weighted.pop(index))
                    break
        rng.shuffle(unweighted)
        ordered.extend(unweighted)
    return ordered
