"""POSTing a message to a webhook: redirects, one deadline, the address policy.

Each answer becomes a reply in SMTP terms, so that the queue, the retry schedule
and the SMTP front end treat webhooks like any other destination:

- 2xx: delivered (250);
- 4xx: refused for good (554), with a text/plain answer carried into the reply;
- 5xx, no answer within the timeout, no connection, a target the address policy
  refuses: try again later (450).

Names are resolved through mailmoat's own resolver, whose addresses pass the
address policy of ``destinations`` (every redirect too), and the connection goes
to the address that was checked (the Host header and TLS server name keep the
name), so a second lookup cannot lead the post somewhere else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx

from mailmoat import __version__
from mailmoat.delivery.destinations import Candidate, Destinations, Unresolvable
from mailmoat.delivery.webhook_signing import signature_headers
from mailmoat.domain.names import InvalidName
from mailmoat.domain.webhooks import Target, WebhookAnswer, parse_target

log = logging.getLogger(__name__)

MAX_REDIRECTS = 3
RESPONSE_KEPT = 2048  # bytes of a failing answer kept for the statuses
REPLY_TEXT = 200  # characters of a text/plain answer carried into the SMTP reply
UNUSABLE_TARGET = "(unusable target)"


@dataclass(frozen=True, slots=True)
class _Pinned:
    url: str  # the target with its host replaced by the checked address
    headers: dict[str, str]
    extensions: dict[str, Any]


class WebhookClient:
    def __init__(
        self,
        destinations: Destinations,
        *,
        timeout: float = 30.0,
    ) -> None:
        self.destinations = destinations
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"User-Agent": f"mailmoat/{__version__}"},
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def post(
        self,
        url: str,
        body: bytes,
        content_type: str,
        *,
        message_id: str,
        secrets: list[str],
    ) -> WebhookAnswer:
        """POST ``body`` to ``url``, following up to three redirects (posting again),
        all within one deadline."""
        try:
            target = parse_target(url)
        except InvalidName as exc:
            return _failed(f"4.3.5 webhook target is not usable: {exc}", UNUSABLE_TARGET)
        shown = target.shown
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                for _ in range(MAX_REDIRECTS + 1):
                    pinned = await self._pin(target)
                    headers = {
                        **pinned.headers,
                        "Content-Type": content_type,
                        **signature_headers(message_id, secrets, int(time.time()), body),
                    }
                    async with self._client.stream(
                        "POST",
                        pinned.url,
                        content=body,
                        headers=headers,
                        extensions=pinned.extensions,
                    ) as answer:
                        location = answer.headers.get("location")
                        if answer.is_redirect and location:
                            target = parse_target(str(httpx.URL(target.url).join(location)))
                            shown = target.shown
                            continue
                        kept = b"" if answer.is_success else await _first_bytes(answer)
                        return _result(answer, kept, shown)
                return _failed(f"4.4.6 more than {MAX_REDIRECTS} redirects", shown)
        except InvalidName as exc:
            return _failed(f"4.4.6 bad redirect: {exc}", shown)
        except Unresolvable as exc:
            return _failed(exc.reply.partition(" ")[2], shown)
        except (TimeoutError, httpx.TimeoutException):
            waited = time.monotonic() - started
            return _failed(f"4.4.2 webhook did not answer within {waited:.3g} s", shown)
        except httpx.HTTPError as exc:
            detail = str(exc) or type(exc).__name__
            return _failed(f"4.4.1 webhook unreachable: {detail}"[:300], shown)

    async def _pin(self, target: Target) -> _Pinned:
        """Resolve the target's host once, check it, and aim the request at it."""
        found = await self.destinations.resolve(Candidate(target.host, target.port))
        addresses = [d.address for d in found]
        url = httpx.URL(target.url)
        host = f"[{url.host}]" if ":" in url.host else url.host
        if url.port is not None:
            host += f":{url.port}"
        extensions: dict[str, Any] = {}
        if url.scheme == "https":
            extensions["sni_hostname"] = url.host
        return _Pinned(str(url.copy_with(host=addresses[0])), {"Host": host}, extensions)


async def _first_bytes(answer: httpx.Response) -> bytes:
    kept = b""
    async for chunk in answer.aiter_bytes():
        kept += chunk
        if len(kept) >= RESPONSE_KEPT:
            break
    return kept[:RESPONSE_KEPT]


def _failed(text: str, target: str) -> WebhookAnswer:
    return WebhookAnswer(450, text, None, target, None)


def _result(answer: httpx.Response, kept: bytes, shown: str) -> WebhookAnswer:
    status = answer.status_code
    if 200 <= status < 300:
        return WebhookAnswer(250, f"2.0.0 HTTP {status}", status, shown, None)
    # No NUL: PostgreSQL's text columns refuse it.
    body = kept.decode("utf-8", "replace").replace("\x00", "\ufffd")
    text = ""
    if answer.headers.get("content-type", "").lower().startswith("text/plain"):
        # Printable ASCII only: the SMTP reply may go to a client without SMTPUTF8.
        printable = "".join(ch if " " <= ch <= "~" else " " for ch in body)
        text = " ".join(printable.split())[:REPLY_TEXT]
    said = f"HTTP {status}" + (f": {text}" if text else "")
    if 400 <= status < 500:
        return WebhookAnswer(554, f"5.7.1 {said}", status, shown, body)
    return WebhookAnswer(450, f"4.3.0 {said}", status, shown, body)
