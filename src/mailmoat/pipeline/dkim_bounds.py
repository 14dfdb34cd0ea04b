"""What dkimpy is given to verify, so that its work stays linear in the message.

dkimpy (1.1) reads a message by appending every continuation line to its field,
which is quadratic in a field folded over thousands of lines, and several of its
regular expressions backtrack quadratically over long runs of white space in a
DKIM-Signature field. Its body canonicalization is a few regular expressions over
the whole body: linear, but seconds of CPU for a large body, all of it in single
calls that hold the GIL and so stall the event loop however many threads there
are. Here the message is parsed in one pass, signature fields that would make
dkimpy's expressions crawl are refused (a permerror), dkimpy sees only the
header fields a signature covers, and the body hash is computed here in slices.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import dkim
from dkim.canonicalization import strip_trailing_lines
from dkim.crypto import HASH_ALGORITHMS

MAX_SIGNATURE_BYTES = 8 * 1024
"""A DKIM-Signature field longer than this is not verified (real ones are < 2 KiB)."""
MAX_SIGNED_BYTES = 256 * 1024
"""Header bytes one signature may cover; dkimpy canonicalizes them in one go."""
MAX_SELECT_WORK = 100_000
"""Names in h= times fields with those names: dkimpy pairs them up one by one."""
SLICE_BYTES = 64 * 1024
"""Body bytes canonicalized per call, which bounds how long the GIL is held."""

Headers = list[list[bytes]]

_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")
_HEAD_END = re.compile(rb"\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_LONG_SPACE = re.compile(rb"\s{65}")
# dkimpy's relaxed body rules, in forms that try each run of blanks once.
_TRAILING_BLANKS = re.compile(rb"(?<![\t ])[\t ]++\r\n")
_BLANKS = re.compile(rb"[\t ]{2,}|\t")
_SLICE_END = re.compile(rb"[\t \r]*+.", re.DOTALL)


def parse(raw: bytes) -> tuple[Headers, bytes]:
    """What ``dkim.rfc822_parse`` makes of ``raw``, in one pass.

    Fields are ``[name, value]`` with the value's lines CRLF-terminated; the body
    has its line ends made CRLF. Raises ``dkim.MessageFormatError`` where dkimpy does.
    """
    if raw[:1] == b"\n" or raw[:2] == b"\r\n":
        head, rest = b"", raw[raw.index(b"\n") + 1 :]
    else:
        end = _HEAD_END.search(raw)
        head, rest = (raw, b"") if end is None else (raw[: end.start() + 1], raw[end.end() :])
    names: list[bytes] = []
    values: list[list[bytes]] = []
    for line in _LINE_END.split(head) if head else ():
        if line[:1] in (b" ", b"\t"):
            if not values:
                raise dkim.MessageFormatError("continuation line before any header field")
            values[-1] += (line, b"\r\n")
            continue
        match = _FIELD_NAME.match(line)
        if match is not None:
            names.append(match.group(1))
            values.append([line[match.end() :], b"\r\n"])
        elif not line.startswith(b"From ") and line:
            raise dkim.MessageFormatError("unexpected characters in a header line")
    headers = [[name, b"".join(parts)] for name, parts in zip(names, values, strict=True)]
    if rest.count(b"\n") != rest.count(b"\r\n"):
        rest = _BARE_LF.sub(b"\r\n", rest)
    return headers, rest


def check_signature_field(value: bytes) -> None:
    """Refuse a DKIM-Signature value that dkimpy's expressions would take long over."""
    if len(value) > MAX_SIGNATURE_BYTES:
        raise dkim.MessageFormatError("DKIM-Signature field too long")
    if _LONG_SPACE.search(value):
        raise dkim.MessageFormatError("DKIM-Signature field with a long run of white space")


def signed_fields(headers: Headers, include: list[bytes]) -> Headers:
    """The fields a signature's h= names, in order: all dkimpy needs to hash them.

    Leaving the others out changes nothing in what dkimpy selects (it picks by
    name, bottom up) and spares canonicalizing fields the signature does not cover.
    """
    names = set(include)
    fields = [field for field in headers if field[0].lower() in names]
    if len(include) * len(fields) > MAX_SELECT_WORK:
        raise dkim.MessageFormatError("too many signed header fields")
    if sum(len(value) for _, value in fields) > MAX_SIGNED_BYTES:
        raise dkim.MessageFormatError("signed header fields too large")
    return fields


def without_body_hash(sig: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The signature's tags without bh=, so that dkimpy checks the header hash only."""
    return {tag: value for tag, value in sig.items() if tag != b"bh"}


BodyHashes = dict[tuple[bytes, bytes, int | None], bytes]


def body_hash_matches(body: bytes, sig: dict[bytes, bytes], cache: BodyHashes) -> bool:
    """Whether the bh= of a signature is the hash of ``body`` (RFC 6376 §3.7)."""
    canon = sig.get(b"c", b"simple/simple").split(b"/")
    relaxed = len(canon) == 2 and canon[1] == b"relaxed"
    length = int(sig[b"l"]) if b"l" in sig else None
    key = (b"relaxed" if relaxed else b"simple", sig[b"a"], length)
    if key not in cache:
        canonical = _relaxed(body) if relaxed else strip_trailing_lines(body)
        hasher: Callable[[bytes], Any] = HASH_ALGORITHMS[sig[b"a"]]
        cache[key] = hasher(canonical[:length] if length is not None else canonical).digest()
    expected = base64.b64decode(b"".join(sig[b"bh"].split()))
    return bool(cache[key] == expected)


def _relaxed(body: bytes) -> bytes:
    """dkimpy's relaxed body canonicalization, applied slice by slice.

    A slice ends after a byte that is neither a blank nor CR, so no run the
    rules rewrite is cut in two.
    """
    parts: list[bytes] = []
    start = 0
    while start < len(body):
        end = start + SLICE_BYTES
        if end < len(body):
            tail = _SLICE_END.match(body, end - 1)
            end = tail.end() if tail is not None else len(body)
        piece = _TRAILING_BLANKS.sub(b"\r\n", body[start:end])
        parts.append(_BLANKS.sub(b" ", piece))
        start = end
    canonical = strip_trailing_lines(b"".join(parts))
    return b"" if canonical == b"\r\n" else canonical
