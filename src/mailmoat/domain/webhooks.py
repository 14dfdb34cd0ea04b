"""Rules of email-to-webhook routing, without I/O: addresses, custom domains, targets."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from mailmoat.domain.addresses import is_public_address as is_public_address  # re-exported
from mailmoat.domain.local_patterns import (
    LocalPartPattern,
    PatternError,
    compile_local_pattern,
)
from mailmoat.domain.names import DomainName, InvalidName, parse_domain

MAX_TARGET = 2048
DEFAULT_MAX_SIZE = 25 * 1024 * 1024


class TargetFormat(enum.StrEnum):
    JSON = "json+n"
    MULTIPART = "multipart+n"
    RAW = "raw"


class DeliveryMode(enum.StrEnum):
    """sync: the webhook's answer is the SMTP reply; queued: accept, then POST with retries."""

    SYNC = "sync"
    QUEUED = "queued"


class StatusCategory(enum.StrEnum):
    SUCCESSFUL = "successful"
    DELAYED = "delayed"
    REJECTED = "rejected"
    MAX_SIZE = "max_size"


def new_address_id() -> str:
    """20 hex digits, as the management API shows ids."""
    return secrets.token_hex(10)


def new_address_token() -> str:
    """The local part of a generated address: unguessable, lower-case hex."""
    return secrets.token_hex(8)


def address_token(local_part: str) -> str:
    """The token a local part names: ``<token>+anything`` reaches ``<token>``."""
    return local_part.split("+", 1)[0].lower()


@dataclass(frozen=True, slots=True)
class CustomDomainName:
    """``example.com``, or ``*.example.com`` for any one label in front of it."""

    name: DomainName
    wildcard: bool

    @property
    def ascii(self) -> str:
        return f"*.{self.name.ascii}" if self.wildcard else self.name.ascii

    @property
    def unicode(self) -> str:
        return f"*.{self.name.unicode}" if self.wildcard else self.name.unicode


def parse_custom_domain(raw: str) -> CustomDomainName:
    text = raw.strip() if isinstance(raw, str) else raw
    if isinstance(text, str) and text.startswith("*."):
        return CustomDomainName(parse_domain(text[2:]), True)
    if isinstance(text, str) and "*" in text:
        raise InvalidName(f"{raw!r}: only one leading wildcard label, as in *.example.com")
    return CustomDomainName(parse_domain(text), False)


def custom_domain_keys(domain_ascii: str) -> tuple[str, ...]:
    """The custom-domain names that could route mail for ``domain_ascii``, most exact
    first: the name itself, then the wildcard of its parent (one level only)."""
    labels = domain_ascii.split(".")
    if len(labels) > 2:
        return (domain_ascii, "*." + ".".join(labels[1:]))
    return (domain_ascii,)


def compile_pattern(pattern: str | None) -> LocalPartPattern | None:
    """A custom domain's local-part pattern, checked when it is set: InvalidName
    when it is too long or not one RE2 compiles (see domain/local_patterns.py)."""
    if pattern is None or pattern == "":
        return None
    try:
        return compile_local_pattern(pattern)
    except PatternError as exc:
        raise InvalidName(str(exc)) from None


def pattern_allows(pattern: str | None, local_part: str) -> bool:
    """Whether a custom domain's pattern takes ``local_part``, matched whole and in
    any case; InvalidName for a stored pattern that can no longer be compiled."""
    compiled = compile_pattern(pattern)
    return compiled is None or compiled.fullmatch(local_part)


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    host: str
    port: int
    scheme: str

    @property
    def shown(self) -> str:
        """The URL without credentials, as logs and statuses show it."""
        parts = urlsplit(self.url)
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
        path = parts.path or "/"
        return f"{parts.scheme}://{netloc}{path}" + (f"?{parts.query}" if parts.query else "")


def parse_target(raw: str) -> Target:
    """An http(s) URL with a host; credentials in it become Basic auth."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidName("target must be an http or https URL")
    url = raw.strip()
    if len(url) > MAX_TARGET:
        raise InvalidName(f"target is longer than {MAX_TARGET} characters")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise InvalidName("target must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidName(f"target is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidName("target must be an http or https URL")
    if not parts.hostname:
        raise InvalidName("target must name a host")
    if port == 0:
        raise InvalidName("target port must be 1-65535")
    if parts.fragment:
        raise InvalidName("target must not have a #fragment")
    default = 443 if parts.scheme == "https" else 80
    return Target(url, parts.hostname, default if port is None else port, parts.scheme)


# Reasons recorded on messages refused in sync mode, by what the webhook answered.
REASON_WEBHOOK_REJECTED = "webhook-rejected"  # 4xx: permanent
REASON_WEBHOOK_DELAYED = "webhook-delayed"  # 5xx, timeout, unreachable: the sender retries
REASON_WEBHOOK_POSTING = "webhook-posting"  # recorded before the POST; its answer not yet
REASON_MAX_SIZE = "max-size"


def category_of(state: str, reason: str) -> StatusCategory:
    """How the management API classifies what became of a message to a webhook."""
    if reason == REASON_MAX_SIZE:
        return StatusCategory.MAX_SIZE
    if state == "delivered":
        return StatusCategory.SUCCESSFUL
    if state in ("queued", "deferred") or reason in (
        REASON_WEBHOOK_DELAYED,
        REASON_WEBHOOK_POSTING,
    ):
        return StatusCategory.DELAYED
    return StatusCategory.REJECTED


@dataclass(frozen=True, slots=True)
class WebhookRoute:
    """A webhook address as mail routing needs it."""

    id: str
    customer_id: str
    target: str
    target_format: str
    mode: str
    max_size: int


@dataclass(frozen=True, slots=True)
class FiredRule:
    name: str
    score: float
    description: str


@dataclass(frozen=True, slots=True)
class WebhookEnvelope:
    """The SMTP side of a message, as a webhook post describes it."""

    recipients: tuple[str, ...]  # every envelope recipient of the transaction; `to` is the first
    sender: str  # MAIL FROM, "" for the null sender
    helo_domain: str
    remote_ip: str
    spf_result: str  # none|neutral|pass|fail|softfail|temperror|permerror
    spf_domain: str
    tls: bool
    tls_cipher: str | None
    message_id: str  # mailmoat's id
    verdict: str  # ham|spam|unscanned
    score: float | None
    rules: tuple[FiredRule, ...]
    authentication_results: str | None


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    """What came of one POST, in SMTP terms (see delivery/webhook_client.py)."""

    code: int  # 250 delivered, 554 refused for good, 450 try again later
    text: str  # e.g. "5.7.1 HTTP 403: unknown user"
    status: int | None  # the HTTP status; None when no answer came
    target: str  # the URL, without credentials
    response: str | None  # the first 2 KB of a failing answer's body

    @property
    def reply(self) -> str:
        return f"{self.code} {self.text}"


class WebhookPoster(Protocol):
    """Posts a message to its webhook now (sync mode, during the SMTP transaction)."""

    async def post_now(
        self, route: WebhookRoute, raw: bytes, envelope: WebhookEnvelope
    ) -> WebhookAnswer: ...


def fired_rules(rules: list[dict[str, object]] | None) -> tuple[FiredRule, ...]:
    """Rules as the message log keeps them (dicts), as posts describe them."""
    fired = []
    for rule in rules or []:
        raw = rule.get("score", 0.0)
        try:
            score = float(raw) if isinstance(raw, int | float | str) else 0.0
        except ValueError:
            score = 0.0
        fired.append(FiredRule(str(rule.get("name", "")), score, str(rule.get("description", ""))))
    return tuple(fired)
