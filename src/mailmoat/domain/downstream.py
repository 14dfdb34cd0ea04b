"""Downstream mail servers of a domain: validation of targets."""

from __future__ import annotations

import ipaddress
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
