"""Delivery status notifications (bounces): RFC 3464, RFC 3461, RFC 6522, RFC 6533.

The message is assembled by hand, byte by byte, so that the returned original
(header section or whole message) is carried verbatim, 8-bit bytes included.

Everything that comes from outside (addresses, replies, host names) is cleaned
before it goes into a header or a delivery-status field: line breaks and other
control characters never reach the output. The delivery-status part is pure
ASCII: a non-ASCII recipient is written with the ``utf-8`` address type in its
7-bit ``utf-8-addr-xtext`` form (RFC 6533), other non-ASCII text as ``\\x{HEX}``.
The human-readable part is UTF-8 (quoted-printable when it is not ASCII).

The result is 7-bit unless the original message or the sender address has 8-bit
bytes; the caller sends it with the null reverse path, with BODY=8BITMIME when
the result is not ASCII, and with SMTPUTF8 when the sender is not ASCII.
"""

from __future__ import annotations

import quopri
import re
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

__all__ = ["FailedRecipient", "build_dsn", "enhanced_status"]

SUBJECT = "Undelivered Mail Returned to Sender"

_CRLF = "\r\n"
_FOLD_WIDTH = 78
_MAX_VALUE = 900  # keeps every generated line far below the 998-octet limit of RFC 5322
_TEXT_WIDTH = 76

_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
_BARE_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
# "550 5.1.1 text", "550-5.1.1 text", "550 text", "5.1.1 text"
_REPLY = re.compile(
    r"""^\s*
    (?:(?P<basic>[2-5][0-9][0-9])(?:[ \t-]+|$))?
    (?:(?P<cls>[245])\.(?P<subject>[0-9]{1,3})\.(?P<detail>[0-9]{1,3})(?![0-9.]))?
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    """One recipient the gateway could not deliver to, with the last reply it got."""

    address: str  # final recipient (ASCII or UTF-8 local part)
    reply: str  # the last reply, real ("550 5.1.1 ...") or synthetic ("421 4.4.1 ...")
    remote_mta: str | None  # the downstream host that gave the reply, None when none answered
    last_attempt: datetime  # aware


def enhanced_status(reply: str, *, permanent: bool) -> str:
    """The RFC 3463 status code to report for ``reply``.

    ``permanent=True`` (a permanent refusal): the reply's own ``5.x.y``; a reply
    without an enhanced code gives ``5.0.0``; a temporary (4xx) reply is forced to
    class 5 (``4.x.y`` becomes ``5.x.y``).

    ``permanent=False`` (the message expired after temporary failures): the
    reply's own ``4.x.y`` with action "failed", as Postfix reports it; a reply
    without an enhanced code (or without any code) gives ``4.4.7`` (delivery time
    expired). A permanent (5xx) reply keeps its class 5.

    An enhanced code whose class contradicts the basic code takes the basic
    code's class; 2xx/3xx replies and unparseable text count as having no code.
    """
    first_line = _LINE_BREAKS.split(reply, maxsplit=1)[0]
    match = _REPLY.match(first_line)
    basic = match.group("basic") if match else None
    cls = basic[0] if basic else None
    if cls not in (None, "4", "5"):
        return "5.0.0" if permanent else "4.4.7"
    if match and match.group("cls"):
        cls = cls or match.group("cls")
        rest = f"{int(match.group('subject'))}.{int(match.group('detail'))}"
    elif cls == "5" or (cls is None and permanent):
        cls, rest = "5", "0.0"
    elif permanent:
        rest = "0.0"
    else:
        cls, rest = "4", "4.7"
    if permanent:
        cls = "5"
    return f"{cls}.{rest}"


def build_dsn(
    *,
    reporting_mta: str,
    sender: str,
    original_message: bytes,
    arrival: datetime,
    recipients: Sequence[FailedRecipient],
    envelope_id: str,
    expired: bool,
    now: datetime,
    include_body: bool = False,
) -> bytes:
    """The complete failure DSN (CRLF line endings) to send to ``sender`` from ``<>``.

    ``expired``: True when the gateway gave up after temporary failures (statuses
    from ``enhanced_status(..., permanent=False)``), False for permanent refusals.
    ``include_body``: return the whole original as message/rfc822 instead of its
    header section as text/rfc822-headers. Raises ValueError for an empty
    ``recipients`` or a naive datetime.
    """
    if not recipients:
        raise ValueError("a DSN needs at least one failed recipient")
    mta = _ascii_field(reporting_mta) or "localhost"
    queue_id = _ascii_field(envelope_id)
    original = _BARE_LINE_ENDS.sub(b"\r\n", original_message)

    human = _human_part(mta, recipients, queue_id, _utc(arrival), expired, include_body)
    status = _status_part(mta, queue_id, _utc(arrival), recipients, expired)
    returned = _returned_part(original, include_body)
    parts = [human, status, returned]

    boundary = _boundary(parts)
    body = b"This is a MIME-encapsulated message.\r\n"
    for part in parts:
        body += b"\r\n--" + boundary + b"\r\n" + part
    body += b"\r\n--" + boundary + b"--\r\n"

    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{mta}>",
        f"To: <{_header_text(sender).replace('<', '').replace('>', '')}>",
        f"Subject: {SUBJECT}",
        f"Date: {format_datetime(_utc(now))}",
        f"Message-ID: <{secrets.token_hex(16)}@{mta}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f' boundary="{boundary.decode("ascii")}"',
        f"Content-Transfer-Encoding: {'7bit' if body.isascii() else '8bit'}",
    ]
    head = (_CRLF.join(headers) + _CRLF + _CRLF).encode("utf-8")
    return head + body


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime in a DSN: {moment!r}")
    return moment.astimezone(UTC)


def _clip(text: str, limit: int = _MAX_VALUE) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _header_text(value: str) -> str:
    """``value`` on one line: line breaks and control characters become spaces, clipped."""
    return _clip(" ".join(_CONTROLS.sub(" ", value).split()))


def _ascii_field(value: str) -> str:
    """Like ``_header_text`` for an ASCII-only field: non-ASCII written as ``\\x{HEX}``."""
    out: list[str] = []
    size = 0
    for char in " ".join(_CONTROLS.sub(" ", value).split()):
        piece = char if char.isascii() else f"\\x{{{ord(char):X}}}"
        if size + len(piece) > _MAX_VALUE - 3:
            out.append("...")
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


def _xtext_address(address: str) -> str:
    """RFC 6533 utf-8-addr-xtext: QCHARs as they are, everything else as ``\\x{HEX}``."""
    out: list[str] = []
    for char in address:
        if "!" <= char <= "~" and char not in "+=\\":
            out.append(char)
        else:
            out.append(f"\\x{{{ord(char):X}}}")
    return _clip("".join(out))


def _recipient_field(address: str) -> str:
    cleaned = _CONTROLS.sub("", address).strip()
    if cleaned.isascii():
        return f"rfc822; {_clip(cleaned)}"
    return f"utf-8; {_xtext_address(cleaned)}"


def _fold(name: str, value: str) -> str:
    """One field, folded at spaces so lines stay within 78 characters where possible."""
    tokens = re.findall(r" *[^ ]+", f"{name}: {value}")
    lines: list[str] = []
    current = ""
    for token in tokens:
        if current and len(current) + len(token) > _FOLD_WIDTH:
            lines.append(current)
            current = token
        else:
            current += token
    lines.append(current)
    return _CRLF.join(lines)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _human_part(
    mta: str,
    recipients: Sequence[FailedRecipient],
    queue_id: str,
    arrival: datetime,
    expired: bool,
    include_body: bool,
) -> bytes:
    if expired:
        why = (
            "The receiving mail servers kept refusing it temporarily. The gateway "
            f"retried since it received the message ({_when(arrival)}) and has now "
            "given up. The last error for each recipient:"
        )
    else:
        why = "The receiving mail server refused it permanently:"
    paragraphs = [
        f"This is the mail gateway (mailmoat) at {mta}.",
        textwrap.fill(
            f"Your message could not be delivered to the recipients below. {why}",
            _TEXT_WIDTH,
        ),
    ]
    for recipient in recipients:
        reply = _header_text(recipient.reply)
        if recipient.remote_mta:
            reply = f"{_header_text(recipient.remote_mta)} said: {reply}"
        else:
            reply = f"error: {reply}"
        wrapped = textwrap.fill(
            reply,
            _TEXT_WIDTH,
            initial_indent="    ",
            subsequent_indent="    ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        paragraphs.append(f"<{_header_text(recipient.address)}>\n{wrapped}")
    attached = "Your message is attached." if include_body else "Its header is attached."
    paragraphs.append(f"Queue ID: {queue_id}\n{attached}")
    text = "\n\n".join(paragraphs) + "\n"

    if text.isascii():
        encoding, payload = "7bit", text.encode("ascii")
    else:
        encoding, payload = "quoted-printable", quopri.encodestring(text.encode("utf-8"))
    header = (
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: {encoding}\r\n"
        "Content-Description: Notification\r\n\r\n"
    ).encode("ascii")
    return header + payload.replace(b"\n", b"\r\n")


def _status_part(
    mta: str,
    queue_id: str,
    arrival: datetime,
    recipients: Sequence[FailedRecipient],
    expired: bool,
) -> bytes:
    blocks = [
        [
            _fold("Reporting-MTA", f"dns; {mta}"),
            _fold("X-Mailmoat-Queue-ID", queue_id),
            _fold("Arrival-Date", format_datetime(arrival)),
        ]
    ]
    for recipient in recipients:
        block = [
            _fold("Final-Recipient", _recipient_field(recipient.address)),
            "Action: failed",
            f"Status: {enhanced_status(recipient.reply, permanent=not expired)}",
        ]
        if recipient.remote_mta is not None and (remote := _ascii_field(recipient.remote_mta)):
            block.append(_fold("Remote-MTA", f"dns; {remote}"))
        block.append(_fold("Diagnostic-Code", f"smtp; {_ascii_field(recipient.reply)}"))
        block.append(_fold("Last-Attempt-Date", format_datetime(_utc(recipient.last_attempt))))
        blocks.append(block)
    text = _CRLF.join(_CRLF.join(block) + _CRLF for block in blocks)
    header = "Content-Type: message/delivery-status\r\nContent-Description: Delivery report\r\n\r\n"
    return (header + text).encode("ascii")


def _returned_part(original: bytes, include_body: bool) -> bytes:
    if include_body:
        content_type, description, content = "message/rfc822", "Undelivered message", original
    else:
        end = original.find(b"\r\n\r\n")
        if original.startswith(b"\r\n"):
            content = b""
        elif end == -1:
            content = original if original.endswith(b"\r\n") else original + b"\r\n"
        else:
            content = original[: end + 2]
        content_type, description = "text/rfc822-headers", "Undelivered message headers"
    encoding = "7bit" if content.isascii() else "8bit"
    header = (
        f"Content-Type: {content_type}\r\n"
        f"Content-Transfer-Encoding: {encoding}\r\n"
        f"Content-Description: {description}\r\n\r\n"
    ).encode("ascii")
    return header + content


def _boundary(parts: Sequence[bytes]) -> bytes:
    """A boundary that occurs in none of the parts."""
    while True:
        boundary = f"=_mailmoat_{secrets.token_hex(16)}".encode("ascii")
        if not any(boundary in part for part in parts):
            return boundary
