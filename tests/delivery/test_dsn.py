"""Delivery status notifications: structure, fields, status codes, verbatim originals, safety."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage, Message

import pytest

from mailmoat.delivery.dsn import FailedRecipient, build_dsn, enhanced_status

ARRIVAL = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
NOW = datetime(2024, 5, 6, 12, 0, 0, tzinfo=UTC)
QUEUE_ID = "0123456789abcdef0123456789abcdef"
ORIGINAL_HEADER = (
    b"Received: from client.example.org (client.example.org [192.0.2.1])\r\n"
    b"\tby mx.gateway.test; Wed, 01 May 2024 12:00:00 +0000\r\n"
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.com, carol@example.com\r\n"
    b"Subject: Quarterly numbers\r\n"
    b"Message-ID: <m1@example.org>\r\n"
)
ORIGINAL_BODY = b"Hello Bob,\r\n\r\nthe numbers are attached.\r\n"
ORIGINAL = ORIGINAL_HEADER + b"\r\n" + ORIGINAL_BODY


def recipient(
    address: str = "bob@example.com",
    reply: str = "550 5.1.1 <bob@example.com>: user unknown",
    remote_mta: str | None = "mx1.example.net",
) -> FailedRecipient:
    return FailedRecipient(
        address=address,
        reply=reply,
        remote_mta=remote_mta,
        last_attempt=ARRIVAL + timedelta(minutes=1),
    )


def dsn(
    recipients: list[FailedRecipient] | None = None,
    *,
    original: bytes = ORIGINAL,
    expired: bool = False,
    include_body: bool = False,
    sender: str = "alice@example.org",
) -> bytes:
    return build_dsn(
        reporting_mta="mx.gateway.test",
        sender=sender,
        original_message=original,
        arrival=ARRIVAL,
        recipients=recipients or [recipient()],
        envelope_id=QUEUE_ID,
        expired=expired,
        now=NOW,
        include_body=include_body,
    )


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(raw: bytes) -> list[Message]:
    payload = parse(raw).get_payload()
    assert isinstance(payload, list)
    return [part for part in payload if isinstance(part, Message)]


def status_blocks(raw: bytes) -> list[Message]:
    status = parts(raw)[1]
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    return [block for block in blocks if isinstance(block, Message)]


def human_text(raw: bytes) -> str:
    text = parts(raw)[0]
    assert isinstance(text, EmailMessage)
    content = text.get_content()
    assert isinstance(content, str)
    return content


def assert_wire_format(raw: bytes) -> None:
    assert raw.endswith(b"\r\n")
    lines = raw.split(b"\r\n")
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
    assert all(len(line) <= 998 for line in lines)


# --- enhanced_status ---------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "permanent", "status"),
    [
        ("550 5.1.1 <bob@example.com>: user unknown", True, "5.1.1"),
        ("550-5.7.1 first line\r\n550 5.7.1 second line", True, "5.7.1"),
        ("550 mailbox unavailable", True, "5.0.0"),
        ("554 4.3.0 class mismatch", True, "5.3.0"),  # the basic code's class wins
        ("451 4.3.0 try later", True, "5.3.0"),  # permanent forces class 5
        ("5.2.2 mailbox full", True, "5.2.2"),
        ("no code at all", True, "5.0.0"),
        ("451 4.4.1 connection timed out", False, "4.4.1"),
        ("421 4.4.1 connection refused by [127.0.0.1]:25", False, "4.4.1"),
        ("421 connection refused", False, "4.4.7"),
        ("no code at all", False, "4.4.7"),
        ("250 2.0.0 ok", False, "4.4.7"),
        ("550 5.1.1 user unknown", False, "5.1.1"),  # a permanent reply stays permanent
    ],
)
def test_enhanced_status(reply: str, permanent: bool, status: str) -> None:
    assert enhanced_status(reply, permanent=permanent) == status


# --- structure and header ----------------------------------------------------


def test_multipart_report_structure() -> None:
    raw = dsn()
    message = parse(raw)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert [part.get_content_type() for part in parts(raw)] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert not message.defects
    assert all(not part.defects for part in parts(raw))


def test_top_level_header() -> None:
    message = parse(dsn())
    assert message["From"] == "Mail Delivery System <MAILER-DAEMON@mx.gateway.test>"
    assert b"\r\nTo: <alice@example.org>\r\n" in dsn()
    assert message["To"].addresses[0].addr_spec == "alice@example.org"
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["MIME-Version"] == "1.0"
    assert message["Date"].datetime == NOW
    message_id = message["Message-ID"]
    assert message_id.startswith("<") and message_id.endswith("@mx.gateway.test>")
    assert parse(dsn())["Message-ID"] != message_id


def test_wire_format_crlf_and_line_length() -> None:
    long_reply = "550 5.7.1 " + " ".join(["policy"] * 400) + " " + "x" * 2000
    raw = dsn([recipient(reply=long_reply), recipient("carol@example.com")], include_body=True)
    assert_wire_format(raw)
    assert raw.isascii()


# --- delivery-status fields --------------------------------------------------


def test_per_message_fields() -> None:
    fields = status_blocks(dsn())[0]
    assert fields["Reporting-MTA"] == "dns; mx.gateway.test"
    assert fields["X-Mailmoat-Queue-ID"] == QUEUE_ID
    assert fields["Original-Envelope-Id"] is None
    assert email.utils.parsedate_to_datetime(fields["Arrival-Date"]) == ARRIVAL


def test_per_recipient_fields() -> None:
    raw = dsn(
        [
            recipient(),
            recipient(
                "carol@example.com",
                "421 4.4.1 connection refused by [127.0.0.1]:25",
                remote_mta=None,
            ),
        ]
    )
    _, bob, carol = status_blocks(raw)
    assert bob["Final-Recipient"] == "rfc822; bob@example.com"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.1.1"
    assert bob["Remote-MTA"] == "dns; mx1.example.net"
    assert bob["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@example.com>: user unknown"
    last = email.utils.parsedate_to_datetime(bob["Last-Attempt-Date"])
    assert last == ARRIVAL + timedelta(minutes=1)

    assert carol["Final-Recipient"] == "rfc822; carol@example.com"
    assert carol["Status"] == "5.4.1"  # permanent refusal DSN: class 5 forced
    assert "Remote-MTA" not in carol
    assert carol["Diagnostic-Code"] == "smtp; 421 4.4.1 connection refused by [127.0.0.1]:25"


def test_status_derivation_per_recipient() -> None:
    permanent = dsn([recipient(reply="550 5.1.1 unknown"), recipient(reply="550 unknown")])
    assert [block["Status"] for block in status_blocks(permanent)[1:]] == ["5.1.1", "5.0.0"]

    expired = dsn(
        [recipient(reply="451 4.4.1 timed out"), recipient(reply="421 connection refused")],
        expired=True,
    )
    blocks = status_blocks(expired)[1:]
    assert [block["Status"] for block in blocks] == ["4.4.1", "4.4.7"]
    assert [block["Action"] for block in blocks] == ["failed", "failed"]


def test_long_reply_is_folded_and_round_trips() -> None:
    reply = "550 5.7.1 " + " ".join(f"word{i}" for i in range(60))
    raw = dsn([recipient(reply=reply)])
    assert status_blocks(raw)[1]["Diagnostic-Code"] == f"smtp; {reply}"
    assert b"Diagnostic-Code: smtp; 550 5.7.1 word0" in raw
    assert f"smtp; {reply}".encode() not in raw  # it was folded


def test_huge_reply_is_clipped() -> None:
    raw = dsn([recipient(reply="550 5.7.1 " + "y" * 5000)])
    diagnostic = status_blocks(raw)[1]["Diagnostic-Code"]
    assert diagnostic.startswith("smtp; 550 5.7.1 yyy")
    assert diagnostic.endswith("...")
    assert len(diagnostic) < 998
    assert_wire_format(raw)


def test_multiline_reply_is_joined() -> None:
    reply = "550-5.1.1 The account does not exist.\r\n550 5.1.1 Please check the address."
    block = status_blocks(dsn([recipient(reply=reply)]))[1]
    assert block["Status"] == "5.1.1"
    assert block["Diagnostic-Code"] == (
        "smtp; 550-5.1.1 The account does not exist. 550 5.1.1 Please check the address."
    )


def test_utf8_recipient_uses_rfc6533_xtext() -> None:
    raw = dsn([recipient("jösé+tag@example.com", "550 5.1.1 jösé unknown")])
    block = status_blocks(raw)[1]
    assert block["Final-Recipient"] == "utf-8; j\\x{F6}s\\x{E9}\\x{2B}tag@example.com"
    assert block["Diagnostic-Code"] == "smtp; 550 5.1.1 j\\x{F6}s\\x{E9} unknown"
    assert raw.isascii()  # the human part is quoted-printable
    text = human_text(raw)
    assert "<jösé+tag@example.com>" in text
    assert "550 5.1.1 jösé unknown" in text
    assert_wire_format(raw)


def test_utf8_sender_in_to_header() -> None:
    raw = dsn(sender="ålice@example.org")
    assert "To: <ålice@example.org>\r\n".encode() in raw
    assert parse(raw)["To"] is not None  # the stdlib reads 8-bit headers as surrogate escapes


# --- the returned original ---------------------------------------------------


def test_original_header_returned_verbatim_without_body() -> None:
    raw = dsn()
    returned = parts(raw)[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert b"\r\n\r\n" + ORIGINAL_HEADER + b"\r\n--" in raw
    assert b"the numbers are attached" not in raw


def test_whole_original_with_include_body() -> None:
    raw = dsn(include_body=True)
    returned = parts(raw)[2]
    assert returned.get_content_type() == "message/rfc822"
    assert b"\r\n\r\n" + ORIGINAL + b"\r\n--" in raw
    inner = returned.get_payload()
    assert isinstance(inner, list)
    assert isinstance(inner[0], Message)
    assert inner[0]["Subject"] == "Quarterly numbers"
    assert "Your message is attached." in human_text(raw)


def test_8bit_original_header_survives() -> None:
    header = b"From: Jos\xc3\xa9 <jose@example.org>\r\nSubject: caf\xe9 \xff latin-1\r\n"
    original = header + b"\r\nbody \xc3\xa9\r\n"
    raw = dsn(original=original)
    assert b"\r\n\r\n" + header + b"\r\n--" in raw
    assert b"body \xc3\xa9" not in raw
    assert b"Content-Transfer-Encoding: 8bit\r\n" in raw
    returned = parts(raw)[2]
    assert returned["Content-Transfer-Encoding"] == "8bit"
    assert parse(raw)["Content-Transfer-Encoding"] == "8bit"
    assert_wire_format(raw)

    with_body = dsn(original=original, include_body=True)
    assert b"\r\n\r\n" + original + b"\r\n--" in with_body


def test_original_without_body_or_final_crlf() -> None:
    raw = dsn(original=b"Subject: only a header\r\nX-A: b")
    assert b"\r\n\r\nSubject: only a header\r\nX-A: b\r\n\r\n--" in raw
    assert_wire_format(raw)


def test_bare_lf_original_is_normalised() -> None:
    raw = dsn(original=b"Subject: lf\nX-A: b\n\nbody\n", include_body=True)
    assert b"Subject: lf\r\nX-A: b\r\n\r\nbody\r\n" in raw
    assert_wire_format(raw)


def test_7bit_when_original_is_ascii() -> None:
    raw = dsn()
    assert raw.isascii()
    assert parse(raw)["Content-Transfer-Encoding"] == "7bit"


# --- injection ---------------------------------------------------------------


def test_reply_cannot_inject_a_header() -> None:
    evil = "550 5.1.1 nope\r\nBcc: x@y\r\n\r\nFinal-Recipient: rfc822; z@z"
    raw = dsn([recipient(reply=evil, remote_mta="mx\r\nBcc: x@y")])
    assert b"\r\nBcc:" not in raw
    assert b"\nBcc:" not in raw
    message = parse(raw)
    assert message["Bcc"] is None
    blocks = status_blocks(raw)
    assert len(blocks) == 2
    assert blocks[1]["Bcc"] is None
    assert blocks[1].get_all("Final-Recipient") == ["rfc822; bob@example.com"]
    assert blocks[1]["Diagnostic-Code"] == (
        "smtp; 550 5.1.1 nope Bcc: x@y Final-Recipient: rfc822; z@z"
    )
    assert blocks[1]["Remote-MTA"] == "dns; mx Bcc: x@y"
    assert_wire_format(raw)


def test_sender_and_address_cannot_inject() -> None:
    raw = dsn(
        [recipient("bob@example.com\r\nBcc: x@y")],
        sender="alice@example.org>\r\nBcc: <x@y",
    )
    assert b"\nBcc:" not in raw
    message = parse(raw)
    assert message["Bcc"] is None
    assert b"\r\nTo: <alice@example.org Bcc: x@y>\r\n" in raw
    assert status_blocks(raw)[1]["Final-Recipient"] == "rfc822; bob@example.comBcc: x@y"


def test_control_characters_are_stripped() -> None:
    raw = dsn([recipient(reply="550 5.1.1 \x1b[31mred\x00\x07 text\x85")])
    assert not any(byte < 0x20 and byte not in (0x0D, 0x0A, 0x09) for byte in raw)
    assert status_blocks(raw)[1]["Diagnostic-Code"] == "smtp; 550 5.1.1 [31mred text"


# --- the human-readable part -------------------------------------------------


def test_human_text_names_recipients_and_reasons() -> None:
    raw = dsn(
        [
            recipient(),
            recipient("carol@example.com", "550 5.2.1 mailbox disabled", "mx2.example.net"),
        ]
    )
    text = human_text(raw)
    assert "<bob@example.com>" in text
    assert "mx1.example.net said: 550 5.1.1 <bob@example.com>: user unknown" in text
    assert "<carol@example.com>" in text
    assert "mx2.example.net said: 550 5.2.1 mailbox disabled" in text
    assert "refused it permanently" in text
    assert QUEUE_ID in text
    assert "gateway" in text
    assert parts(raw)[0].get_content_charset() == "utf-8"


def test_human_text_for_expired_message() -> None:
    raw = dsn(
        [recipient(reply="421 4.4.1 connection refused by [127.0.0.1]:25", remote_mta=None)],
        expired=True,
    )
    text = human_text(raw)
    assert "2024-05-01 12:00:00 UTC" in text
    assert "given up" in text
    assert "error: 421 4.4.1 connection refused by [127.0.0.1]:25" in text
    assert "refused it permanently" not in text


# --- input checks ------------------------------------------------------------


def test_rejects_empty_recipients() -> None:
    with pytest.raises(ValueError):
        build_dsn(
            reporting_mta="mx.gateway.test",
            sender="alice@example.org",
            original_message=ORIGINAL,
            arrival=ARRIVAL,
            recipients=[],
            envelope_id=QUEUE_ID,
            expired=False,
            now=NOW,
        )


def test_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError):
        dsn([FailedRecipient("bob@example.com", "550 x", None, datetime(2024, 5, 1))])


def test_other_time_zones_are_converted_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    stamp = datetime(2024, 5, 1, 14, 1, 0, tzinfo=plus_two)
    raw = dsn([FailedRecipient("bob@example.com", "550 x", None, stamp)])
    assert status_blocks(raw)[1]["Last-Attempt-Date"].endswith("12:01:00 +0000")
