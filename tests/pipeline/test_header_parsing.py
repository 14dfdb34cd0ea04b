"""Header fields read from raw bytes: what comes out of folded fields, and at what cost."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import dkim
import pytest
from dkim.canonicalization import Relaxed

from mailmoat.pipeline import dkim_bounds
from mailmoat.pipeline.auth import _from_domains
from mailmoat.pipeline.headers import hops, remove_fields, screen, summary

LINES = 22_000


def folded(name: bytes, lines: int, word: bytes = b"word") -> bytes:
    return name + b": start\r\n" + b"".join(b"\t%s%d\r\n" % (word, n) for n in range(lines))


def test_a_subject_folded_over_22000_lines_is_read_whole() -> None:
    raw = folded(b"Subject", LINES) + b"Message-ID: <after@fold>\r\n\r\nbody\r\n"
    found = summary(raw)
    assert found.message_id == "<after@fold>"
    assert found.subject is not None
    words = found.subject.split(" ")
    assert words[0] == "start" and words[-1] == f"word{LINES - 1}" and len(words) == LINES + 1


def test_removing_a_long_folded_field_keeps_every_other_byte() -> None:
    head = b"From: a@sender.test\r\n" + folded(b"X-Spam-Flag", LINES) + b"To: b@x.test\r\n"
    raw = head + b"\r\n" + folded(b"X-Spam-Flag", 3)  # the body is not a header
    assert remove_fields(raw, "X-Spam-Flag") == (
        b"From: a@sender.test\r\nTo: b@x.test\r\n\r\n" + folded(b"X-Spam-Flag", 3)
    )


def test_a_from_field_folded_over_many_lines_gives_every_author_domain() -> None:
    authors = b"".join(b"\tuser%d@d%d.test,\r\n" % (n, n % 3) for n in range(LINES))
    raw = b"From: first@d9.test,\r\n" + authors + b"\tlast@d9.test\r\nSubject: x\r\n\r\n"
    assert _from_domains(raw) == ["d9.test", "d0.test", "d1.test", "d2.test"]


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@x.test\r\nSubject: one\r\n\ttwo\r\n  three\r\n\r\nbody\r\nline\n",
        b"From a@x.test Mon Jan 1\r\nFrom: a@x.test\r\n\r\n",
        b"\r\nno header at all\r\n",
        b"\nno header, LF\n",
        b"A: 1\nB: 2\n\tfolded\n\nbody\nwith\r\nmixed\rends\n",
        b"A: 1\r\nB: 2\r\n",
        b"A: 1\r\nB: 2",
        b"A: 1\r\n\r\n\r\n\r\n",
        b"A:\r\n\r\n",
        b"X:y:z\r\n\r\n",
        b"A: 1\r\n\x01bad: 2\r\n\r\n",
        b"A: 1\r\nno colon\r\n\r\n",
        b"A: 1\r\n\r\r\n\r\n",
        b"\tcontinuation first\r\nA: 1\r\n\r\n",
        b"A : spaced\r\n\r\n",
        folded(b"X-Long", 300) + b"\r\n" + b"body \r\n" * 10,
    ],
)
def test_dkim_parse_reads_a_message_as_dkimpy_does(raw: bytes) -> None:
    try:
        expected: object = dkim.rfc822_parse(raw)
    except Exception as exc:
        with pytest.raises(Exception) as raised:
            dkim_bounds.parse(raw)
        assert isinstance(raised.value, dkim.MessageFormatError) or isinstance(exc, IndexError)
        return
    headers, body = dkim_bounds.parse(raw)
    assert (headers, body) == expected


def test_relaxed_body_canonicalization_matches_dkimpy_across_slices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dkim_bounds, "SLICE_BYTES", 7)
    chooser = random.Random(6376)
    for _ in range(300):
        body = bytes(chooser.choice(b"ab \t\r\n") for _ in range(chooser.randrange(0, 120)))
        body = body.replace(b"\n", b"\r\n") if chooser.random() < 0.7 else body
        assert dkim_bounds._relaxed(body) == Relaxed.canonicalize_body(body), body


def test_hops_count_received_fields_of_the_header_only() -> None:
    head = b"Received: a\r\nX: b\r\nRECEIVED :\r\n\tc\r\nX-Received: d\r\n Received: e\r\n"
    assert hops(head) == 2
    raw = head + b"\r\nReceived: in the body\r\n"
    assert screen(raw, max_header_size=1024, max_hops=2) is None
    assert screen(raw, max_header_size=1024, max_hops=1) == "mail-loop"
    assert screen(raw, max_header_size=len(head) - 1, max_hops=2) == "header-size"
    assert screen(raw, max_header_size=len(head), max_hops=2) is None


def _cpu(work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best


@pytest.mark.parametrize(
    "parse",
    [
        pytest.param(summary, id="summary"),
        pytest.param(lambda raw: remove_fields(raw, "Subject"), id="remove_fields"),
        pytest.param(_from_domains, id="from_domains"),
        pytest.param(dkim_bounds.parse, id="dkim_parse"),
    ],
)
def test_reading_a_folded_field_costs_in_proportion_to_its_lines(
    parse: Callable[[bytes], object],
) -> None:
    """Eight times the lines may cost about eight times as much, not sixty-four."""

    def message(lines: int) -> bytes:
        return (
            b"From: a@x.test\r\n"
            + folded(b"Subject", lines, b"a rather long word to copy")
            + b"\r\nbody\r\n"
        )

    small, large = message(LINES // 4), message(LINES * 2)
    assert _cpu(lambda: parse(large)) < 32 * max(_cpu(lambda: parse(small)), 0.001)
