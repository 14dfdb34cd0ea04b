"""Cheap named rules with scores, in the manner of SpamAssassin.

Each rule adds a little (0.1 to 2.5): no single rule, and no usual combination of
them, brings ordinary mail near the default threshold of 5. GTUBE is the
exception: it exists to make any spam filter say "spam".
"""

from __future__ import annotations

import email.utils
import functools
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mailmoat.scanners.base import Symbol
from mailmoat.scanners.tokens import ParsedMessage

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
_GTUBE_BYTES = GTUBE.encode()

_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_LETTERS = re.compile(r"[^\W\d_]")


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    score: float
    description: str
    test: Callable[[ParsedMessage, datetime], bool]


def _gtube(m: ParsedMessage, _now: datetime) -> bool:
    return _GTUBE_BYTES in m.body or GTUBE in m.text or GTUBE in m.html_text


def _missing(name: str) -> Callable[[ParsedMessage, datetime], bool]:
    return lambda m, _now: name not in m.header_names


@functools.lru_cache(maxsize=256)
def _parse_date(value: str) -> datetime | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _date(m: ParsedMessage) -> datetime | None:
    return _parse_date(m.date) if m.date else None


def _invalid_date(m: ParsedMessage, _now: datetime) -> bool:
    return m.date is not None and _date(m) is None


def _future_date(m: ParsedMessage, now: datetime) -> bool:
    when = _date(m)
    return when is not None and when - now > timedelta(days=1)


def _empty_subject(m: ParsedMessage, _now: datetime) -> bool:
    return m.subject is not None and not m.subject.strip()


def _subject_caps(m: ParsedMessage, _now: datetime) -> bool:
    subject = m.subject or ""
    letters = _LETTERS.findall(subject)
    return len(letters) >= 8 and len(subject.split()) >= 2 and subject.upper() == subject


def _subject_exclaim(m: ParsedMessage, _now: datetime) -> bool:
    subject = m.subject or ""
    return "!!" in subject or subject.count("!") >= 3


def _many_exclaim(m: ParsedMessage, _now: datetime) -> bool:
    return m.text.count("!") + m.html_text.count("!") >= 10


def _html_only(m: ParsedMessage, _now: datetime) -> bool:
    return m.has_html_part and not m.has_text_part


def _empty_body(m: ParsedMessage, _now: datetime) -> bool:
    return not m.text.strip() and not m.html_text.strip()


def _ip_url(m: ParsedMessage, _now: datetime) -> bool:
    for host in m.url_hosts:
        if host.isdigit():  # http://3232235777/ is an address too
            return True
        try:
            ipaddress.ip_address(host)
        except ValueError:
            continue
        return True
    return False


def _from_name_other_address(m: ParsedMessage, _now: datetime) -> bool:
    if not m.from_ or m.from_.count("@") < 2:
        return False
    name, address = email.utils.parseaddr(m.from_)
    shown = _ADDRESS.search(name)
    return shown is not None and shown.group(0).lower() != address.lower()


RULES: tuple[Rule, ...] = (
    Rule("GTUBE", 1000.0, "Generic Test for Unsolicited Bulk Email", _gtube),
    Rule("MISSING_FROM", 1.5, "No From header", _missing("from")),
    Rule("MISSING_DATE", 1.0, "No Date header", _missing("date")),
    Rule("INVALID_DATE", 0.5, "Date header cannot be read", _invalid_date),
    Rule("DATE_IN_FUTURE", 1.0, "Date header more than a day ahead", _future_date),
    Rule("MISSING_MID", 0.5, "No Message-ID header", _missing("message-id")),
    Rule("MISSING_SUBJECT", 1.0, "No Subject header", _missing("subject")),
    Rule("EMPTY_SUBJECT", 0.5, "Subject is empty", _empty_subject),
    Rule("SUBJ_ALL_CAPS", 1.0, "Subject is all capitals", _subject_caps),
    Rule("SUBJ_EXCLAIM", 0.8, "Subject has several exclamation marks", _subject_exclaim),
    Rule("MANY_EXCLAIM", 0.7, "Body has ten or more exclamation marks", _many_exclaim),
    Rule("MIME_HTML_ONLY", 0.7, "HTML part without a text part", _html_only),
    Rule("EMPTY_BODY", 0.5, "No readable text", _empty_body),
    Rule("URL_IP_HOST", 1.5, "Link to a bare IP address", _ip_url),
    Rule("MIME_MANY_PARTS", 1.0, "Too many MIME parts to read", lambda m, _now: m.too_many_parts),
    Rule(
        "FROM_NAME_OTHER_ADDR",
        2.0,
        "From display name shows another address",
        _from_name_other_address,
    ),
)


def check(message: ParsedMessage, *, now: datetime | None = None) -> list[Symbol]:
    """The rules that fire on ``message``, as symbols. A rule that errs does not fire."""
    when = now or datetime.now(UTC)
    fired = []
    for rule in RULES:
        try:
            hit = rule.test(message, when)
        except Exception:
            hit = False
        if hit:
            fired.append(Symbol(rule.name, rule.score, rule.description))
    return fired
