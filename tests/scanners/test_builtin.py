from __future__ import annotations

from collections.abc import Collection

import pytest

from mailmoat.scanners.base import ScanInput, Verdict
from mailmoat.scanners.bayes import BayesResult, Counts, MemoryTokenStore
from mailmoat.scanners.builtin import INLINE_BYTES, BuiltinScanner, bayes_symbol
from mailmoat.scanners.tokens import MAX_SCAN_BYTES
from tests.scanners.messages import GTUBE_MESSAGE, HAM, NORMAL, SIMILAR_SPAM, SPAM, message


def scan_input(raw: bytes, scope: str = "acme") -> ScanInput:
    return ScanInput(raw, scope, "192.0.2.1", "mail.sender.example", "alice@sender.example")


async def test_gtube_is_spam() -> None:
    result = await BuiltinScanner(MemoryTokenStore()).scan(scan_input(GTUBE_MESSAGE))
    assert result.verdict is Verdict.SPAM
    assert result.score >= 1000 and result.threshold == 5.0
    assert "GTUBE" in {s.name for s in result.symbols}
    assert result.scanner == "builtin"


async def test_normal_mail_is_ham() -> None:
    result = await BuiltinScanner(MemoryTokenStore()).scan(scan_input(NORMAL))
    assert result.verdict is Verdict.HAM
    assert result.score == 0.0 and result.symbols == ()


async def test_threshold_is_the_scanners() -> None:
    raw = message(headers={"Date": None, "From": None})  # 1.0 + 1.5
    assert (await BuiltinScanner(MemoryTokenStore(), 2.5).scan(scan_input(raw))).verdict is (
        Verdict.SPAM
    )
    assert (await BuiltinScanner(MemoryTokenStore()).scan(scan_input(raw))).verdict is Verdict.HAM


@pytest.mark.parametrize(
    ("probability", "name", "score"),
    [
        (0.999, "BAYES_99", 3.5),
        (0.97, "BAYES_95", 3.0),
        (0.85, "BAYES_80", 2.0),
        (0.5, "BAYES_50", 0.0),
        (0.03, "BAYES_05", -0.5),
        (0.001, "BAYES_00", -1.9),
    ],
)
def test_bayes_bands(probability: float, name: str, score: float) -> None:
    symbol = bayes_symbol(BayesResult(probability, 12, 200, 200))
    assert (symbol.name, symbol.score) == (name, score)
    assert f"{probability:.4f}" in symbol.description


def test_a_young_classifier_is_heard_less() -> None:
    spammy = bayes_symbol(BayesResult(0.999, 12, 1, 0))
    assert (spammy.name, spammy.score) == ("BAYES_99", 2.0)
    assert "capped" in spammy.description
    hammy = bayes_symbol(BayesResult(0.001, 12, 3, 3))
    assert (hammy.name, hammy.score) == ("BAYES_00", -0.5)


async def test_learning_spam_raises_similar_mail_and_ham_lowers_it() -> None:
    scanner = BuiltinScanner(MemoryTokenStore())
    before = await scanner.scan(scan_input(SIMILAR_SPAM))
    for _ in range(10):
        await scanner.learn(SPAM, "acme", spam=True)
        for raw in HAM:
            await scanner.learn(raw, "acme", spam=False)
    spam = await scanner.scan(scan_input(SIMILAR_SPAM))
    ham = await scanner.scan(scan_input(HAM[0]))
    assert {s.name: s.score for s in spam.symbols}["BAYES_99"] == 3.5
    assert spam.score == before.score + 3.5
    assert {s.name: s.score for s in ham.symbols}["BAYES_00"] == -1.9


class BrokenStore:
    async def counts(self, scope: str, tokens: Collection[str]) -> tuple[Counts, dict[str, Counts]]:
        raise ConnectionError("database is down")

    async def learn(self, scope: str, tokens: Collection[str], spam: bool) -> None:
        raise ConnectionError("database is down")


async def test_scanning_goes_on_without_the_store() -> None:
    result = await BuiltinScanner(BrokenStore()).scan(scan_input(GTUBE_MESSAGE))
    assert result.verdict is Verdict.SPAM
    assert {"GTUBE", "BAYES_UNAVAILABLE"} <= {s.name for s in result.symbols}


async def test_large_and_huge_messages_are_scanned() -> None:
    scanner = BuiltinScanner(MemoryTokenStore())
    filler = "ordinary words in a long report " * 100 + "\n"
    large = message(filler * (INLINE_BYTES // len(filler) + 2) + "lastword")
    assert len(large) > INLINE_BYTES
    await scanner.learn(large, "acme", spam=True)
    result = await scanner.scan(scan_input(large))
    assert "BAYES_99" in {s.name for s in result.symbols}
    huge = message(filler * (2 * MAX_SCAN_BYTES // len(filler)))
    assert (await scanner.scan(scan_input(huge))).verdict is Verdict.HAM


async def test_malformed_mail_is_scanned() -> None:
    scanner = BuiltinScanner(MemoryTokenStore())
    for raw in (b"", b"\xff\xfe\x00garbage", b"Content-Type: multipart/mixed\r\n\r\n--"):
        await scanner.learn(raw, "acme", spam=True)
        result = await scanner.scan(scan_input(raw))
        assert "MISSING_FROM" in {s.name for s in result.symbols}
