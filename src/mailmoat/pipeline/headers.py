"""Reading and adding header fields on raw message bytes, leaving the body untouched."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from email.header import decode_header, make_header

_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_RECEIVED = re.compile(rb"^received[ \t]*:", re.IGNORECASE | re.MULTILINE)

REASON_HEADER_SIZE = "header-size"
REASON_MAIL_LOOP = "mail-loop"


@dataclass(frozen=True, slots=True)
class Summary:
    message_id: str | None
    subject: str | None


def split_head(raw: bytes) -> tuple[bytes, bytes]:
    """The header block (with its final CRLF) and everything after it."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        if raw.startswith(b"\r\n"):
            return b"", raw
        return raw, b""
    return raw[: end + 2], raw[end + 2 :]


def head_within(raw: bytes, limit: int) -> bytes | None:
    """The header section (its fields, each with its CRLF), or None when it is longer
    than ``limit`` bytes. Only the first ``limit`` bytes are searched."""
    if raw.startswith(b"\r\n"):
        return b""
    end = raw.find(b"\r\n\r\n", 0, limit + 2)
    if end >= 0:
        return raw[: end + 2]
    return raw if len(raw) <= limit else None


def hops(head: bytes) -> int:
    """How many Received fields a header section has: the relays the message passed."""
    return sum(1 for _ in _RECEIVED.finditer(head))


def screen(raw: bytes, *, max_header_size: int, max_hops: int) -> str | None:
    """Why a message must be refused before it is looked at, or None.

    A header section over ``max_header_size`` bytes gives ``header-size``; more
    than ``max_hops`` Received fields give ``mail-loop`` (RFC 5321 §6.3). The cost
    is one pass over at most ``max_header_size`` bytes (about 20 ms for 1 MiB).
    """
    head = head_within(raw, max_header_size)
    if head is None:
        return REASON_HEADER_SIZE
    if hops(head) > max_hops:
        return REASON_MAIL_LOOP
    return None


def _fields(head: bytes) -> list[bytes]:
    """Header fields, each with its continuation lines.

    A field's lines are collected and joined once: appending line by line would
    copy the field again for every line, quadratic in a field folded over
    thousands of lines.
    """
    fields: list[bytes] = []
    lines: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] not in (b" ", b"\t") and lines:
            fields.append(b"".join(lines))
            lines = []
        lines.append(line)
    if lines:
        fields.append(b"".join(lines))
    return fields


def _clean(value: str) -> str:
    return " ".join(value.split())


def safe_text(value: str | None, limit: int = 255) -> str:
    """Client-supplied text made safe for a header: no control characters, bounded."""
    if not value:
        return ""
    return "".join(ch for ch in value if ch.isprintable() and ch not in "()<>;\\")[:limit]


def summary(raw: bytes) -> Summary:
    """Message-ID and the decoded Subject (the first of each); never raises."""
    head, _ = split_head(raw)
    found: dict[bytes, str] = {}
    for field in _fields(head):
        match = _FIELD_NAME.match(field)
        if match is None:
            continue
        name = match.group(1).lower()
        if name in (b"message-id", b"subject") and name not in found:
            # As a parser would read it: bytes as they are (8-bit kept for _decoded).
            found[name] = field[match.end() :].decode("ascii", "surrogateescape")
    message_id = found.get(b"message-id")
    if message_id is not None:  # 8-bit bytes in a Message-ID: keep them printable
        message_id = message_id.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return Summary(
        _clean(message_id) or None if message_id is not None else None,
        _decoded(found.get(b"subject")),
    )


def _decoded(value: object) -> str | None:
    """A header value with RFC 2047 encoded words decoded, as well as can be."""
    if value is None:
        return None
    text = str(value)
    if "=?" in text:
        # An unknown charset or a broken encoding keeps the raw text.
        with contextlib.suppress(Exception):
            text = str(make_header(decode_header(text)))
    return _clean(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


_AUTHSERV_ID = re.compile(r"(?:\s|\([^()]*\))*([^\s;()]+)")


def authserv_id(value: str) -> str:
    """The authserv-id an Authentication-Results value starts with (comments skipped)."""
    match = _AUTHSERV_ID.match(value)
    return match.group(1).lower() if match else ""


def remove_fields(raw: bytes, name: str, authserv: str | None = None) -> bytes:
    """Drop every field called ``name``; with ``authserv``, only the Authentication-Results
    fields that claim to come from that authserv-id."""
    head, rest = split_head(raw)
    wanted = name.lower().encode()
    if wanted not in head.lower():
        return raw  # the usual case: nothing to remove
    kept = []
    for field in _fields(head):
        match = _FIELD_NAME.match(field)
        if match and match.group(1).lower() == wanted:
            value = field[match.end() :].decode("utf-8", "replace")
            if authserv is None or authserv_id(value) == authserv.lower():
                continue
        kept.append(field)
    return b"".join(kept) + rest


def fold(name: str, value: str, limit: int = 78) -> bytes:
    """``Name: value`` folded at spaces so no line is longer than ``limit`` when possible."""
    words = _clean(value).split(" ")
    lines: list[str] = []
    line = f"{name}:"
    for word in words:
        if len(line) + 1 + len(word) > limit and line.strip() and line != f"{name}:":
            lines.append(line)
            line = "\t" + word
        else:
            line = f"{line} {word}"
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def prepend(raw: bytes, fields: list[tuple[str, str]]) -> bytes:
    """Add header fields at the top, in the order given."""
    return b"".join(fold(name, value) for name, value in fields) + raw
