"""Naive-Bayes spam probability from learned token counts.

The maths is Gary Robinson's, as SpamBayes and SpamAssassin use it: each token's
spam probability is estimated from how often it appeared in learned spam and ham,
pulled towards 0.5 when it was seen rarely; the strongest clues are combined with
Fisher's chi-square method, which says "unsure" (about 0.5) when clues disagree
instead of swinging to an extreme.

No opinion is given until the scope has learned ``MIN_LEARNED`` messages. The
minimum is one message, of either kind, on purpose: a customer's first
false-negative report must already change how similar mail scores. With so little
data common words look as spammy as the reported ones, so callers should weigh
the answer by ``BayesResult.young`` (see ``BuiltinScanner``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

Counts = tuple[int, int]
"""How many learned (spam, ham) messages contained a token, or a scope's totals."""

MIN_LEARNED = 1
"""Learned messages (spam + ham) a scope needs before the classifier has an opinion."""
YOUNG_BELOW = 10
"""A scope with fewer spam or fewer ham messages than this is ``young``."""
UNKNOWN_PROBABILITY = 0.5
"""Robinson's x: the probability assumed for a token never seen."""
UNKNOWN_STRENGTH = 0.45
"""Robinson's s: how many sightings the assumption weighs, as in SpamBayes."""
MIN_STRENGTH = 0.1
"""Tokens whose probability is within this of 0.5 are ignored as noise."""
MAX_CLUES = 150
"""At most this many of the strongest tokens are combined."""


class TokenStore(Protocol):
    """Learned token counts, kept per scope (one classifier per customer)."""

    async def counts(self, scope: str, tokens: Collection[str]) -> tuple[Counts, dict[str, Counts]]:
        """The scope's (spam, ham) message totals and the counts of those tokens
        it has seen (tokens never seen are left out)."""
        ...

    async def learn(self, scope: str, tokens: Collection[str], spam: bool) -> None:
        """Count one more spam (or ham) message containing ``tokens``."""
        ...

    async def totals(self, scope: str) -> Counts | None:
        """The scope's (spam, ham) totals when they are cheap to read, else None.

        Lets the scanner skip tokenizing for a scope that has learned nothing.
        """
        ...


@dataclass(frozen=True, slots=True)
class BayesResult:
    probability: float
    """Spam probability, 0..1."""
    tokens_used: int
    """How many tokens were strong enough to be combined."""
    spam_learned: int
    ham_learned: int

    @property
    def young(self) -> bool:
        """Too few messages of one kind were learned to tell common words from telling ones."""
        return min(self.spam_learned, self.ham_learned) < YOUNG_BELOW


def token_probability(spam: int, ham: int, spam_total: int, ham_total: int) -> float:
    """Robinson's f(w): the token's spam probability, smoothed towards 0.5."""
    spam_ratio = spam / spam_total if spam_total else 0.0
    ham_ratio = ham / ham_total if ham_total else 0.0
    if spam_ratio + ham_ratio == 0.0:
        return UNKNOWN_PROBABILITY
    p = spam_ratio / (spam_ratio + ham_ratio)
    n = spam + ham
    return (UNKNOWN_STRENGTH * UNKNOWN_PROBABILITY + n * p) / (UNKNOWN_STRENGTH + n)


def chi2q(x2: float, dof: int) -> float:
    """P(χ² ≥ x2) for an even number of degrees of freedom."""
    m = x2 / 2.0
    term = math.exp(-m)
    total = term
    for i in range(1, dof // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def combine(probabilities: Collection[float]) -> float:
    """Fisher-Robinson chi-square combining of token probabilities (each in (0, 1))."""
    n = len(probabilities)
    if n == 0:
        return 0.5
    ln_spam = math.fsum(math.log(1.0 - p) for p in probabilities)
    ln_ham = math.fsum(math.log(p) for p in probabilities)
    spam = 1.0 - chi2q(-2.0 * ln_spam, 2 * n)
    ham = 1.0 - chi2q(-2.0 * ln_ham, 2 * n)
    return min(1.0, max(0.0, (spam - ham + 1.0) / 2.0))


def classify(totals: Counts, counts: Mapping[str, Counts]) -> BayesResult | None:
    """The spam probability of a message whose known tokens have ``counts``.

    ``None`` means no opinion: fewer than ``MIN_LEARNED`` messages learned, or no
    token far enough from 0.5 to count.
    """
    spam_total, ham_total = totals
    if spam_total + ham_total < MIN_LEARNED:
        return None
    clues = []
    for spam, ham in counts.values():
        # A token cannot appear in more messages than were learned; counts can
        # exceed totals only if the store was edited, so clamp rather than trust.
        p = token_probability(min(spam, spam_total), min(ham, ham_total), spam_total, ham_total)
        strength = abs(p - 0.5)
        if strength >= MIN_STRENGTH:
            clues.append((strength, p))
    if not clues:
        return None
    if len(clues) > MAX_CLUES:
        clues.sort(reverse=True)
        del clues[MAX_CLUES:]
    probability = combine([p for _strength, p in clues])
    return BayesResult(probability, len(clues), spam_total, ham_total)


class MemoryTokenStore:
    """A TokenStore in a dict, for tests and for running without a database."""

    def __init__(self) -> None:
        self._totals: dict[str, list[int]] = {}
        self._tokens: dict[tuple[str, str], list[int]] = {}

    async def counts(self, scope: str, tokens: Collection[str]) -> tuple[Counts, dict[str, Counts]]:
        spam, ham = self._totals.get(scope, (0, 0))
        found = {}
        for token in tokens:
            entry = self._tokens.get((scope, token))
            if entry is not None:
                found[token] = (entry[0], entry[1])
        return (spam, ham), found

    async def totals(self, scope: str) -> Counts:
        spam, ham = self._totals.get(scope, (0, 0))
        return spam, ham

    async def learn(self, scope: str, tokens: Collection[str], spam: bool) -> None:
        column = 0 if spam else 1
        self._totals.setdefault(scope, [0, 0])[column] += 1
        for token in tokens:
            self._tokens.setdefault((scope, token), [0, 0])[column] += 1
