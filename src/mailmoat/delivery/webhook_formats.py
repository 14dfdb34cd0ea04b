"""The HTTP bodies of webhook deliveries, in CloudMailin's documented formats.

Code that already parses CloudMailin's posts parses these unchanged. Three formats:

``json+n`` (JSON normalised), ``application/json``
    ``{"headers", "envelope", "plain", "html", "reply_plain", "attachments"}``.

    - ``headers``: every header of the top-level header section, the name lower-cased
      with ``-`` turned into ``_`` (``[`` and ``]`` too, so that the bracketed
      multipart names stay parseable); a header that appears several times is an
      array in the order of the message (topmost first), otherwise a string. Values
      are unfolded the way RFC 5322 defines it (the CR LF is removed, the white space
      after it is kept, as CloudMailin's real posts show) and RFC 2047 encoded words
      are decoded. Raw 8-bit header bytes are read as UTF-8, or as windows-1252 when
      they are not UTF-8.
    - ``plain`` / ``html``: the first text/plain and the first text/html part that is
      not an attachment (no ``attachment`` disposition, no file name), anywhere in the
      MIME tree (the documented behaviour of CloudMailin's original format; the
      normalised formats do not say more). Decoded with the declared charset; an
      unknown or wrong charset falls back to UTF-8, then windows-1252 (never raises).
      Line endings come out as ``\\n``. ``null`` when there is no such part.
    - ``reply_plain``: see :mod:`mailmoat.delivery.reply_text`; ``null`` when the
      message is not a reply, as CloudMailin sends it.
    - ``attachments``: every other leaf part (nothing is dropped: a second inline text
      part, a text/calendar part, an inline image without a name are attachments too),
      each ``{"file_name", "content_type", "size", "disposition", "content_id",
      "content"}``. ``size`` is the decoded byte count as a *string* (CloudMailin's Go
      client decodes it with ``,string`` and fails on a number). ``content_id`` is the
      Content-ID header as the message has it, angle brackets included, as in the
      fixture of CloudMailin's Go client (``"<f_kcd6ejvs1>"``); ``null`` when the part
      has none. ``disposition`` is the part's ``inline``/``attachment``; without one,
      ``inline`` when the part has a Content-ID, else ``attachment``. A part without
      a file name gets ``part-N.ext`` (N its position among the leaves, from 1), an
      attached message (message/rfc822) ``part-N.eml`` with the message as content.
      ``content`` is standard base64 without line breaks.
    - ``envelope``: ``to`` (the first recipient, ``""`` when none), ``recipients``,
      ``from`` (``""`` for the null sender), ``helo_domain``, ``remote_ip``, ``spf``
      ``{"result", "domain"}``, ``tls`` (boolean), ``tls_cipher`` (``null`` when not
      known), ``md5`` (hex MD5 of the raw message bytes), ``spamd`` when the message was
      scanned (verdict other than ``unscanned``): ``{"score": "3.2"`` (a string, as in
      CloudMailin's posts; left out when the scanner gave no score), ``"success": true,
      "symbols": [rule names], "description": a SpamAssassin-style table of the rules}``,
      and mailmoat's own ``mailmoat`` object ``{"message_id", "verdict", "score"
      (number or null), "rules": [{"name", "score", "description"}],
      "authentication_results" (string or null)}``.

``multipart+n`` (multipart/form-data normalised)
    The same data as bracketed form fields in the order of CloudMailin's example:
    ``plain``, ``html``, ``reply_plain``, ``headers[name]`` or ``headers[name][0]`` …,
    ``envelope[to]``, ``envelope[recipients][0]`` …, ``envelope[spf][result]`` …,
    ``envelope[tls]`` (``true``/``false``), ``envelope[spamd][symbols][0]`` …,
    ``envelope[mailmoat][...]``, then one file part per attachment, named
    ``attachments[]`` as in CloudMailin's complete multipart-normalised example ("the
    normalised version … attachments are sent as an array"; ``attachments[0]``,
    ``attachments[1]`` is the older non-normalised format), with the file name and the
    attachment's content type, content in binary. A ``null`` of the JSON document is
    left out (CloudMailin: "the attachments parameter will not be present" when
    there are none). Form data cannot carry an attachment's disposition or
    Content-ID, so mailmoat adds them, in its namespace, as
    ``envelope[mailmoat][attachments][i][file_name|content_type|size|disposition|
    content_id]``, ``i`` being the position of the file part among ``attachments[]``.

``raw``
    ``message``, the message exactly as received, then the envelope fields exactly as
    in ``multipart+n`` (without the attachment list). ``message`` is a plain form field
    (no file name, no Content-Type), as CloudMailin sends it ("the entire email as a
    string", read by consumers as ``params[:message]`` / ``request.POST["message"]``).
    Form data is 8-bit clean, so its octets are the raw bytes, whatever they are:
    nothing is re-encoded, and a message that is not UTF-8 reaches the consumer byte
    for byte; frameworks that turn text fields into ``str`` decode it their own way
    (Starlette falls back to latin-1, which round-trips; Django replaces what it
    cannot decode). A consumer that needs the exact bytes of non-UTF-8 mail reads the
    body at the byte level; ``envelope[md5]`` lets it check them.

Names and file names in form-data headers are UTF-8 with ``"``, CR and LF
percent-encoded, as browsers send them (RFC 7578, section 4.2). The boundary is random
and checked against the content. Text fields have no Content-Type, as in CloudMailin's
example.

The input types (:class:`TargetFormat`, :class:`FiredRule`, :class:`WebhookEnvelope`)
are those of :mod:`mailmoat.domain.webhooks`, re-exported here; envelope strings are
passed through as given (the SPF result included).

Everything here is pure: no network, no database. :func:`build_post` never raises on
odd mail (malformed MIME, unknown charsets, 8-bit headers, broken base64, empty
messages); only an unknown ``target_format`` is an error.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import io
import json
import math
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy as email_policy
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesParser
from typing import Any

from mailmoat.delivery.reply_text import reply_plain
from mailmoat.domain.webhooks import FiredRule, TargetFormat, WebhookEnvelope

__all__ = [
    "FiredRule",
    "PostBody",
    "TargetFormat",
    "WebhookEnvelope",
    "build_post",
    "json_normalised",
    "reply_plain",
]


@dataclass(frozen=True, slots=True)
class PostBody:
    content: bytes  # exactly the bytes to send (and to sign)
    content_type: str  # e.g. "application/json" or "multipart/form-data; boundary=..."


UNSCANNED = "unscanned"
SPAMD_HEADING = (
    " pts rule name              description\n"
    "---- ---------------------- --------------------------------------------------"
)


class _KeepRawHeaders(email_policy.Compat32):
    """compat32, except that a header read back keeps its raw 8-bit bytes (as
    surrogate escapes, which :func:`_clean` reads as UTF-8 or windows-1252) instead
    of turning them into U+FFFD; file names and Content-IDs need them."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value


_PARSER = BytesParser(policy=_KeepRawHeaders())
_MAX_DEPTH = 60  # MIME nesting deeper than this is not walked further
_CRLF = b"\r\n"

_SURROGATES = re.compile("[\ud800-\udfff]")
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_SPACES = re.compile(r"\s+")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_EXTENSIONS = {
    "application/gzip": ".gz",
    "application/json": ".json",
    "application/msword": ".doc",
    "application/octet-stream": ".bin",
    "application/pdf": ".pdf",
    "application/pgp-signature": ".asc",
    "application/pkcs7-signature": ".p7s",
    "application/x-pkcs7-signature": ".p7s",
    "application/zip": ".zip",
    "image/gif": ".gif",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/svg+xml": ".svg",
    "image/webp": ".webp",
    "message/delivery-status": ".txt",
    "message/global": ".eml",
    "message/rfc822": ".eml",
    "text/calendar": ".ics",
    "text/csv": ".csv",
    "text/html": ".html",
    "text/plain": ".txt",
    "text/rfc822-headers": ".txt",
}


# --------------------------------------------------------------------------- public API


def build_post(
    target_format: TargetFormat | str, raw: bytes, envelope: WebhookEnvelope
) -> PostBody:
    """The exact HTTP body (and its Content-Type) to POST for ``raw`` in ``target_format``.

    Raises ``ValueError`` only for an unknown format; odd mail never raises."""
    fmt = TargetFormat(target_format)
    raw = bytes(raw)
    if fmt is TargetFormat.JSON:
        document = json_normalised(raw, envelope)
        text = json.dumps(document, ensure_ascii=False, allow_nan=False)
        return PostBody(text.encode("utf-8", "replace"), "application/json")
    if fmt is TargetFormat.MULTIPART:
        parsed = _parse(raw)
        fields = _multipart_fields(parsed, _envelope_json(raw, envelope))
        return _encode_form(fields)
    fields = [_Field("message", raw)]
    fields.extend(_flatten("envelope", _envelope_json(raw, envelope)))
    return _encode_form(fields)


def json_normalised(raw: bytes, envelope: WebhookEnvelope) -> dict[str, Any]:
    """The ``json+n`` document for ``raw``, before encoding. Never raises on odd mail."""
    parsed = _parse(bytes(raw))
    return {
        "headers": parsed.headers,
        "envelope": _envelope_json(raw, envelope),
        "plain": parsed.plain,
        "html": parsed.html,
        "reply_plain": _reply_of(parsed.plain),
        "attachments": [attachment.as_json() for attachment in parsed.attachments],
    }


# --------------------------------------------------------------------------- envelope


def _envelope_json(raw: bytes, envelope: WebhookEnvelope) -> dict[str, Any]:
    recipients = [_clean(recipient) for recipient in envelope.recipients]
    score = _finite(envelope.score)
    rules = [
        {
            "name": _one_line(rule.name),
            "score": _finite(rule.score) or 0.0,
            "description": _one_line(rule.description),
        }
        for rule in envelope.rules
    ]
    result: dict[str, Any] = {
        "to": recipients[0] if recipients else "",
        "recipients": recipients,
        "from": _clean(envelope.sender),
        "helo_domain": _clean(envelope.helo_domain),
        "remote_ip": _clean(envelope.remote_ip),
        "spf": {"result": _clean(envelope.spf_result), "domain": _clean(envelope.spf_domain)},
        "tls": bool(envelope.tls),
        "tls_cipher": None if envelope.tls_cipher is None else _clean(envelope.tls_cipher),
        "md5": hashlib.md5(raw, usedforsecurity=False).hexdigest(),
    }
    if envelope.verdict != UNSCANNED:
        spamd: dict[str, Any] = {}
        if score is not None:
            spamd["score"] = _spamd_score(score)
        spamd["success"] = True
        spamd["symbols"] = [rule["name"] for rule in rules]
        spamd["description"] = _spamd_description(rules)
        result["spamd"] = spamd
    result["mailmoat"] = {
        "message_id": _clean(envelope.message_id),
        "verdict": _clean(envelope.verdict),
        "score": score,
        "rules": rules,
        "authentication_results": (
            None
            if envelope.authentication_results is None
            else _one_line(envelope.authentication_results)
        ),
    }
    return result


def _spamd_score(score: float) -> str:
    """A score the way spamd prints it: at least one decimal, at most three ("3.2", "5.0")."""
    text = f"{score:.3f}".rstrip("0")
    if text.endswith("."):
        text += "0"
    return "0.0" if text in ("-0.0", "0.0") else text


def _spamd_description(rules: list[dict[str, Any]]) -> str:
    rows = [SPAMD_HEADING]
    for rule in rules:
        rows.append(f"{rule['score']:4.1f} {rule['name']:<22} {rule['description']}".rstrip())
    return "\n".join(rows) + "\n"


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class _Attachment:
    file_name: str
    content_type: str
    disposition: str
    content_id: str | None
    content: bytes

    def as_json(self) -> dict[str, Any]:
        return {
            "file_name": self.file_name,
            "content_type": self.content_type,
            "size": str(len(self.content)),
            "disposition": self.disposition,
            "content_id": self.content_id,
            "content": base64.b64encode(self.content).decode("ascii"),
        }


@dataclass(frozen=True, slots=True)
class _Parsed:
    headers: dict[str, str | list[str]]
    plain: str | None
    html: str | None
    attachments: tuple[_Attachment, ...]


def _parse(raw: bytes) -> _Parsed:
    try:
        message = _PARSER.parsebytes(raw)
    except Exception:  # the compat32 feed parser records defects; this is a last resort
        return _Parsed({}, None, None, ())
    headers = _headers(message)
    linesep = "\r\n" if b"\r\n" in raw else "\n"
    plain: str | None = None
    html: str | None = None
    attachments: list[_Attachment] = []
    try:
        leaves = list(_leaves(message))
    except Exception:
        leaves = [message]
    for position, part in enumerate(leaves, start=1):
        try:
            content_type = _content_type(part)
            disposition = _disposition(part)
            name = _file_name(part)
            if disposition != "attachment" and not name:
                if content_type == "text/plain" and plain is None:
                    plain = _body_text(part)
                    continue
                if content_type == "text/html" and html is None:
                    html = _body_text(part)
                    continue
            attachments.append(
                _attachment(part, position, content_type, disposition, name, linesep)
            )
        except Exception:  # one odd part must not cost the others
            continue
    return _Parsed(headers, plain, html, tuple(attachments))


def _leaves(part: Message, depth: int = 0) -> Iterator[Message]:
    """The leaf parts, depth first; an attached message (message/*) is one leaf."""
    payload = part.get_payload()
    if (
        part.get_content_maintype() == "multipart"
        and isinstance(payload, list)
        and depth < _MAX_DEPTH
    ):
        for child in payload:
            if isinstance(child, Message):
                yield from _leaves(child, depth + 1)
        return
    yield part


def _headers(message: Message) -> dict[str, str | list[str]]:
    headers: dict[str, str | list[str]] = {}
    try:
        items = list(message.raw_items())
    except Exception:
        return headers
    for name, value in items:
        key = _header_key(str(name))
        if not key:
            continue
        text = _header_value(value)
        existing = headers.get(key)
        if existing is None:
            headers[key] = text
        elif isinstance(existing, list):
            existing.append(text)
        else:
            headers[key] = [existing, text]
    return headers


def _header_key(name: str) -> str:
    key = _clean(name).strip().lower()
    for old in "-[]":
        key = key.replace(old, "_")
    return _CONTROLS.sub("", key)


def _header_value(value: Any) -> str:
    text = _clean(value if isinstance(value, str) else str(value))
    text = _LINE_BREAKS.sub("", text)
    return _decode_words(text).strip()


def _decode_words(text: str) -> str:
    """``text`` with its RFC 2047 encoded words decoded; never raises.

    White space between two encoded words is dropped (RFC 2047, section 6.2); adjacent
    words in the same charset are decoded together, so that a character split across
    two words survives. A word that cannot be decoded is kept as it is."""
    if "=?" not in text:
        return text
    out: list[str] = []
    pending = b""
    pending_charset = ""
    position = 0

    def flush() -> None:
        nonlocal pending, pending_charset
        if pending_charset:
            out.append(_decode_bytes(pending, pending_charset))
        pending = b""
        pending_charset = ""

    for match in _ENCODED_WORD.finditer(text):
        gap = text[position : match.start()]
        charset = match.group(1).split("*", 1)[0].lower() or "us-ascii"
        decoded = _decode_word(match.group(2), match.group(3))
        if decoded is None:
            flush()
            out.append(gap + match.group(0))
            position = match.end()
            continue
        if not (pending_charset and not gap.strip()):
            flush()
            out.append(gap)
        elif charset != pending_charset:
            flush()
        pending += decoded
        pending_charset = charset
        position = match.end()
    flush()
    out.append(text[position:])
    return "".join(out)


def _decode_word(encoding: str, payload: str) -> bytes | None:
    try:
        data = payload.encode("ascii")
        if encoding in "Bb":
            data = data.rstrip(b"=")
            return base64.b64decode(data + b"=" * (-len(data) % 4))
        return binascii.a2b_qp(data, header=True)
    except (ValueError, binascii.Error, UnicodeError):
        return None


def _content_type(part: Message) -> str:
    content_type = str(part.get_content_type()).lower()
    if part.get_content_maintype() == "multipart":
        return "text/plain"  # a multipart without a usable boundary: its body is text
    return content_type if _TOKEN.match(content_type) else "application/octet-stream"


def _disposition(part: Message) -> str | None:
    value = part.get_content_disposition()
    return str(value).lower() if value else None


def _file_name(part: Message) -> str:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if not name:
        return ""
    text = _decode_words(_clean(str(name)))
    return _CONTROLS.sub("", text).strip()


def _payload_bytes(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogateescape")
    return b""


def _body_text(part: Message) -> str:
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    text = _decode_bytes(_payload_bytes(part), charset)
    return text.replace("\r\n", "\n")


def _attachment(
    part: Message,
    position: int,
    content_type: str,
    disposition: str | None,
    name: str,
    linesep: str,
) -> _Attachment:
    if part.get_content_maintype() == "message" and isinstance(part.get_payload(), list):
        content = _message_body(part, linesep)
    else:
        content = _payload_bytes(part)
    content_id = part.get("Content-ID")
    cid = _header_value(content_id) if content_id is not None else ""
    if disposition not in ("inline", "attachment"):
        disposition = "inline" if cid else "attachment"
    if not name:
        name = f"part-{position}{_EXTENSIONS.get(content_type, '.bin')}"
    return _Attachment(name, content_type, disposition, cid or None, content)


def _message_body(part: Message, linesep: str) -> bytes:
    """The body of a message/* part (the attached message itself), serialised again."""
    buffer = io.BytesIO()
    generator = BytesGenerator(
        buffer,
        mangle_from_=False,
        policy=email_policy.compat32.clone(linesep=linesep, max_line_length=None),
    )
    generator.flatten(part)
    data = buffer.getvalue()
    separator = linesep.encode("ascii") * 2
    head_end = data.find(separator)
    return data[head_end + len(separator) :] if head_end >= 0 else b""


# --------------------------------------------------------------------------- text


def _clean(text: str) -> str:
    """``text`` without surrogates: bytes smuggled in by ``surrogateescape`` are read
    as UTF-8, else windows-1252; other lone surrogates become U+FFFD."""
    if not _SURROGATES.search(text):
        return text
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)
    return _decode_bytes(data, None)


def _one_line(text: str) -> str:
    return _SPACES.sub(" ", _clean(text)).strip()


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """``data`` as text: the declared charset if it decodes, else UTF-8, else the
    declared charset with replacement (windows-1252 when none or ASCII was declared)."""
    declared = _codec(charset)
    for candidate in (declared, "utf-8"):
        if candidate is None:
            continue
        try:
            return data.decode(candidate)
        except (UnicodeError, LookupError):
            continue
    fallback = declared if declared and declared != "ascii" else "cp1252"
    try:
        return data.decode(fallback, "replace")
    except (UnicodeError, LookupError):
        return data.decode("cp1252", "replace")


def _codec(charset: str | None) -> str | None:
    if not charset:
        return None
    name = charset.strip().strip('"').lower()
    try:
        info = codecs.lookup(name)
        b"".decode(info.name)  # bytes-to-bytes codecs (base64, rot13 …) are not charsets
    except (LookupError, UnicodeError, ValueError, TypeError):
        return None
    return info.name


# --------------------------------------------------------------------------- form data


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    value: bytes
    file_name: str | None = None
    content_type: str | None = None


def _multipart_fields(parsed: _Parsed, envelope: dict[str, Any]) -> list[_Field]:
    fields: list[_Field] = []
    for key in ("plain", "html"):
        value = getattr(parsed, key)
        if value is not None:
            fields.append(_text_field(key, value))
    reply = _reply_of(parsed.plain)
    if reply is not None:
        fields.append(_text_field("reply_plain", reply))
    fields.extend(_flatten("headers", parsed.headers))
    mailmoat = dict(envelope["mailmoat"])
    mailmoat["attachments"] = [
        {key: value for key, value in attachment.as_json().items() if key != "content"}
        for attachment in parsed.attachments
    ]
    fields.extend(_flatten("envelope", {**envelope, "mailmoat": mailmoat}))
    fields.extend(
        _Field("attachments[]", attachment.content, attachment.file_name, attachment.content_type)
        for attachment in parsed.attachments
    )
    return fields


def _text_field(name: str, value: str) -> _Field:
    return _Field(name, _clean(value).encode("utf-8"))


def _flatten(prefix: str, value: Any) -> Iterator[_Field]:
    if value is None:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(f"{prefix}[{key}]", item)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _flatten(f"{prefix}[{index}]", item)
    elif isinstance(value, bool):
        yield _text_field(prefix, "true" if value else "false")
    elif isinstance(value, float):
        yield _text_field(prefix, repr(value))
    else:
        yield _text_field(prefix, str(value))


def _quote(value: str) -> bytes:
    escaped = _clean(value).replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    return escaped.encode("utf-8")


def _encode_form(fields: list[_Field]) -> PostBody:
    boundary = _boundary(fields)
    delimiter = b"--" + boundary.encode("ascii")
    chunks: list[bytes] = []
    for field in fields:
        head = b'Content-Disposition: form-data; name="' + _quote(field.name) + b'"'
        if field.file_name is not None:
            head += b'; filename="' + _quote(field.file_name) + b'"'
        chunks += [delimiter, _CRLF, head, _CRLF]
        if field.content_type is not None:
            chunks += [b"Content-Type: ", field.content_type.encode("ascii"), _CRLF]
        chunks += [_CRLF, field.value, _CRLF]
    chunks += [delimiter, b"--", _CRLF]
    return PostBody(b"".join(chunks), f"multipart/form-data; boundary={boundary}")


def _boundary(fields: list[_Field]) -> str:
    while True:
        boundary = f"mailmoat-{secrets.token_hex(16)}"
        marker = boundary.encode("ascii")
        if not any(marker in field.value for field in fields):
            return boundary


REPLY_SCAN = 64 * 1024  # characters of plain text looked at for the reply


def _reply_of(plain: str | None) -> str | None:
    """The reply text, looked for in the start of the text only: a reply is written
    on top, and the search must stay quick on megabytes of crafted text."""
    return None if plain is None else reply_plain(plain[:REPLY_SCAN])
