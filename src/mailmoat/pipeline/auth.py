"""Sender authentication of one received message: SPF, DKIM and DMARC.

SPF is evaluated by pyspf, DKIM signatures are verified by dkimpy, DMARC records
are parsed by authheaders and the Authentication-Results value is built by authres.
Every lookup goes to the :class:`~mailmoat.pipeline.dns.DnsResolver` given.

DMARC policy discovery and alignment are put together here from authheaders'
parts rather than with ``authheaders.dmarc_per_from``, which (as of 0.16) takes
the organisational domain from publicsuffix2's ``get_sld`` (that returns the bare
TLD for a TLD not on the list, e.g. "test" for "news.example.test"), extracts
domains with a regex that stops at the first hyphen, accepts only one DKIM result
and re-reads the public suffix list on every call. The rules applied are RFC 7489's;
``pct=`` (sampling) and DMARCbis' ``np=`` are ignored: a failing message always
gets the full ``p=``/``sp=`` policy.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any

import authres
import authres.dmarc
import dkim
import spf
from authheaders import dmarc_lookup
from publicsuffix2 import PublicSuffixList

from mailmoat.domain.names import InvalidName, parse_domain
from mailmoat.pipeline import dkim_bounds
from mailmoat.pipeline.dns import DnsResolver, DnsTempError, SpfQuery

log = logging.getLogger(__name__)


class _SenderProblemLog(logging.LoggerAdapter[logging.Logger]):
    """dkimpy logs a sender's missing or broken key at ERROR; that is not our error."""

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


_dkimpy_log = _SenderProblemLog(logging.getLogger(__name__ + ".dkimpy"), {})

SPF_TIME_LIMIT = 20.0
"""Seconds for a whole SPF evaluation (RFC 7208 §4.6.4 asks for at least 20)."""
MAX_DKIM_SIGNATURES = 8
"""Signatures verified per message, topmost first; each costs a key lookup."""
MAX_FROM_DOMAINS = 10
"""Distinct From domains evaluated; a message with more gets dmarc=permerror."""

_POLICIES = ("none", "quarantine", "reject")
_SPF_RESULTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})
_DMARC_RECORD = re.compile(r"v=DMARC1[ \t]*(;|$)")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(\.{_ATEXT})*")
_SELECTOR = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
_DKIM_SIGNATURE_FIELD = re.compile(rb"(?im)^dkim-signature[ \t]*:")


@dataclass(frozen=True, slots=True)
class AuthResult:
    spf: str
    """pass, fail, softfail, neutral, none, temperror or permerror."""
    dkim: str
    """pass if any signature verified, else temperror, fail, permerror or none (unsigned)."""
    dkim_domains: tuple[str, ...]
    """d= of the signatures that verified."""
    dmarc: str
    """pass, fail, none (no usable policy), temperror or permerror (no usable From)."""
    dmarc_policy: str | None
    """none, quarantine or reject when dmarc is fail (sp= for subdomains), else None."""
    from_domain: str | None
    """RFC5322.From domain (A-label form) the DMARC result is for."""
    header_value: str
    """Authentication-Results value, starting with the authserv-id; one line."""


@dataclass(frozen=True, slots=True)
class _Spf:
    result: str
    domain: str | None  # domain of the identity checked: MAIL FROM, or HELO for <>


@dataclass(frozen=True, slots=True)
class _Signature:
    result: str
    domain: str | None
    selector: str | None


@dataclass(frozen=True, slots=True)
class _Dmarc:
    result: str
    policy: str | None
    from_domain: str | None


class SenderAuthenticator:
    """Checks SPF, DKIM and DMARC; safe to share between concurrent sessions."""

    def __init__(self, resolver: DnsResolver, authserv_id: str) -> None:
        authserv_id = authserv_id.strip()
        if not _DOT_ATOM.fullmatch(authserv_id):
            raise ValueError(f"authserv-id must be a host name, got {authserv_id!r}")
        self._resolver = resolver
        self._authserv_id = authserv_id

    async def check(self, raw: bytes, *, client_ip: str, helo: str, mail_from: str) -> AuthResult:
        """Authenticate a message; never raises for anything the client sent.

        The libraries block on DNS, so the work runs in a worker thread.
        ``mail_from`` is the reverse-path without angle brackets, "" for <>.
        """
        try:
            return await asyncio.to_thread(
                self._check, raw, client_ip=client_ip, helo=helo, mail_from=mail_from
            )
        except Exception:  # a library failing in a way not foreseen below
            log.exception("sender authentication failed unexpectedly")
            return AuthResult(
                spf="temperror",
                dkim="temperror",
                dkim_domains=(),
                dmarc="temperror",
                dmarc_policy=None,
                from_domain=None,
                header_value=f"{self._authserv_id.lower()}; spf=temperror; dkim=temperror; "
                "dmarc=temperror",
            )

    def _check(self, raw: bytes, *, client_ip: str, helo: str, mail_from: str) -> AuthResult:
        mail_from = mail_from.strip()
        if mail_from == "<>":
            mail_from = ""
        spf_result = self._spf(client_ip, helo.strip(), mail_from)
        signatures = self._dkim(raw)
        dmarc = self._dmarc(raw, spf_result, signatures)
        verified = [sig.domain for sig in signatures if sig.result == "pass" and sig.domain]
        return AuthResult(
            spf=spf_result.result,
            dkim=_overall_dkim(signatures),
            dkim_domains=tuple(dict.fromkeys(verified)),
            dmarc=dmarc.result,
            dmarc_policy=dmarc.policy,
            from_domain=dmarc.from_domain,
            header_value=self._header(spf_result, helo, mail_from, signatures, dmarc),
        )

    # SPF -----------------------------------------------------------------

    def _spf(self, client_ip: str, helo: str, mail_from: str) -> _Spf:
        if not mail_from and _domain(helo) is None:
            # RFC 7208 §2.3: with a null reverse-path only a HELO that is a domain
            # name can be checked; an address literal or garbage gives "none".
            return _Spf("none", None)
        try:
            query = SpfQuery(
                self._resolver, ip=client_ip, sender=mail_from, helo=helo, time_limit=SPF_TIME_LIMIT
            )
            domain = _domain(str(query.o))  # pyspf's idea of the domain checked
            result = str(query.check()[0])
        except spf.PermError as exc:  # e.g. a client address pyspf cannot parse
            log.warning("SPF check not possible for %r: %s", client_ip, exc)
            return _Spf("permerror", None)
        except Exception:
            log.exception("SPF check failed unexpectedly")
            return _Spf("temperror", None)
        if result not in _SPF_RESULTS:
            result = "permerror"
        return _Spf(result, domain)

    # DKIM ----------------------------------------------------------------

    def _dkim(self, raw: bytes) -> list[_Signature]:
        try:
            headers, body = dkim_bounds.parse(raw)
            verifier = dkim.DKIM(None, logger=_dkimpy_log, timeout=self._resolver.lifetime)
        except Exception:
            # The header could not be split; a signature in it cannot be checked.
            head = _HEADER_END.split(raw, maxsplit=1)[0]
            signed = _DKIM_SIGNATURE_FIELD.search(head) is not None
            return [_Signature("permerror", None, None)] if signed else []
        verifier.body = body
        signatures = [value for name, value in headers if name.lower() == b"dkim-signature"]
        hashes: dkim_bounds.BodyHashes = {}
        return [
            self._verify(verifier, headers, signatures[idx], idx, hashes)
            for idx in range(min(len(signatures), MAX_DKIM_SIGNATURES))
        ]

    def _verify(
        self,
        verifier: dkim.DKIM,
        headers: dkim_bounds.Headers,
        field: bytes,
        idx: int,
        hashes: dkim_bounds.BodyHashes,
    ) -> _Signature:
        keys: list[bytes | None] = []

        def dnsfunc(name: bytes, timeout: float | None = None) -> bytes | None:
            keys.append(self._resolver.dnsfunc(name, timeout))
            return keys[-1]

        # verify() is verify_headerprep() then verify_sig(); called apart, a
        # malformed signature (permerror) is told apart from one that does not
        # match the message (fail), which dkimpy reports with the same exception.
        verifier.signature_fields = {}
        verifier.headers = headers
        try:
            dkim_bounds.check_signature_field(field)
            sig, include_headers, fields = verifier.verify_headerprep(idx)
        except Exception as exc:
            log.debug("DKIM signature %d unusable: %s", idx, exc)
            return _Signature("permerror", *_identity(verifier.signature_fields))
        domain, selector = _identity(sig)
        try:
            verifier.headers = dkim_bounds.signed_fields(headers, include_headers)
            header_sig = dkim_bounds.without_body_hash(sig)
            valid = verifier.verify_sig(header_sig, include_headers, fields[idx], dnsfunc)
            if valid and not dkim_bounds.body_hash_matches(verifier.body, sig, hashes):
                raise dkim.ValidationError("body hash mismatch")
        except DnsTempError:
            return _Signature("temperror", domain, selector)
        except dkim.ValidationError as exc:  # body hash mismatch
            log.debug("DKIM signature %d of %s fails: %s", idx, domain, exc)
            return _Signature("fail", domain, selector)
        except Exception as exc:  # unusable key or c=, unknown key type, bad base64
            log.debug("DKIM signature %d of %s unusable: %s", idx, domain, exc)
            return _Signature("permerror", domain, selector)
        if valid:
            return _Signature("pass", domain, selector)
        if keys and keys[-1] is None:  # RFC 6376 §6.1.2: no key for signature
            return _Signature("permerror", domain, selector)
        return _Signature("fail", domain, selector)

    # DMARC ---------------------------------------------------------------

    def _dmarc(self, raw: bytes, spf_result: _Spf, signatures: list[_Signature]) -> _Dmarc:
        domains = _from_domains(raw)
        if not domains:
            return _Dmarc("permerror", None, None)
        if len(domains) > MAX_FROM_DOMAINS:
            return _Dmarc("permerror", None, domains[0])
        # RFC 7489 §6.6.1: with several authors, each domain is checked and the
        # strictest failing policy applies.
        outcomes = [self._dmarc_for(domain, spf_result, signatures) for domain in domains]
        return min(outcomes, key=_dmarc_rank)

    def _dmarc_for(self, domain: str, spf_result: _Spf, signatures: list[_Signature]) -> _Dmarc:
        try:
            found = self._policy_record(domain)
        except DnsTempError:
            return _Dmarc("temperror", None, domain)
        except dmarc_lookup.DMARCException as exc:
            log.debug("unusable DMARC record for %s: %s", domain, exc)
            return _Dmarc("permerror", None, domain)
        if found is None:
            return _Dmarc("none", None, domain)
        record, inherited = found
        policy = _policy(record, subdomain=inherited)
        if policy is None:
            return _Dmarc("none", None, domain)
        strict_spf = record.get("aspf") == "s"
        strict_dkim = record.get("adkim") == "s"

        def spf_aligned() -> bool:
            return spf_result.domain is None or _aligned(spf_result.domain, domain, strict_spf)

        def dkim_aligned(sig: _Signature) -> bool:
            return sig.domain is None or _aligned(sig.domain, domain, strict_dkim)

        if spf_result.result == "pass" and spf_result.domain and spf_aligned():
            return _Dmarc("pass", None, domain)
        if any(sig.result == "pass" and sig.domain and dkim_aligned(sig) for sig in signatures):
            return _Dmarc("pass", None, domain)
        # An identifier that could have aligned but could not be checked now may
        # pass later: do not apply the policy on a DNS hiccup.
        if (spf_result.result == "temperror" and spf_aligned()) or any(
            sig.result == "temperror" and dkim_aligned(sig) for sig in signatures
        ):
            return _Dmarc("temperror", None, domain)
        return _Dmarc("fail", policy, domain)

    def _policy_record(self, domain: str) -> tuple[dict[str, str], bool] | None:
        """RFC 7489 §6.6.3: the From domain's record, else its organisational domain's.

        Returns the tags and whether they were inherited from the organisational
        domain (then sp= applies), or None when there is no usable record.
        """
        texts = self._dmarc_records(domain)
        if not texts:
            org = organizational_domain(domain)
            if org == domain:
                return None
            texts = self._dmarc_records(org)
            inherited = True
        else:
            inherited = False
        if len(texts) != 1:  # several records: DMARC does not apply
            return None
        tags: dict[str, str] = dmarc_lookup.answer_to_dict(texts[0])
        return tags, inherited

    def _dmarc_records(self, domain: str) -> list[str]:
        texts = (t.decode("utf-8", "replace") for t in self._resolver.txt("_dmarc." + domain))
        return [text for text in texts if _DMARC_RECORD.match(text)]

    # Authentication-Results ---------------------------------------------------

    def _header(
        self,
        spf_result: _Spf,
        helo: str,
        mail_from: str,
        signatures: list[_Signature],
        dmarc: _Dmarc,
    ) -> str:
        identity = _pvalue(mail_from or helo)
        spf_clause = authres.SPFAuthenticationResult(result=spf_result.result)
        if identity is not None and mail_from:
            spf_clause.smtp_mailfrom = identity
        elif identity is not None:
            spf_clause.smtp_helo = identity
        results: list[authres.AuthenticationResult] = [spf_clause]
        results += [
            authres.DKIMAuthenticationResult(
                result=sig.result, header_d=sig.domain, header_s=sig.selector
            )
            for sig in signatures
        ] or [authres.DKIMAuthenticationResult(result="none")]
        results.append(
            authres.dmarc.DMARCAuthenticationResult(
                result=dmarc.result, header_from=dmarc.from_domain, policy=dmarc.policy
            )
        )
        header = authres.core_features().header(authserv_id=self._authserv_id, results=results)
        return _strip_line_breaks(str(header.header_value()))


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix of ``domain`` plus one label.

    Uses the public suffix list bundled with authheaders, read once. A TLD not on
    the list (``.test``) is its own public suffix, as the list's ``*`` rule says.
    """
    labels = domain.lower().rstrip(".").split(".")
    suffix = _public_suffix_list().get_tld(".".join(labels), wildcard=True, strict=False)
    size = suffix.count(".") + 1 if suffix else 1
    return ".".join(labels[-(size + 1) :])


def is_public_suffix(domain: str) -> bool:
    """Whether ``domain`` is itself a public suffix (``com``, ``co.uk``), under which
    nobody may claim every name."""
    name = domain.lower().rstrip(".")
    return bool(_public_suffix_list().get_tld(name, wildcard=True, strict=False) == name)


@functools.cache
def _public_suffix_list() -> PublicSuffixList:
    source = importlib.resources.files("authheaders") / "public_suffix_list.txt"
    with source.open(encoding="utf-8") as lines:
        return PublicSuffixList(lines)


def _aligned(identifier: str, author: str, strict: bool) -> bool:
    if strict:
        return identifier == author
    return organizational_domain(identifier) == organizational_domain(author)


def _policy(record: dict[str, str], *, subdomain: bool) -> str | None:
    """The policy requested for failing mail, or None when the record gives none.

    RFC 7489 §6.6.3 step 6: a record without a valid p= (or with an invalid sp=)
    counts as p=none if it asks for reports, and as no record otherwise.
    """
    p = record.get("p")
    sp = record.get("sp", p)
    if p not in _POLICIES or sp not in _POLICIES:
        return "none" if record.get("rua") else None
    return sp if subdomain else p


def _dmarc_rank(outcome: _Dmarc) -> tuple[int, int]:
    """Sort key putting the outcome to report first: the least authenticated."""
    order = ("fail", "temperror", "permerror", "none", "pass")
    strictness = -_POLICIES.index(outcome.policy) if outcome.policy in _POLICIES else 0
    return order.index(outcome.result), strictness


def _overall_dkim(signatures: list[_Signature]) -> str:
    results = {sig.result for sig in signatures}
    for result in ("pass", "temperror", "fail", "permerror"):
        if result in results:
            return result
    return "none"


def _identity(sig: dict[bytes, bytes]) -> tuple[str | None, str | None]:
    """d= and s= of a signature, when they are well-formed."""
    domain = _domain(_ascii(sig.get(b"d")))
    selector = _ascii(sig.get(b"s"))
    return domain, selector if _SELECTOR.fullmatch(selector) else None


def _ascii(value: bytes | None) -> str:
    return "" if value is None else value.decode("ascii", "replace").strip()


def _domain(text: str) -> str | None:
    """A domain name in A-label form, or None if ``text`` is not one."""
    try:
        return parse_domain(text, allow_trailing_dot=True).ascii
    except InvalidName:
        return None


def _from_domains(raw: bytes) -> list[str]:
    """Distinct domains of the RFC5322.From addresses, in order.

    Every From field counts, and parts that are not an address are skipped: an
    author domain a reader may see is never dropped for a malformed neighbour.
    """
    values = [value.decode("utf-8", "replace") for value in _header_values(raw, b"from")]
    domains = (_domain(address.rpartition("@")[2]) for _, address in getaddresses(values))
    return list(dict.fromkeys(domain for domain in domains if domain))


def _header_values(raw: bytes, name: bytes) -> Iterable[bytes]:
    head = _HEADER_END.split(raw, maxsplit=1)[0]
    for lines in _folded(_LINE_END.split(head)):
        field_name, colon, value = lines[0].partition(b":")
        if colon and field_name.rstrip(b" \t").lower() == name:
            yield b"".join([value, *lines[1:]])  # unfolded


def _folded(lines: Iterable[bytes]) -> Iterator[list[bytes]]:
    """Header lines grouped into fields: each field's first line and its continuations.

    Grouped, not appended to one another: a field folded over thousands of
    lines would otherwise be copied once per line.
    """
    field: list[bytes] = []
    for line in lines:
        if line[:1] not in (b" ", b"\t") and field:
            yield field
            field = []
        field.append(line)
    if field:
        yield field


_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _strip_line_breaks(text: str) -> str:
    return text.replace("\r", "").replace("\n", "")


def _pvalue(text: str) -> str | None:
    """``text`` made safe as an Authentication-Results property value.

    Line breaks go and other non-printable characters become "?". authres quotes
    values that need it, except any value containing "@", which it emits as is:
    such a value is kept only if it is a plain dot-atom address, and quoted here
    otherwise.
    """
    cleaned = _UNPRINTABLE.sub("?", _strip_line_breaks(text)).strip()
    if not cleaned:
        return None
    if "@" not in cleaned:
        return cleaned
    local, _, domain = cleaned.rpartition("@")
    if _DOT_ATOM.fullmatch(local) and _domain(domain) is not None:
        return cleaned
    return '"' + re.sub(r'(["\\])', r"\\\1", cleaned) + '"'
