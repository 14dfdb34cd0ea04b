"""SpamAssassin's spamd, over TCP with aiospamc.

One REPORT request per message: its ``Spam`` header carries the verdict, score
and threshold, its body the table of rules that fired with their points and
descriptions. If an operator's report template hides that table, a SYMBOLS
request supplies the rule names instead, each with score 0.
"""

from __future__ import annotations

import re
from typing import Any

import aiospamc
from aiospamc.exceptions import ClientException
from aiospamc.responses import ResponseException

from mailmoat.scanners.base import ScanInput, ScannerUnavailable, ScanResult, Symbol, Verdict

# " 1.2 RULE_NAME              Description" (the points are right-aligned in four
# columns, so a rule line starts with at most one space; continuations with many).
_RULE_LINE = re.compile(r"^ ?(-?\d+(?:\.\d+)?) +([A-Za-z0-9_]+)(?: +(.*))?$")
_RULE_NAME = re.compile(r"[A-Za-z0-9_]+")


def parse_report(report: str) -> list[Symbol]:
    """The rules in a SpamAssassin report table (after the ``---- ----`` line)."""
    symbols: list[Symbol] = []
    in_table = False
    for line in report.splitlines():
        if not in_table:
            in_table = line.startswith("----")
            continue
        match = _RULE_LINE.match(line)
        if match is not None:
            points, name, description = match.groups()
            symbols.append(Symbol(name, float(points), (description or "").strip()))
        elif symbols and line.strip():
            last = symbols[-1]
            description = f"{last.description} {line.strip()}".strip()
            symbols[-1] = Symbol(last.name, last.score, description)
        elif not line.strip() and symbols:
            break
    return symbols


class SpamdScanner:
    name = "spamd"

    def __init__(self, host: str = "127.0.0.1", port: int = 783, timeout: float = 20.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout

    async def scan(self, message: ScanInput) -> ScanResult:
        response = await self._request(aiospamc.report, message.raw)
        spam = response.headers.spam
        if spam is None:
            raise ScannerUnavailable("spamd reply without a Spam header")
        body = bytes(response.body).decode("utf-8", "replace")
        symbols = parse_report(body)
        if not symbols:
            names = await self._request(aiospamc.symbols, message.raw)
            text = bytes(names.body).decode("utf-8", "replace")
            symbols = [Symbol(name, 0.0) for name in _RULE_NAME.findall(text)]
        return ScanResult(
            score=float(spam.score),
            threshold=float(spam.threshold),
            verdict=Verdict.SPAM if spam.value else Verdict.HAM,
            symbols=tuple(symbols),
            scanner=self.name,
        )

    async def _request(self, command: Any, raw: bytes) -> Any:
        try:
            return await command(
                raw,
                host=self.host,
                port=self.port,
                timeout=aiospamc.Timeout(total=self.timeout),
            )
        except (ClientException, ResponseException, OSError) as exc:  # TimeoutError is OSError
            detail = str(exc) or type(exc).__name__
            raise ScannerUnavailable(f"spamd at {self.host}:{self.port}: {detail}") from exc

    async def close(self) -> None:
        return None
