from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event

from mailmoat.db.bayes_store import DatabaseTokenStore
from mailmoat.scanners.base import ScanInput
from mailmoat.scanners.builtin import BuiltinScanner
from mailmoat.services.container import Services
from tests.scanners.messages import SIMILAR_SPAM, SPAM


@pytest.fixture(params=["as-configured", "no-inline-reader"])
def store(
    request: pytest.FixtureRequest, services: Services, monkeypatch: pytest.MonkeyPatch
) -> DatabaseTokenStore:
    """The store as configured, and with SQLite's inline reader taken away so that
    reads take the async path (on PostgreSQL both cases are the async path)."""
    if request.param == "no-inline-reader":
        monkeypatch.setattr(services.db, "inline", None)
    return DatabaseTokenStore(services.db)


async def test_counts_of_an_empty_scope(store: DatabaseTokenStore) -> None:
    assert await store.counts("acme", {"cash", "prize"}) == ((0, 0), {})
    assert await store.counts("acme", set()) == ((0, 0), {})


async def test_learn_counts_messages_and_tokens(store: DatabaseTokenStore) -> None:
    await store.learn("acme", {"cash", "prize", "meeting"}, True)
    await store.learn("acme", {"cash", "prize"}, True)
    await store.learn("acme", {"meeting", "budget"}, False)
    await store.learn("other", {"cash"}, False)

    totals, counts = await store.counts("acme", ["cash", "prize", "meeting", "budget", "unseen"])
    assert totals == (2, 1)
    assert counts == {"cash": (2, 0), "prize": (2, 0), "meeting": (1, 1), "budget": (0, 1)}
    assert await store.counts("other", ["cash", "prize"]) == ((0, 1), {"cash": (0, 1)})


async def test_learn_many_tokens_and_unicode(store: DatabaseTokenStore) -> None:
    tokens = {f"word{i}" for i in range(2000)} | {"gr\u00fc\u00dfe", "s:caf\u00e9", "h:" + "f" * 32}
    await store.learn("acme", tokens, True)
    totals, counts = await store.counts("acme", tokens)
    assert totals == (1, 0)
    assert counts == dict.fromkeys(tokens, (1, 0))


async def test_concurrent_learning_loses_nothing(store: DatabaseTokenStore) -> None:
    shared = {f"t{i}" for i in range(50)}
    await asyncio.gather(*(store.learn("acme", shared | {f"own{n}"}, n % 2 == 0) for n in range(6)))
    totals, counts = await store.counts("acme", shared | {"own0", "own1"})
    assert totals == (3, 3)
    assert counts["t7"] == (3, 3)
    assert counts["own0"] == (1, 0) and counts["own1"] == (0, 1)


async def test_counts_is_one_statement(services: Services) -> None:
    """Only meaningful on the async path; the inline reader is one call by construction."""
    store = DatabaseTokenStore(services.db)
    await store.learn("acme", {"a1", "b2"}, True)
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    engine = services.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    inline, services.db.inline = services.db.inline, None
    try:
        totals, counts = await store.counts("acme", {"a1", "b2", "c3"})
    finally:
        services.db.inline = inline
        event.remove(engine, "before_cursor_execute", record)
    assert totals == (1, 0) and counts == {"a1": (1, 0), "b2": (1, 0)}
    assert len([s for s in statements if "bayes" in s]) == 1


async def test_a_false_negative_report_changes_a_similar_message_score(
    store: DatabaseTokenStore,
) -> None:
    scanner = BuiltinScanner(store)
    before = await scanner.scan(ScanInput(SIMILAR_SPAM, "acme"))
    delivered = (
        b"Received: from relay.example ([192.0.2.1]) by gw.test (mailmoat) with ESMTP\r\n"
        b"Authentication-Results: gw.test; spf=pass smtp.mailfrom=lucky-winner.example\r\n" + SPAM
    )
    await scanner.learn(delivered, "acme", spam=True)
    after = await scanner.scan(ScanInput(SIMILAR_SPAM, "acme"))
    bayes = [s for s in after.symbols if s.name.startswith("BAYES_")]
    assert not any(s.name.startswith("BAYES_") for s in before.symbols)
    assert len(bayes) == 1 and bayes[0].score > 0
    assert after.score > before.score
    # Another customer's classifier learned nothing.
    other = await scanner.scan(ScanInput(SIMILAR_SPAM, "globex"))
    assert other.score == before.score
