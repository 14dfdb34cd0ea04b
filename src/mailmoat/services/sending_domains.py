"""Sending domains: a DKIM key per domain, the DNS records to publish, and their check.

A customer adds a domain it sends from; mailmoat makes an RSA key pair for DKIM and
answers with three records: the DKIM public key (TXT), the SPF record (TXT) that
lets the gateway send for the domain, and the return-path host (CNAME) that bounces
go to. Verifying looks the records up through the resolver the composition root
injects (the operator's DNS servers, never an implicit system resolver here).

Several customers may add the same domain: each proves it by publishing its own
records, with its own selector.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db.database import Database
from mailmoat.db.tables import SendingDomain, utcnow
from mailmoat.domain.names import DomainName, InvalidName, parse_domain
from mailmoat.domain.webhooks import new_address_id
from mailmoat.services import audit
from mailmoat.services.caller import Caller
from mailmoat.services.errors import Conflict, InvalidInput, NotFound, ServiceError

log = logging.getLogger(__name__)

KEY_BITS = 2048
PUBLIC_EXPONENT = 65537
MAX_NAME_LENGTH = 253
MAX_SELECTOR_LENGTH = 63  # the column's size
MAX_SENDING_DOMAINS = 1000  # per account: each costs an RSA key generation

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_SELECTOR = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_PREFIX = re.compile(rf"^{_LABEL}$")
_HOST = _SELECTOR
# A mechanism that can grant "pass" (no qualifier: the gateway must pass, not softfail).
_MECHANISM = re.compile(r"^(?:a|mx|ptr|ip4|ip6|include|exists)(?:[:/]\S+)?$", re.IGNORECASE)
_SPF_VERSION = re.compile(r"^v=spf1(?:\s|$)", re.IGNORECASE)


class DnsLookup(Protocol):
    """What verification needs of a resolver; ``mailmoat.pipeline.dns.DnsResolver`` fits.

    Both methods block. No such name or record: an empty list. A lookup that could
    not be completed (timeout, SERVFAIL): an exception.
    """

    def txt(self, name: str) -> list[bytes]:
        """TXT records at ``name``, each with its character-strings joined."""
        ...

    def query(self, name: str, rdtype: str) -> Sequence[object]:
        """Records of one type; ``str()`` of one gives its presentation form."""
        ...


class DnsUnavailable(ServiceError):
    code = 503


@dataclass(frozen=True, slots=True)
class SendingPolicy:
    """What the gateway asks sending domains to publish."""

    # The SPF mechanism that authorises the gateway, e.g. a:mx.example.net or
    # include:_spf.example.net.
    spf_mechanism: str = "a:sending.invalid"
    # Bounces go to <prefix>.<domain>, a CNAME to return_path_target.
    return_path_prefix: str = "mm-bounces"
    return_path_target: str = "sending.invalid"

    def __post_init__(self) -> None:
        if not _MECHANISM.match(self.spf_mechanism):
            raise ValueError(
                f"SPF mechanism {self.spf_mechanism!r} is not one of a, mx, ip4, ip6, include, "
                "exists (with their arguments, no qualifier, no spaces)"
            )
        if not _PREFIX.match(self.return_path_prefix):
            raise ValueError(f"return-path prefix {self.return_path_prefix!r} is not a DNS label")
        # Any host name, a single label too (a default derived from the machine's name).
        if len(self.target) > MAX_NAME_LENGTH or not _HOST.match(self.target):
            raise ValueError(f"return-path target {self.return_path_target!r} is not a host name")

    @property
    def target(self) -> str:
        return _host(self.return_path_target)

    @property
    def spf_default(self) -> str:
        return f"v=spf1 {self.spf_mechanism} ~all"


@dataclass(frozen=True, slots=True)
class DnsRecord:
    purpose: str  # dkim, spf, return_path
    type: str  # TXT, CNAME
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class CheckResult:
    purpose: str
    ok: bool
    found: list[str]
    detail: str
    # The lookup failed: nothing is known about the record (not stored, not shown).
    temporary: bool = False

    def stored(self) -> dict[str, object]:
        return {"purpose": self.purpose, "ok": self.ok, "found": self.found, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class SendingDomainView:
    id: str
    domain: str
    selector: str
    dns_records: list[DnsRecord]
    verified: bool
    verified_at: datetime | None
    checked_at: datetime | None
    checks: list[CheckResult]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class _Target:
    """What one domain's records must say: enough to check them without the database."""

    name: str
    selector: str
    public_key: str
    return_path: str

    @property
    def dkim_name(self) -> str:
        return f"{self.selector}._domainkey.{self.name}"


@dataclass(frozen=True, slots=True)
class KeyPair:
    private_pem: str  # PKCS#1 ("RSA PRIVATE KEY"), the form dkimpy signs with
    public_b64: str  # base64 DER SubjectPublicKeyInfo: the p= of the DKIM record


def generate_key_pair(bits: int = KEY_BITS) -> KeyPair:
    """A new RSA key for DKIM. Takes a noticeable fraction of a second: run it in a thread."""
    key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(private.decode("ascii"), base64.b64encode(public).decode("ascii"))


class SendingDomainService:
    def __init__(
        self,
        database: Database,
        policy: SendingPolicy | None = None,
        resolver: DnsLookup | None = None,
    ) -> None:
        self.db = database
        self.policy = policy or SendingPolicy()
        # None: no DNS servers were configured, so verification answers 503.
        self.resolver = resolver

    # -- reading -----------------------------------------------------------------------

    async def domains(self, caller: Caller) -> list[SendingDomainView]:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(SendingDomain)
                .where(SendingDomain.customer_id == caller.customer_id)
                .order_by(SendingDomain.name_ascii, SendingDomain.created_at, SendingDomain.id)
            )
            return [self._view(r) for r in rows]

    async def get(self, caller: Caller, domain_id: str) -> SendingDomainView:
        async with self.db.read() as session:
            return self._view(await _load(session, caller, domain_id))

    # -- changing ----------------------------------------------------------------------

    async def create(
        self, caller: Caller, raw_domain: str, selector: str | None = None
    ) -> SendingDomainView:
        name = _parse_name(raw_domain)
        chosen = _parse_selector(selector) if selector is not None else _new_selector()
        return_path = f"{self.policy.return_path_prefix}.{name.ascii}"
        for host in (f"{chosen}._domainkey.{name.ascii}", return_path):
            if len(host) > MAX_NAME_LENGTH:
                raise InvalidInput(f"{host} would be longer than {MAX_NAME_LENGTH} characters")
        async with self.db.read() as session:
            if await _taken(session, caller, name.ascii):
                raise Conflict(f"{name.unicode} is already one of your sending domains")
            held = await session.scalar(
                select(func.count())
                .select_from(SendingDomain)
                .where(SendingDomain.customer_id == caller.customer_id)
            )
            if int(held or 0) >= MAX_SENDING_DOMAINS:
                raise Conflict(f"an account may have at most {MAX_SENDING_DOMAINS} sending domains")
        keys = await asyncio.to_thread(generate_key_pair)
        row = SendingDomain(
            id=new_address_id(),
            customer_id=caller.customer_id,
            name_ascii=name.ascii,
            name_unicode=name.unicode,
            dkim_selector=chosen,
            dkim_private_key=keys.private_pem,
            dkim_public_key=keys.public_b64,
            return_path=return_path,
            verified_at=None,
            checked_at=None,
            checks=[],
            created_at=utcnow(),
        )
        try:
            async with self.db.write() as session:
                if await _taken(session, caller, name.ascii):
                    raise Conflict(f"{name.unicode} is already one of your sending domains")
                session.add(row)
                await session.flush()
                await audit.record(
                    session,
                    caller.actor,
                    "added sending domain",
                    domain_id=None,
                    detail=f"{name.unicode} (id {row.id}, DKIM selector {chosen})",
                )
        except IntegrityError:
            # Added by a concurrent request between the check and the insert.
            raise Conflict(f"{name.unicode} is already one of your sending domains") from None
        return self._view(row)

    async def delete(self, caller: Caller, domain_id: str) -> None:
        async with self.db.write() as session:
            row = await _load(session, caller, domain_id)
            detail = f"{row.name_unicode} (id {row.id}, DKIM selector {row.dkim_selector})"
            await session.delete(row)
            await audit.record(
                session, caller.actor, "deleted sending domain", domain_id=None, detail=detail
            )

    async def verify(self, caller: Caller, domain_id: str) -> SendingDomainView:
        """Look the records up now and remember the outcome.

        Every check passing verifies the domain. A check that fails because a record
        is missing or wrong takes verification away; one that fails only because the
        lookup failed (a timeout) leaves it as it was, since nothing was learnt.
        """
        resolver = self.resolver
        if resolver is None:
            raise DnsUnavailable("no DNS resolver is configured: domains cannot be verified")
        async with self.db.read() as session:
            row = await _load(session, caller, domain_id)
            target = _Target(
                row.name_ascii, row.dkim_selector, row.dkim_public_key, row.return_path
            )
        results = await self._check(resolver, target)
        now = utcnow()
        async with self.db.write() as session:
            row = await _load(session, caller, domain_id)  # deleted meanwhile: 404
            if all(r.ok for r in results):
                row.verified_at = row.verified_at or now
            elif any(not r.ok and not r.temporary for r in results):
                row.verified_at = None
            row.checked_at = now
            row.checks = [r.stored() for r in results]
            passed = ", ".join(f"{r.purpose} {'ok' if r.ok else 'failed'}" for r in results)
            await audit.record(
                session,
                caller.actor,
                "verified sending domain" if row.verified_at else "sending domain not verified",
                domain_id=None,
                detail=f"{row.name_unicode} (id {row.id}): {passed}",
            )
            return self._view(row)

    # -- checks ------------------------------------------------------------------------

    async def _check(self, resolver: DnsLookup, target: _Target) -> list[CheckResult]:
        dkim, spf, return_path = await asyncio.gather(
            asyncio.to_thread(self._check_dkim, resolver, target),
            asyncio.to_thread(self._check_spf, resolver, target),
            asyncio.to_thread(self._check_return_path, resolver, target),
        )
        return [dkim, spf, return_path]

    @staticmethod
    def _check_dkim(resolver: DnsLookup, target: _Target) -> CheckResult:
        name = target.dkim_name
        try:
            records = [_text(r) for r in resolver.txt(name)]
        except Exception as exc:  # any failure of the lookup, whatever the resolver
            return _lookup_failed("dkim", "TXT", name, exc)
        if not records:
            return CheckResult("dkim", False, [], f"no TXT record at {name}")
        for record in records:
            if _dkim_tags(record).get("p") == target.public_key:
                return CheckResult("dkim", True, records, f"{name} publishes this domain's key")
        return CheckResult(
            "dkim",
            False,
            records,
            f"the TXT record at {name} does not hold this domain's public key (p=)",
        )

    def _check_spf(self, resolver: DnsLookup, target: _Target) -> CheckResult:
        name = target.name
        try:
            records = [_text(r) for r in resolver.txt(name)]
        except Exception as exc:
            return _lookup_failed("spf", "TXT", name, exc)
        spf = [r for r in records if _SPF_VERSION.match(r.strip())]
        mechanism = self.policy.spf_mechanism
        if not spf:
            return CheckResult("spf", False, [], f"no SPF record (v=spf1) at {name}")
        if len(spf) > 1:
            return CheckResult(
                "spf",
                False,
                spf,
                f"{len(spf)} SPF records at {name}: receivers treat that as a permerror; "
                f"merge them into one record that contains {mechanism}",
            )
        if _has_mechanism(spf[0], mechanism):
            return CheckResult("spf", True, spf, f"the SPF record at {name} contains {mechanism}")
        return CheckResult(
            "spf", False, spf, f"the SPF record at {name} does not contain {mechanism}"
        )

    def _check_return_path(self, resolver: DnsLookup, target: _Target) -> CheckResult:
        name = target.return_path
        expected = self.policy.target
        try:
            found = [_host(str(r)) for r in resolver.query(name, "CNAME")]
        except Exception as exc:
            return _lookup_failed("return_path", "CNAME", name, exc)
        if not found:
            return CheckResult("return_path", False, [], f"no CNAME record at {name}")
        if expected in found:
            return CheckResult("return_path", True, found, f"{name} is a CNAME for {expected}")
        return CheckResult(
            "return_path",
            False,
            found,
            f"{name} is a CNAME for {', '.join(found)}, not for {expected}",
        )

    # -- views -------------------------------------------------------------------------

    def _view(self, row: SendingDomain) -> SendingDomainView:
        checks = [_check_from(entry) for entry in row.checks or []]
        return SendingDomainView(
            id=row.id,
            domain=row.name_unicode,
            selector=row.dkim_selector,
            dns_records=self._records(row, checks),
            verified=row.verified_at is not None,
            verified_at=row.verified_at,
            checked_at=row.checked_at,
            checks=checks,
            created_at=row.created_at,
        )

    def _records(self, row: SendingDomain, checks: list[CheckResult]) -> list[DnsRecord]:
        return [
            DnsRecord(
                "dkim",
                "TXT",
                f"{row.dkim_selector}._domainkey.{row.name_ascii}",
                f"v=DKIM1; k=rsa; p={row.dkim_public_key}",
            ),
            DnsRecord("spf", "TXT", row.name_ascii, self._spf_value(checks)),
            DnsRecord("return_path", "CNAME", row.return_path, self.policy.target),
        ]

    def _spf_value(self, checks: list[CheckResult]) -> str:
        """The SPF record to publish: the one the last check found, with the mechanism
        added; a new one when none was found (or several, which must become one)."""
        found = next((c.found for c in checks if c.purpose == "spf"), [])
        if len(found) != 1:
            return self.policy.spf_default
        return _with_mechanism(found[0], self.policy.spf_mechanism)


# -- helpers --------------------------------------------------------------------------


async def _load(session: AsyncSession, caller: Caller, domain_id: str) -> SendingDomain:
    row = await session.get(SendingDomain, domain_id)
    if row is None or row.customer_id != caller.customer_id:
        raise NotFound(f"sending domain {domain_id} does not exist")
    return row


async def _taken(session: AsyncSession, caller: Caller, name_ascii: str) -> bool:
    found = await session.scalar(
        select(SendingDomain.id).where(
            SendingDomain.customer_id == caller.customer_id,
            SendingDomain.name_ascii == name_ascii,
        )
    )
    return found is not None


def _parse_name(raw: str) -> DomainName:
    try:
        return parse_domain(raw, allow_trailing_dot=True)
    except InvalidName as exc:
        raise InvalidInput(str(exc)) from None


def _parse_selector(raw: str) -> str:
    selector = raw.strip().lower()
    if len(selector) > MAX_SELECTOR_LENGTH or not _SELECTOR.match(selector):
        raise InvalidInput(
            f"invalid DKIM selector {raw!r}: letters, digits, hyphens and dots, "
            f"up to {MAX_SELECTOR_LENGTH} characters"
        )
    return selector


def _new_selector() -> str:
    """Unique per domain added, so that two customers (or a key rotation) never collide."""
    return "mm" + secrets.token_hex(4)


def _host(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _text(record: bytes) -> str:
    return record.decode("utf-8", errors="replace")


def _lookup_failed(purpose: str, rdtype: str, name: str, exc: Exception) -> CheckResult:
    log.info("sending domain check: %s lookup of %s failed: %s", rdtype, name, exc)
    return CheckResult(
        purpose,
        False,
        [],
        f"the {rdtype} lookup of {name} failed ({exc or type(exc).__name__}); try again later",
        temporary=True,
    )


def _dkim_tags(record: str) -> dict[str, str]:
    """Tag=value pairs of a DKIM key record, whitespace removed (RFC 6376 3.6.1)."""
    tags: dict[str, str] = {}
    for part in "".join(record.split()).split(";"):
        tag, sep, value = part.partition("=")
        if sep and tag not in tags:
            tags[tag] = value
    return tags


def _term(term: str) -> str:
    return term.lower().removeprefix("+").rstrip(".")


def _has_mechanism(record: str, mechanism: str) -> bool:
    wanted = _term(mechanism)
    return any(_term(term) == wanted for term in record.split()[1:])


def _with_mechanism(record: str, mechanism: str) -> str:
    """``record`` with ``mechanism`` added before its ``all``, or at its end."""
    terms = record.split()
    if _has_mechanism(record, mechanism):
        return " ".join(terms)
    for index, term in enumerate(terms):
        if index and term.lower().lstrip("+-~?") == "all":
            return " ".join([*terms[:index], mechanism, *terms[index:]])
    return " ".join([*terms, mechanism])


def _check_from(entry: dict[str, object]) -> CheckResult:
    found = entry.get("found")
    return CheckResult(
        purpose=str(entry.get("purpose", "")),
        ok=bool(entry.get("ok")),
        found=[str(f) for f in found] if isinstance(found, list) else [],
        detail=str(entry.get("detail", "")),
    )
