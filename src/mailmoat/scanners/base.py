"""The ``Scanner`` protocol every spam scanner implements, and what it returns."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class Verdict(enum.StrEnum):
    HAM = "ham"
    SPAM = "spam"


@dataclass(frozen=True, slots=True)
class Symbol:
    """One rule that fired, with what it added to the score."""

    name: str
    score: float
    description: str = ""


@dataclass(frozen=True, slots=True)
class ScanInput:
    """A message to scan and what the SMTP session knew about it.

    ``scope`` names the Bayes classifier to consult (one per customer); scanners
    without a classifier of their own ignore it.
    """

    raw: bytes
    scope: str
    client_ip: str = ""
    helo: str = ""
    mail_from: str = ""
    recipients: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class ScanResult:
    score: float
    threshold: float
    verdict: Verdict
    symbols: tuple[Symbol, ...] = field(default_factory=tuple)
    scanner: str = ""


class ScannerUnavailable(Exception):
    """The scanner could not give an answer (down, timed out, unreadable reply)."""


class Scanner(Protocol):
    name: str

    async def scan(self, message: ScanInput) -> ScanResult:
        """Score a message. Raises ScannerUnavailable when no verdict can be given."""
        ...

    async def close(self) -> None:
        """Release connections; the scanner is not used afterwards."""
        ...


class Learner(Protocol):
    """A scanner that learns from misclassification reports."""

    async def learn(self, raw: bytes, scope: str, *, spam: bool) -> None: ...
