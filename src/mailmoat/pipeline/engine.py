"""The pipeline as the SMTP front end uses it: evaluate a message, then finish its bytes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import ParamSpec, TypeVar

from mailmoat.domain.policy import Action
from mailmoat.domain.settings import AbusePolicy
from mailmoat.pipeline import headers
from mailmoat.pipeline.auth import AuthResult, SenderAuthenticator
from mailmoat.pipeline.chain import Decision, decide
from mailmoat.pipeline.rules import Demand, Finding, dmarc_rule, spam_rule, spf_rule
from mailmoat.scanners.base import ScanInput, Scanner, ScannerUnavailable, ScanResult

_BODY_COPY_MAX = 64 * 1024  # a larger body is not copied on its way through finish
INLINE_BYTES = 64 * 1024
"""Work on a message up to this size runs on the event loop; on a larger one, in a thread."""

_P = ParamSpec("_P")
_T = TypeVar("_T")


async def sized(size: int, func: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``func(*args, **kwargs)``, in a worker thread when ``size`` is above ``INLINE_BYTES``.

    Reading and rewriting a large message (its header fields, its copies) takes
    milliseconds to, with a pathological header, tens of milliseconds: long enough
    to hold up every other session on the loop. For ordinary mail the work is a
    few microseconds, less than a hop to a thread and back.
    """
    if size <= INLINE_BYTES:
        return func(*args, **kwargs)
    return await asyncio.to_thread(func, *args, **kwargs)


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message as received, and the filtering profile shared by its recipients.

    ``unscanned_reason`` is set when the recipients skip filtering (their sender
    is safelisted, or their filter is off); the message is then accepted as is.
    """

    raw: bytes
    scope: str
    client_ip: str
    helo: str
    mail_from: str
    recipients: Sequence[str]
    policy: AbusePolicy
    unscanned_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Evaluation:
    decision: Decision
    verdict: str
    score: float | None = None
    rules: list[dict[str, object]] = field(default_factory=list)
    auth: AuthResult | None = None
    scan_seconds: float | None = None
    scanner: str = ""

    @property
    def action(self) -> Action:
        return self.decision.action


@dataclass(frozen=True, slots=True)
class Stamp:
    """What goes into the Received header mailmoat adds."""

    message_id: str
    received_at: datetime
    helo: str
    client_ip: str
    protocol: str
    recipient: str | None


def _rules(scan: ScanResult | None, findings: Sequence[Finding | None]) -> list[dict[str, object]]:
    rules: list[dict[str, object]] = [
        {"name": f.rule, "score": f.score, "description": f.detail} for f in findings if f
    ]
    if scan is not None:
        rules += [
            {"name": s.name, "score": round(s.score, 3), "description": s.description}
            for s in scan.symbols
        ]
    return rules


class Pipeline:
    def __init__(
        self,
        *,
        hostname: str,
        scanner: Scanner | None,
        authenticator: SenderAuthenticator | None,
        accept_when_scanner_fails: bool = False,
    ) -> None:
        self.hostname = hostname
        self.scanner = scanner
        self.authenticator = authenticator
        self.accept_when_scanner_fails = accept_when_scanner_fails

    async def evaluate(self, message: Incoming) -> Evaluation:
        """Decide what the message deserves. Raises ScannerUnavailable (→ try later)."""
        if message.unscanned_reason is not None:
            decision = Decision(Action.ACCEPT, message.unscanned_reason, "filtering skipped")
            return Evaluation(decision, "unscanned")
        started = time.perf_counter()
        auth, (scan, scan_error) = await asyncio.gather(
            self._authenticate(message), self._scan(message)
        )
        elapsed = time.perf_counter() - started
        findings = [dmarc_rule(auth), spam_rule(scan), spf_rule(auth)]
        if scan_error is not None:
            findings.append(Finding("scanner-unavailable", Demand.NOTE, scan_error))
        decision = decide(findings, message.policy)
        return Evaluation(
            decision,
            "unscanned" if scan is None else scan.verdict.value,
            None if scan is None else round(scan.score, 3),
            _rules(scan, findings),
            auth,
            elapsed,
            "" if scan is None else scan.scanner,
        )

    async def _authenticate(self, message: Incoming) -> AuthResult | None:
        if self.authenticator is None:
            return None
        return await self.authenticator.check(
            message.raw, client_ip=message.client_ip, helo=message.helo, mail_from=message.mail_from
        )

    async def _scan(self, message: Incoming) -> tuple[ScanResult | None, str | None]:
        if self.scanner is None:
            return None, None
        request = ScanInput(
            message.raw,
            message.scope,
            message.client_ip,
            message.helo,
            message.mail_from,
            tuple(message.recipients),
        )
        try:
            return await self.scanner.scan(request), None
        except ScannerUnavailable as exc:
            if not self.accept_when_scanner_fails:
                raise
            return None, str(exc) or "scanner unavailable"

    def finish(
        self,
        raw: bytes,
        evaluation: Evaluation,
        stamp: Stamp,
        flag_header: tuple[str, str] | None,
    ) -> bytes:
        """The bytes to keep: mailmoat's own header fields on top of the message.

        Forged copies of the fields mailmoat vouches for are removed first: an
        Authentication-Results claiming to come from this host, and the domain's
        spam flag header (whether or not mailmoat sets it, so that a sender
        cannot set or clear the flag itself).
        """
        end = raw.find(b"\r\n\r\n")
        if end >= 0 and len(raw) - end > _BODY_COPY_MAX:
            # Only the header section changes: the body is copied once, into the result.
            head = self.finish(raw[: end + 4], evaluation, stamp, flag_header)
            return b"".join((head, memoryview(raw)[end + 4 :]))
        raw = headers.remove_fields(raw, "Authentication-Results", self.hostname)
        if flag_header is not None:
            raw = headers.remove_fields(raw, flag_header[0])
        added: list[tuple[str, str]] = [("Received", self._received(stamp))]
        if evaluation.auth is not None:
            added.append(("Authentication-Results", evaluation.auth.header_value))
        if flag_header is not None and evaluation.action is Action.FLAG:
            added.append(flag_header)
        return headers.prepend(raw, added)

    def _received(self, stamp: Stamp) -> str:
        helo = headers.safe_text(stamp.helo) or "unknown"
        recipient = f" for <{headers.safe_text(stamp.recipient)}>" if stamp.recipient else ""
        return (
            f"from {helo} ([{stamp.client_ip}]) by {self.hostname} (mailmoat) "
            f"with {stamp.protocol} id {stamp.message_id}{recipient}; "
            f"{format_datetime(stamp.received_at)}"
        )
