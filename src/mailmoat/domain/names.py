"""Parsing and normalising the names mailmoat deals in: domains, email addresses, IPs.

Domains are stored in two forms: the A-label form (ASCII, used for matching and
uniqueness) and the U-label form (Unicode, shown to people).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import idna


class InvalidName(ValueError):
    """A name (domain, email address, IP) that mailmoat cannot accept."""


@dataclass(frozen=True, slots=True)
class DomainName:
    ascii: str
    unicode: str

    def __str__(self) -> str:
        return self.unicode


_LDH_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_MAX_DOMAIN_LENGTH = 253


def _is_plain_ldh(name: str) -> bool:
    """ASCII letters, digits and hyphens only, no A-labels (xn--) or other ``??--`` labels.

    For such names IDNA processing is just lower-casing, so it can be skipped.
    """
    if not name.isascii():
        return False
    for label in name.lower().split("."):
        if not _LDH_LABEL.match(label) or label[2:4] == "--":
            return False
    return True


def parse_domain(raw: str, *, allow_trailing_dot: bool = False) -> DomainName:
    """Accept a U-label or A-label domain and return both forms.

    Raises InvalidName for anything that is not a valid, fully qualified name
    with at least two labels.
    """
    if not isinstance(raw, str):
        raise InvalidName("domain must be a string")
    name = raw.strip()
    if allow_trailing_dot and name.endswith("."):
        name = name[:-1]
    if not name:
        raise InvalidName("domain name is empty")
    if any(ch.isspace() or ord(ch) < 0x21 for ch in name):
        raise InvalidName(f"invalid domain name {raw!r}: contains whitespace or control characters")
    if _is_plain_ldh(name):
        # The common case, and what idna would return for it, at a fraction of the cost.
        ascii_name = unicode_name = name.lower()
    else:
        try:
            ascii_name = idna.encode(name, uts46=True).decode("ascii").lower()
            unicode_name = idna.decode(ascii_name)
        except (idna.IDNAError, UnicodeError, ValueError) as exc:
            raise InvalidName(f"invalid domain name {raw!r}: {exc}") from None
    labels = ascii_name.split(".")
    if len(ascii_name) > _MAX_DOMAIN_LENGTH:
        raise InvalidName(f"invalid domain name {raw!r}: longer than 253 characters")
    if len(labels) < 2:
        raise InvalidName(f"invalid domain name {raw!r}: must have at least two labels")
    for label in labels:
        if not _LDH_LABEL.match(label):
            raise InvalidName(f"invalid domain name {raw!r}: bad label {label!r}")
    if labels[-1].isdigit():
        raise InvalidName(f"invalid domain name {raw!r}: top-level label is numeric")
    return DomainName(ascii=ascii_name, unicode=unicode_name)


@dataclass(frozen=True, slots=True)
class EmailAddress:
    """An address. ``local`` is lower-cased: mailboxes (users, list entries) are
    matched case-insensitively; ``given_local`` is the local part as written, which
    a receiving server may treat as case-sensitive (RFC 5321 §2.4)."""

    local: str
    domain: DomainName
    given_local: str = ""

    @property
    def ascii(self) -> str:
        return f"{self.local}@{self.domain.ascii}"

    @property
    def as_given(self) -> str:
        """The address as written, its domain normalised: what mail is relayed to."""
        return f"{self.given_local or self.local}@{self.domain.ascii}"

    def __str__(self) -> str:
        return self.ascii


_LOCAL_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+$")
_MAX_LOCAL_LENGTH = 64


def parse_email(raw: str) -> EmailAddress:
    """Parse an address like ``user@example.com``; ``local`` is lower-cased, and
    ``given_local`` keeps it as written.

    Quoted local parts are not accepted: no mailbox provider hands those out and
    they would make list matching ambiguous.
    """
    if not isinstance(raw, str):
        raise InvalidName("email address must be a string")
    text = raw.strip()
    local, sep, domain = text.rpartition("@")
    if not sep or not local or not domain:
        raise InvalidName(f"invalid email address {raw!r}")
    if not is_utf8(local):
        # Lone surrogates: how bytes that were not UTF-8 arrive from an SMTP session.
        raise InvalidName(f"invalid email address {raw!r}: not UTF-8")
    if len(local.encode("utf-8")) > _MAX_LOCAL_LENGTH:
        raise InvalidName(f"invalid email address {raw!r}: local part too long")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise InvalidName(f"invalid email address {raw!r}: misplaced dot in local part")
    if not all(_LOCAL_ATOM.match(atom) for atom in local.split(".")):
        raise InvalidName(f"invalid email address {raw!r}: invalid local part")
    return EmailAddress(local=local.lower(), domain=parse_domain(domain), given_local=local)


def is_utf8(text: str) -> bool:
    """False for text with lone surrogates: bytes that were not UTF-8, decoded with
    ``surrogateescape`` (as aiosmtpd does with SMTPUTF8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip_or_network(raw: str) -> IPNetwork:
    """Parse an IP address or CIDR range; a bare address is a /32 or /128."""
    try:
        return ipaddress.ip_network(raw.strip(), strict=False)
    except ValueError:
        raise InvalidName(f"invalid IP address or range {raw!r}") from None


def is_ip_literal(raw: str) -> bool:
    try:
        ipaddress.ip_address(raw.strip())
    except ValueError:
        return False
    return True
