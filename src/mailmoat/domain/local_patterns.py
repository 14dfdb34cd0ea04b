"""Local-part patterns of custom domains, matched by RE2 in time linear in the input.

Patterns run at RCPT time on the SMTP event loop. A backtracking engine can take
exponential time on patterns such as ``(a?){30}a{30}``; RE2 never backtracks, so
any pattern it compiles matches a local part of n characters in O(n) time, within
a bounded amount of memory. RE2 has no back-references or lookaround.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import re2

MAX_PATTERN = 500  # characters
MAX_PATTERN_MEMORY = 1 << 20  # bytes RE2 may use for one compiled pattern and its matching


class PatternError(ValueError):
    """RE2 cannot compile the pattern; the message says why."""


@dataclass(frozen=True, slots=True)
class LocalPartPattern:
    pattern: str
    _regexp: Any  # re2._Regexp: the module has no type information

    def fullmatch(self, text: str) -> bool:
        """Whether the whole of ``text`` matches, in any case."""
        try:
            return self._regexp.fullmatch(text) is not None
        except UnicodeEncodeError:  # a lone surrogate: not a name any pattern names
            return False


def compile_local_pattern(pattern: str) -> LocalPartPattern:
    """The compiled pattern (cached), or PatternError."""
    compiled = _compile(pattern)
    if isinstance(compiled, str):
        raise PatternError(compiled)
    return compiled


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> LocalPartPattern | str:
    if len(pattern) > MAX_PATTERN:
        return f"pattern is longer than {MAX_PATTERN} characters"
    options = re2.Options()
    options.case_sensitive = False
    options.max_mem = MAX_PATTERN_MEMORY
    options.log_errors = False
    try:
        return LocalPartPattern(pattern, re2.compile(_from_python(pattern), options))
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return f"pattern is not a regular expression mailmoat can match: {reason}"


def _from_python(pattern: str) -> str:
    r"""Python's ``\Z`` (end of text, which patterns written for Python's engine
    may use) as RE2 writes it, ``\z``; everything else as it is."""
    out = []
    escaped = False
    for char in pattern:
        if escaped:
            out.append("z" if char == "Z" else char)
            escaped = False
        else:
            out.append(char)
            escaped = char == "\\"
    return "".join(out)
