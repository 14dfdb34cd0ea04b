"""Per-domain filtering settings and their validation."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from mailmoat.domain.names import InvalidName


class AbusePolicy(enum.StrEnum):
    BLOCK = "block"
    FLAG = "flag"
    QUARANTINE = "quarantine"


DEFAULT_ABUSE_POLICY = AbusePolicy.QUARANTINE
DEFAULT_SPAM_HEADER_NAME = "X-Spam-Flag"
DEFAULT_SPAM_HEADER_VALUE = "YES"

_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # printable ASCII except ':' (RFC 5322 ftext)


def validate_header_name(name: str) -> str:
    if not _HEADER_NAME.match(name):
        raise InvalidName(f"invalid header name {name!r}")
    return name


def validate_header_value(value: str) -> str:
    if not value or len(value) > 998 or any(ch in value for ch in "\r\n\x00"):
        raise InvalidName("invalid header value: must be 1-998 characters without line breaks")
    return value


@dataclass(frozen=True, slots=True)
class DomainSettings:
    abuse_policy: AbusePolicy = DEFAULT_ABUSE_POLICY
    abuse_policy_override: bool = False
    spam_header_name: str = DEFAULT_SPAM_HEADER_NAME
    spam_header_value: str = DEFAULT_SPAM_HEADER_VALUE
