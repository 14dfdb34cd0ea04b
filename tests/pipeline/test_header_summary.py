"""The Message-ID and Subject mailmoat keeps in the message log."""

from __future__ import annotations

import pytest

from mailmoat.pipeline.headers import Summary, summary


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"Subject: Lunch\r\nMessage-ID: <a@b>\r\n", Summary("<a@b>", "Lunch")),
        (b"subject:   spaced   out  \r\n", Summary(None, "spaced out")),
        (b"Subject: folded\r\n\tacross lines\r\n", Summary(None, "folded across lines")),
        (b"Subject: =?utf-8?q?caf=C3=A9?=\r\n", Summary(None, "café")),
        ("Subject: déjà vu\r\n".encode(), Summary(None, "déjà vu")),
        (b"Subject: first\r\nSubject: second\r\n", Summary(None, "first")),
        (b"Message-ID:\r\n <folded@id>\r\n", Summary("<folded@id>", None)),
        (b"Message-ID: \r\n", Summary(None, None)),
        (b"not a header line\r\nSubject: after junk\r\n", Summary(None, "after junk")),
        (b"Subject: =?bogus?x?zz?=\r\n", Summary(None, "=?bogus?x?zz?=")),
        (b"", Summary(None, None)),
    ],
)
def test_summary_reads_the_first_fields_as_sent(head: bytes, expected: Summary) -> None:
    assert summary(head + b"\r\nSubject: in the body\r\n") == expected


def test_an_8bit_message_id_is_kept_as_text_that_can_be_stored() -> None:
    found = summary(b"Message-ID: <caf\xe9@x>\r\n\r\n")
    assert found.message_id is not None
    found.message_id.encode("utf-8")  # no lone surrogates left
    assert found.message_id.startswith("<caf") and found.message_id.endswith("@x>")
