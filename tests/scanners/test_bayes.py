from __future__ import annotations

import math

import pytest

from mailmoat.scanners.bayes import (
    MAX_CLUES,
    BayesResult,
    MemoryTokenStore,
    chi2q,
    classify,
    combine,
    token_probability,
)
from mailmoat.scanners.tokens import tokenize
from tests.scanners.messages import HAM, NORMAL, SIMILAR_SPAM, SPAM, message

SCOPE = "acme"


async def probability(store: MemoryTokenStore, raw: bytes, scope: str = SCOPE) -> float | None:
    totals, counts = await store.counts(scope, tokenize(raw))
    result = classify(totals, counts)
    return None if result is None else result.probability


def test_chi2q_matches_the_closed_form() -> None:
    assert chi2q(0.0, 2) == 1.0
    for x in (0.5, 3.0, 10.0):
        assert chi2q(x, 2) == pytest.approx(math.exp(-x / 2))
        # two more degrees of freedom add the next term of the series
        assert chi2q(x, 4) == pytest.approx(math.exp(-x / 2) * (1 + x / 2))


def test_token_probability_is_smoothed_towards_one_half() -> None:
    assert token_probability(0, 0, 10, 10) == 0.5
    once, often = token_probability(1, 0, 10, 10), token_probability(50, 0, 100, 100)
    assert 0.5 < once < often < 1.0
    assert token_probability(0, 3, 10, 10) < 0.5
    assert token_probability(5, 5, 10, 10) == pytest.approx(0.5)
    # Seen in a fifth of the spam and a twentieth of the ham: spammy, not certain.
    assert 0.6 < token_probability(20, 5, 100, 100) < 0.8


def test_combine_agrees_with_strong_clues_and_doubts_mixed_ones() -> None:
    assert combine([0.99] * 20) > 0.99
    assert combine([0.01] * 20) < 0.01
    assert combine([0.99] * 10 + [0.01] * 10) == pytest.approx(0.5, abs=0.01)
    assert combine([]) == 0.5


def test_no_opinion_before_anything_is_learned_or_without_clues() -> None:
    assert classify((0, 0), {"cash": (0, 0)}) is None
    assert classify((5, 5), {}) is None
    assert classify((5, 5), {"the": (5, 5)}) is None  # nothing far from 0.5


def test_at_most_max_clues_are_combined() -> None:
    counts = {f"t{i}": (1, 0) for i in range(MAX_CLUES + 50)}
    result = classify((10, 10), counts)
    assert result is not None and result.tokens_used == MAX_CLUES


def test_young_means_too_few_of_either_kind() -> None:
    assert BayesResult(0.9, 5, 1, 0).young
    assert BayesResult(0.9, 5, 50, 9).young
    assert not BayesResult(0.9, 5, 10, 10).young


async def test_training_raises_a_similar_spam_and_not_ham() -> None:
    store = MemoryTokenStore()
    # Prior experience that has nothing to do with the spam campaign.
    for raw in HAM:
        await store.learn(SCOPE, tokenize(raw), spam=False)
    await store.learn(SCOPE, tokenize(message("Lottery tickets and casino chips")), spam=True)
    before = await probability(store, SIMILAR_SPAM)
    for raw in (SPAM, message("Exclusive cash prize, claim your reward now")):
        await store.learn(SCOPE, tokenize(raw), spam=True)
    after = await probability(store, SIMILAR_SPAM)
    assert after is not None and after > 0.9
    assert before is None or after > before + 0.3
    ham = await probability(store, NORMAL)
    assert ham is not None and ham < 0.2


async def test_a_single_spam_report_moves_a_similar_message() -> None:
    store = MemoryTokenStore()
    assert await probability(store, SIMILAR_SPAM) is None
    await store.learn(SCOPE, tokenize(SPAM), spam=True)
    after = await probability(store, SIMILAR_SPAM)
    assert after is not None and after > 0.9


async def test_a_single_spam_report_moves_a_similar_message_in_a_trained_scope() -> None:
    store = MemoryTokenStore()
    for raw in HAM * 4:
        await store.learn(SCOPE, tokenize(raw), spam=False)
    for i in range(10):
        await store.learn(SCOPE, tokenize(message(f"Casino bonus spins number {i}")), spam=True)
    before = await probability(store, SIMILAR_SPAM)
    await store.learn(SCOPE, tokenize(SPAM), spam=True)
    after = await probability(store, SIMILAR_SPAM)
    assert after is not None
    assert after > (before if before is not None else 0.5) + 0.2


async def test_scopes_are_separate() -> None:
    store = MemoryTokenStore()
    await store.learn("one", tokenize(SPAM), spam=True)
    assert await probability(store, SIMILAR_SPAM, "one") is not None
    assert await probability(store, SIMILAR_SPAM, "two") is None
