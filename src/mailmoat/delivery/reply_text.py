"""The new text of a reply, without the quoted thread and the signature (``reply_plain``).

CloudMailin documents ``reply_plain`` as "the plain text reply extracted from this
message if present / found" and sends ``null`` for a message that is not a reply (its
real posts show ``"plain": "Test2\\n", "reply_plain": null``). This module follows
that: :func:`reply_plain` returns ``None`` unless it finds where a quoted thread
starts, and also when nothing but the thread and a signature is left.

The thread starts at the earliest of these lines (heuristics, as everywhere):

- CloudMailin's magic marker ``### Reply Above This Line ###`` (quoted or not);
- an attribution: a line starting "On …" (or the German, French, Spanish, Dutch,
  Italian, Scandinavian, Polish openings) that ends, possibly two lines further down
  because clients wrap it, with "wrote:" (or its translations) and carries a digit
  (a date or a time); or any line ending
  with "wrote:" when the next non-blank line is quoted with ``>``;
- an Outlook separator, ``-----Original Message-----`` and its translations, or the
  Outlook header block (``From:`` followed within three lines by ``Sent:``/``Date:``
  and then ``To:``/``Subject:``, with or without the ``____`` rule above it);
- a forward marker (``---------- Forwarded message ---------``,
  ``Begin forwarded message:``);
- the first line of a trailing block of ``>`` lines (everything after it is quoted or
  blank). Quotes interleaved with answers are not a trailing block: such a message has
  no single reply text, so it gives ``None`` unless one of the markers above is found.

Above the thread, the signature is cut at the last line that is exactly ``-- `` (or
``--``, as clients that strip trailing spaces send it), and a final mobile tagline
("Sent from my iPhone", "Get Outlook for iOS") is dropped. Leading blank lines and
trailing white space are removed; line endings come out as ``\\n``.
"""

from __future__ import annotations

import re

__all__ = ["reply_plain"]

_MAGIC_MARKER = re.compile(r"^[>\s]*#*\s*reply\s+above\s+this\s+line\s*#*\s*$", re.IGNORECASE)
_ATTRIBUTION_START = re.compile(
    r"^\s*(?:on|am|le|el|op|il|den|på|w\s+dniu)\s", re.IGNORECASE | re.UNICODE
)
_ATTRIBUTION_END = re.compile(
    r"(?:(?:wrote|a\s+écrit|escribió|ha\s+scritto|napisał\(a\)|napisał)\s*"
    r"|(?:schrieb|schreef|skrev)\s.*)"  # these come before the name: "schrieb Alice <a@x>:"
    r":\s*$",
    re.IGNORECASE | re.UNICODE,
)
_ORIGINAL_MESSAGE = re.compile(
    r"^\s*-{2,}\s*(?:original\s+message|ursprüngliche\s+nachricht|message\s+d'origine|"
    r"mensaje\s+original|oorspronkelijk\s+bericht|messaggio\s+originale|"
    r"opprinnelig\s+melding|ursprungligt\s+meddelande|oprindelig\s+meddelelse)\s*-{2,}\s*$",
    re.IGNORECASE | re.UNICODE,
)
_FORWARDED = re.compile(
    r"^\s*(?:-{2,}\s*forwarded\s+message\s*-{2,}|begin\s+forwarded\s+message\s*:)\s*$",
    re.IGNORECASE,
)
_RULE = re.compile(r"^\s*_{10,}\s*$")
_OUTLOOK_FROM = re.compile(r"^\s*\*?(?:from|von|de|van|da)\s*:\*?\s", re.IGNORECASE)
_OUTLOOK_SENT = re.compile(
    r"^\s*\*?(?:sent|date|gesendet|datum|envoyé|enviado|verzonden|inviato)\s*:\*?\s",
    re.IGNORECASE | re.UNICODE,
)
_OUTLOOK_TO = re.compile(
    r"^\s*\*?(?:to|subject|an|betreff|à|objet|para|asunto|aan|onderwerp|a|oggetto)\s*:\*?\s",
    re.IGNORECASE | re.UNICODE,
)
_SIGNATURE = re.compile(r"^--[ \t]?$")
_MOBILE_TAGLINE = re.compile(
    r"^\s*(?:sent\s+from\s+my\s+\S.*|get\s+outlook\s+for\s+\S.*|sent\s+from\s+mail\s+for\s+.*|"
    r"von\s+meinem\s+\S.*\s+gesendet|envoyé\s+de\s+mon\s+\S.*)$",
    re.IGNORECASE | re.UNICODE,
)
_HAS_DIGIT = re.compile(r"[0-9]")  # a real attribution carries a date or a time
_ATTRIBUTION_SPAN = 3  # an attribution wrapped by the client spans at most three lines
_MAX_MARKER = 1000  # longer lines are never markers (and stay out of the regular expressions)


def reply_plain(plain: str | None) -> str | None:
    """The reply text of ``plain``, or ``None`` when the message is not a reply or has
    no text of its own above the quoted thread. Never raises."""
    if not plain:
        return None
    lines = plain.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cut = _thread_start(lines)
    if cut is None:
        return None
    kept = _strip_signature(lines[:cut])
    first = next((index for index, line in enumerate(kept) if line.strip()), len(kept))
    text = "\n".join(kept[first:]).rstrip()
    return text or None


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _thread_start(lines: list[str]) -> int | None:
    for index, line in enumerate(lines):
        if len(line) > _MAX_MARKER:
            continue
        if (
            _MAGIC_MARKER.match(line)
            or _ORIGINAL_MESSAGE.match(line)
            or _FORWARDED.match(line)
            or _is_attribution(lines, index)
            or _is_outlook_block(lines, index)
        ):
            return index
    return _trailing_quote(lines)


def _is_attribution(lines: list[str], index: int) -> bool:
    line = lines[index]
    if _is_quoted(line) or not line.strip():
        return False
    if _ATTRIBUTION_START.match(line):
        joined = ""
        for part in lines[index : index + _ATTRIBUTION_SPAN]:
            if not part.strip() or _is_quoted(part) or len(part) > _MAX_MARKER:
                break
            joined = f"{joined} {part.strip()}"
            if _ATTRIBUTION_END.search(joined):
                if _HAS_DIGIT.search(joined):
                    return True
                break
    if _ATTRIBUTION_END.search(line):
        following = _next_text(lines, index + 1)
        return following is not None and _is_quoted(following)
    return False


def _next_text(lines: list[str], start: int) -> str | None:
    """The first line from ``start`` on that is not blank."""
    for index in range(start, len(lines)):
        if lines[index].strip():
            return lines[index]
    return None


def _is_outlook_block(lines: list[str], index: int) -> bool:
    line = lines[index]
    if _RULE.match(line):
        following = _next_text(lines, index + 1)
        return following is not None and bool(_OUTLOOK_FROM.match(following[:_MAX_MARKER]))
    if not _OUTLOOK_FROM.match(line):
        return False
    window = lines[index + 1 : index + 4]
    for offset, candidate in enumerate(window):
        if _OUTLOOK_SENT.match(candidate):
            rest = lines[index + 2 + offset : index + 6 + offset]
            return any(_OUTLOOK_TO.match(item) for item in rest)
    return False


def _trailing_quote(lines: list[str]) -> int | None:
    start: int | None = None
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        if not line.strip():
            continue
        if not _is_quoted(line):
            break
        start = index
    return start


def _strip_signature(lines: list[str]) -> list[str]:
    for index in range(len(lines) - 1, -1, -1):
        if _SIGNATURE.match(lines[index]):
            lines = lines[:index]
            break
    kept = list(lines)
    while kept and not kept[-1].strip():
        kept.pop()
    if kept and len(kept[-1]) <= _MAX_MARKER and _MOBILE_TAGLINE.match(kept[-1]):
        kept.pop()
    return kept
