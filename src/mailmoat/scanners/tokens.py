"""Read a raw message once, then cut it into tokens for the Bayes classifier.

``parse`` never raises: mail from the internet is often malformed, and a scanner
that fails on it would let an attacker pick which mail is not scanned. Only the
parts a reader sees (Subject, the sender and recipient domains, text and HTML
bodies) are used; header fields that mailmoat adds itself (Received,
Authentication-Results, X-Spam-*) are never read, so that learning from a
delivered copy teaches the same tokens as scanning the message on arrival.
"""

from __future__ import annotations

import codecs
import contextlib
import email
import email.header
import email.policy
import email.utils
import hashlib
import html
import re
from dataclasses import dataclass, field
from email.message import Message

MAX_SCAN_BYTES = 256 * 1024
"""Only the first bytes of a message are read, which bounds the CPU a message costs."""
MAX_MULTIPARTS = 32
"""More MIME boundaries than this and the body is read as plain text (see ``parse``)."""
MAX_TEXT_CHARS = 128 * 1024
"""Decoded text kept per part."""
MAX_TOKENS = 2000
"""Unique tokens per message; header tokens come first."""
MAX_TOKEN_LENGTH = 64
"""Longer tokens are replaced by a hash (the store's column is 64 characters)."""
MIN_WORD, MAX_WORD = 3, 40

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_WORD = re.compile("[\\w$\u20ac\u00a3'\u2019-]+")  # words, prices, don't, e-mail
_WORD_EDGES = "'\u2019-"
# `[^<>]` rather than `[^>]`: an unclosed "<" then costs one scan to the next "<",
# not one to the end of the text, which keeps stripping linear.
_TAG = re.compile(r"<[^<>]*>")
_URL = re.compile(r"""(?i)https?://([^/\s"'<>?#\\]+)""")
_ADDRESS_DOMAIN = re.compile(r"@([\w-]+(?:\.[\w-]+)+)")
# Python codecs that no mail uses as a charset; the first two are pure Python and
# slow enough (about 2 µs a byte) for a sender to burn CPU by naming them.
_NOT_CHARSETS = frozenset({"punycode", "idna", "unicode-escape", "raw-unicode-escape", "undefined"})


@dataclass(slots=True)
class ParsedMessage:
    """What the scanners look at, decoded. Header values are ``None`` when absent."""

    header_names: frozenset[str] = frozenset()
    subject: str | None = None
    from_: str | None = None
    to: str | None = None
    reply_to: str | None = None
    date: str | None = None
    message_id: str | None = None
    text: str = ""
    """The text/plain parts, joined."""
    html: str = ""
    """The text/html parts as sent, joined."""
    html_text: str = ""
    """The text/html parts with tags removed and entities decoded."""
    has_text_part: bool = False
    has_html_part: bool = False
    url_hosts: list[str] = field(default_factory=list)
    body: bytes = b""
    """The undecoded body (everything after the header), as read."""
    too_many_parts: bool = False
    """More than ``MAX_MULTIPARTS`` boundaries: the body was read as one text."""


def parse(raw: bytes) -> ParsedMessage:
    """Decode a raw message. Never raises; what cannot be read is left empty."""
    raw = raw[:MAX_SCAN_BYTES]
    body = _body_bytes(raw)
    parsed = ParsedMessage(body=body)
    # The stdlib parser checks every line against every open boundary, so deep
    # nesting costs time quadratic in the size; past a limit the body is read as
    # plain text instead.
    flatten = raw.lower().count(b"boundary") > MAX_MULTIPARTS
    try:
        # compat32 keeps header values as plain strings. The modern policy parses
        # every header it hands out (the parser itself asks for Content-Type many
        # times), which costs several milliseconds per message.
        message = email.message_from_bytes(
            raw[: len(raw) - len(body)] if flatten else raw, policy=email.policy.compat32
        )
    except Exception:  # the parser is meant to record defects, not raise; be sure
        return parsed
    _read_headers(message, parsed)
    if flatten:
        parsed.too_many_parts = True
        parsed.has_text_part = True
        parsed.text = body.decode("utf-8", "replace")[:MAX_TEXT_CHARS]
    else:
        _read_parts(message, parsed)
    if parsed.html:
        parsed.html_text = html.unescape(_TAG.sub(" ", parsed.html))
    parsed.url_hosts = _url_hosts(parsed.text, parsed.html)
    return parsed


def _read_parts(message: Message, parsed: ParsedMessage) -> None:
    texts: list[str] = []
    htmls: list[str] = []
    try:
        parts = list(message.walk())
    except Exception:
        parts = [message]
    for part in parts:
        if part.is_multipart():
            continue
        try:
            kind = part.get_content_type()
            if kind not in ("text/plain", "text/html"):
                continue
            if part.get_content_disposition() == "attachment":
                continue
        except Exception:
            continue
        content = _decoded_text(part)
        if kind == "text/plain":
            parsed.has_text_part = True
            texts.append(content)
        else:
            parsed.has_html_part = True
            htmls.append(content)
    parsed.text = "\n".join(texts)
    parsed.html = "\n".join(htmls)


def tokenize(message: ParsedMessage | bytes) -> set[str]:
    """The Bayes tokens of a message: at most ``MAX_TOKENS``, each ≤ 64 characters.

    Subject words are prefixed ``s:``, address domains ``from:``, ``to:`` and
    ``reply-to:``, link hosts ``url:``, so that the same word means different
    things in different places. Body words longer than ``MAX_WORD`` become one
    ``skip:`` token per first character and length bucket, as in SpamBayes.
    """
    parsed = parse(message) if isinstance(message, bytes) else message
    found: dict[str, None] = {}
    if parsed.subject:
        for word in _words(parsed.subject):
            found["s:" + word] = None
    for prefix, value in (
        ("from:", parsed.from_),
        ("to:", parsed.to),
        ("reply-to:", parsed.reply_to),
    ):
        for domain in _domains(value):
            found[prefix + domain] = None
    for host in parsed.url_hosts:
        found["url:" + host] = None
        parent = _parent_domain(host)
        if parent is not None:
            found["url:" + parent] = None
    for text in (parsed.text, parsed.html_text):
        if len(found) >= MAX_TOKENS:
            break
        for word in dict.fromkeys(_WORD.findall(text.lower())):  # each word once, in order
            size = len(word)
            if size < MIN_WORD:
                continue
            if word[0] in _WORD_EDGES or word[-1] in _WORD_EDGES:
                word = word.strip(_WORD_EDGES)
                size = len(word)
                if size < MIN_WORD:
                    continue
            if size > MAX_WORD:
                word = f"skip:{word[0]} {size // 10 * 10}"
            found[word] = None
            if len(found) >= MAX_TOKENS:
                break
    tokens: set[str] = set()
    for token in list(found)[:MAX_TOKENS]:
        tokens.add(token if len(token) <= MAX_TOKEN_LENGTH else _hashed(token))
    return tokens


def _hashed(token: str) -> str:
    return "h:" + hashlib.blake2b(token.encode("utf-8", "replace"), digest_size=16).hexdigest()


def _words(text: str) -> list[str]:
    words = (w.strip(_WORD_EDGES) for w in _WORD.findall(text.lower()))
    return [w for w in words if MIN_WORD <= len(w) <= MAX_WORD]


def _domains(value: str | None) -> list[str]:
    """The domains of the addresses in a header value (a regex: the stdlib's address
    parser costs more than everything else here together)."""
    if not value or "@" not in value:
        return []
    return [domain.lower() for domain in _ADDRESS_DOMAIN.findall(value)]


def _parent_domain(host: str) -> str | None:
    """``www.shop.example`` → ``shop.example`` (a crude guess at the registered name)."""
    labels = host.split(".")
    if len(labels) <= 2 or host.replace(".", "").isdigit():
        return None
    return ".".join(labels[-2:])


def _body_bytes(raw: bytes) -> bytes:
    for separator in (b"\r\n\r\n", b"\n\n"):
        at = raw.find(separator)
        if at >= 0:
            return raw[at + len(separator) :]
    return b""


def _clean(value: str) -> str:
    """Unfold a raw header value and decode RFC 2047 words and stray 8-bit bytes."""
    value = _FOLD.sub("", value).strip()
    if not value.isascii():
        # The parser keeps undecodable bytes as surrogates; they cannot be stored.
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if "=?" in value:
        with contextlib.suppress(Exception):
            value = str(email.header.make_header(email.header.decode_header(value)))
    return value


def _read_headers(message: Message, parsed: ParsedMessage) -> None:
    # raw_items() gives the values as read; get() would wrap values with 8-bit bytes
    # in Header objects.
    first: dict[str, str] = {}
    try:
        for name, value in message.raw_items():
            key = name.lower()
            if key not in first:
                first[key] = value if isinstance(value, str) else str(value)
    except Exception:
        pass
    parsed.header_names = frozenset(first)
    wanted = {
        "subject": "subject",
        "from": "from_",
        "to": "to",
        "reply-to": "reply_to",
        "date": "date",
        "message-id": "message_id",
    }
    for key, attribute in wanted.items():
        if key in first:
            setattr(parsed, attribute, _clean(first[key]))


def _decoded_text(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return ""
    if not isinstance(payload, bytes):
        return ""
    payload = payload[: MAX_TEXT_CHARS * 4]
    try:
        charset = codecs.lookup(part.get_content_charset() or "utf-8").name
    except Exception:
        charset = "utf-8"
    if charset in _NOT_CHARSETS:
        charset = "utf-8"
    try:
        text = payload.decode(charset, "replace")
    except Exception:
        text = payload.decode("utf-8", "replace")
    return text[:MAX_TEXT_CHARS]


def _url_hosts(*texts: str) -> list[str]:
    hosts: dict[str, None] = {}
    for text in texts:
        if "://" not in text:
            continue
        for authority in _URL.findall(text):
            host = authority.rpartition("@")[2].lower()
            if host.startswith("["):
                host = host[1:].partition("]")[0]
            else:
                host = host.partition(":")[0].strip(".")
            if host:
                hosts[host] = None
    return list(hosts)
