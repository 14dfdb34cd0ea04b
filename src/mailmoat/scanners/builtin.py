"""The scanner that needs nothing else installed: heuristics plus Bayes.

Parsing, the rules and the Bayes maths take a fraction of a millisecond for
ordinary mail and run inline on the event loop; larger messages (up to
``tokens.MAX_SCAN_BYTES`` is read) are parsed in a worker thread so that they do
not stall other sessions. The only I/O is one store lookup per message.
"""

from __future__ import annotations

import asyncio
import logging

from mailmoat.scanners import heuristics
from mailmoat.scanners.base import ScanInput, ScanResult, Symbol, Verdict
from mailmoat.scanners.bayes import YOUNG_BELOW, BayesResult, TokenStore, classify
from mailmoat.scanners.tokens import parse, tokenize

INLINE_BYTES = 32 * 1024
"""Messages up to this size are parsed on the event loop, larger ones in a thread."""

log = logging.getLogger(__name__)

# (lowest probability, symbol, score), highest band first; the SpamAssassin names.
BAYES_BANDS: tuple[tuple[float, str, float], ...] = (
    (0.99, "BAYES_99", 3.5),
    (0.95, "BAYES_95", 3.0),
    (0.80, "BAYES_80", 2.0),
    (0.60, "BAYES_60", 1.0),
    (0.40, "BAYES_50", 0.0),
    (0.20, "BAYES_40", 0.0),
    (0.05, "BAYES_20", -0.1),
    (0.01, "BAYES_05", -0.5),
    (0.0, "BAYES_00", -1.9),
)
YOUNG_MAX, YOUNG_MIN = 2.0, -0.5
"""While a scope is young (see ``BayesResult.young``) its Bayes score stays within these."""


def bayes_symbol(result: BayesResult) -> Symbol:
    """The BAYES_xx symbol for a classifier answer."""
    name, score = next(
        ((name, score) for lowest, name, score in BAYES_BANDS if result.probability >= lowest),
        BAYES_BANDS[-1][1:],
    )
    description = (
        f"Bayes spam probability {result.probability:.4f} from {result.tokens_used} tokens"
    )
    if result.young:
        capped = min(YOUNG_MAX, max(YOUNG_MIN, score))
        if capped != score:
            score = capped
            description += f" (capped: fewer than {YOUNG_BELOW} spam or ham learned)"
    return Symbol(name, score, description)


class BuiltinScanner:
    name = "builtin"

    def __init__(self, store: TokenStore, threshold: float = 5.0) -> None:
        self.store = store
        self.threshold = threshold

    async def scan(self, message: ScanInput) -> ScanResult:
        try:
            learned = await self.store.totals(message.scope)
        except Exception:
            learned = None  # counts() below reports the store's trouble
        symbols, tokens = await _analysed(message.raw, tokens=learned != (0, 0))
        if tokens:
            try:
                totals, counts = await self.store.counts(message.scope, tokens)
            except Exception as exc:  # Bayes is one opinion of several; carry on without it
                log.warning("Bayes lookup failed, scanning without it: %s", exc)
                symbols.append(Symbol("BAYES_UNAVAILABLE", 0.0, "token store did not answer"))
            else:
                result = classify(totals, counts)
                if result is not None:
                    symbols.append(bayes_symbol(result))
        score = round(float(sum(s.score for s in symbols)), 3)
        verdict = Verdict.SPAM if score >= self.threshold else Verdict.HAM
        return ScanResult(score, self.threshold, verdict, tuple(symbols), self.name)

    async def learn(self, raw: bytes, scope: str, *, spam: bool) -> None:
        _symbols, tokens = await _analysed(raw)
        if tokens:
            await self.store.learn(scope, tokens, spam)

    async def close(self) -> None:
        return None


def _analyse(raw: bytes, tokens: bool = True) -> tuple[list[Symbol], set[str]]:
    parsed = parse(raw)
    return heuristics.check(parsed), tokenize(parsed) if tokens else set()


async def _analysed(raw: bytes, *, tokens: bool = True) -> tuple[list[Symbol], set[str]]:
    """Heuristic symbols, and the Bayes tokens unless they are not wanted."""
    if len(raw) <= INLINE_BYTES:
        return _analyse(raw, tokens)
    return await asyncio.to_thread(_analyse, raw, tokens)
