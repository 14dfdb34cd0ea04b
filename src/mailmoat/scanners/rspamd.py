"""rspamd, through the normal worker's HTTP ``/checkv2`` endpoint.

rspamd decides by action, not by one threshold: any action other than
``no action`` (reject, soft reject, rewrite subject, add header, greylist) counts
as spam. ``required_score`` in its reply, reported here as the threshold, is the
score of the reject action.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx

from mailmoat.scanners.base import ScanInput, ScannerUnavailable, ScanResult, Symbol, Verdict

HAM_ACTION = "no action"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _header(value: str) -> bytes:
    """A header value that cannot break the request, whatever the SMTP client sent."""
    return _CONTROL.sub("", value).strip().encode("utf-8", "replace")


def parse_reply(reply: Any, scanner: str = "rspamd") -> ScanResult:
    """A ScanResult from a decoded /checkv2 JSON reply; ValueError if it is not one."""
    if not isinstance(reply, Mapping):
        raise ValueError("reply is not a JSON object")
    if "error" in reply and "action" not in reply:
        raise ValueError(f"rspamd error: {reply['error']}")
    try:
        score = float(reply["score"])
        threshold = float(reply["required_score"])
        action = reply["action"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"reply lacks score, required_score or action: {exc}") from exc
    if not isinstance(action, str):
        raise ValueError("action is not a string")
    symbols = []
    raw_symbols = reply.get("symbols") or {}
    if not isinstance(raw_symbols, Mapping):
        raise ValueError("symbols is not an object")
    for name, detail in raw_symbols.items():
        if not isinstance(detail, Mapping):
            continue
        try:
            points = float(detail.get("score", 0.0))
        except (TypeError, ValueError):
            points = 0.0
        description = str(detail.get("description") or "")
        options = detail.get("options")
        if isinstance(options, list) and options:
            shown = ", ".join(str(o) for o in options[:5])
            description = f"{description} [{shown}]".strip()
        symbols.append(Symbol(str(name), points, description))
    verdict = Verdict.HAM if action == HAM_ACTION else Verdict.SPAM
    return ScanResult(score, threshold, verdict, tuple(symbols), scanner)


class RspamdScanner:
    name = "rspamd"

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:11333",
        timeout: float = 20.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        """``client``, when given, stays the caller's: ``close`` leaves it open."""
        self.url = base_url.rstrip("/") + "/checkv2"
        self.timeout = timeout
        self._owns_client = client is None
        self.client = client if client is not None else httpx.AsyncClient(timeout=timeout)

    def _headers(self, message: ScanInput) -> list[tuple[bytes, bytes]]:
        headers = [(b"Content-Type", b"message/rfc822")]
        if message.client_ip:
            headers.append((b"IP", _header(message.client_ip)))
        if message.helo:
            headers.append((b"Helo", _header(message.helo)))
        # The null reverse-path of a bounce is sent as "<>"; rspamd reads it as empty.
        headers.append((b"From", _header(message.mail_from) or b"<>"))
        headers.extend((b"Rcpt", _header(r)) for r in message.recipients if _header(r))
        return headers

    async def scan(self, message: ScanInput) -> ScanResult:
        try:
            response = await self.client.post(
                self.url,
                content=message.raw,
                headers=self._headers(message),
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            detail = str(exc) or type(exc).__name__
            raise ScannerUnavailable(f"rspamd at {self.url}: {detail}") from exc
        if response.status_code != 200:
            raise ScannerUnavailable(f"rspamd at {self.url}: HTTP {response.status_code}")
        try:
            return parse_reply(response.json(), self.name)
        except ValueError as exc:  # JSONDecodeError is a ValueError
            raise ScannerUnavailable(f"rspamd at {self.url}: unreadable reply: {exc}") from exc

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()
