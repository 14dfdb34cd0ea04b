"""POSTing a message to a webhook: redirects, timeouts, the private-address guard.

Each answer becomes a reply in SMTP terms, so that the queue, the retry schedule
and the SMTP front end treat webhooks like any other destination:

- 2xx: delivered (250);
- 4xx: refused for good (554), with a text/plain answer carried into the reply;
- 5xx, a timeout, no connection, a refused target: try again later (450).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import httpx

from mailmoat import __version__
from mailmoat.delivery.destinations import Candidate, Destinations, Unresolvable
from mailmoat.delivery.relay import Reply
from mailmoat.delivery.webhook_signing import signature_headers
from mailmoat.domain.names import InvalidName
from mailmoat.domain.webhooks import is_public_address, parse_target

log = logging.getLogger(__name__)

MAX_REDIRECTS = 3
RESPONSE_KEPT = 2048  # bytes of a failing answer kept for the statuses
REPLY_TEXT = 200  # characters of a text/plain answer carried into the SMTP reply


@dataclass(frozen=True, slots=True)
class PostResult:
    reply: Reply  # in SMTP terms, see above
    status: int | None  # the HTTP status; None when no answer came
    target: str  # the URL posted to, without credentials
    response: str | None  # the first 2 KB of a failing answer's body


class TargetRefused(Exception):
    """The target resolves to an address the operator does not allow."""


class WebhookClient:
    def __init__(
        self,
        destinations: Destinations,
        *,
        timeout: float = 30.0,
        allow_private: bool = False,
    ) -> None:
        self.destinations = destinations
        self.timeout = timeout
        self.allow_private = allow_private
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
    ) -> PostResult:
        """POST ``body`` to ``url``, following up to three redirects (posting again)."""
        try:
            target = parse_target(url)
        except InvalidName as exc:
            return PostResult(
                Reply(450, f"4.3.5 webhook target is not usable: {exc}"), None, url, None
            )
        shown = target.shown
        started = time.monotonic()
        try:
            for _ in range(MAX_REDIRECTS + 1):
                await self._guard(target.host, target.port)
                headers = {
                    "Content-Type": content_type,
                    **signature_headers(message_id, secrets, int(time.time()), body),
                }
                answer = await self._client.post(target.url, content=body, headers=headers)
                if answer.is_redirect and "location" in answer.headers:
                    location = str(answer.url.join(answer.headers["location"]))
                    target = parse_target(location)
                    shown = target.shown
                    continue
                return _result(answer, shown)
            return PostResult(
                Reply(450, f"4.4.6 more than {MAX_REDIRECTS} redirects"), None, shown, None
            )
        except TargetRefused as exc:
            return PostResult(Reply(450, f"4.4.0 {exc}"), None, shown, None)
        except InvalidName as exc:
            return PostResult(Reply(450, f"4.4.6 bad redirect: {exc}"), None, shown, None)
        except Unresolvable as exc:
            return PostResult(Reply(450, exc.reply.partition(" ")[2]), None, shown, None)
        except httpx.TimeoutException:
            waited = time.monotonic() - started
            return PostResult(
                Reply(450, f"4.4.2 webhook did not answer within {waited:.3g} s"),
                None,
                shown,
                None,
            )
        except httpx.HTTPError as exc:
            detail = str(exc) or type(exc).__name__
            return PostResult(
                Reply(450, f"4.4.1 webhook unreachable: {detail}"[:300]), None, shown, None
            )

    async def _guard(self, host: str, port: int) -> None:
        """Refuse targets on private, loopback and similar ranges unless allowed."""
        if self.allow_private:
            return
        found = await self.destinations.resolve(Candidate(host, port))
        refused = [d.address for d in found if not is_public_address(d.address)]
        if refused:
            raise TargetRefused(
                f"webhook target {host} resolves to {refused[0]}, a private or loopback "
                "address the operator has not allowed"
            )


def _result(answer: httpx.Response, shown: str) -> PostResult:
    status = answer.status_code
    if 200 <= status < 300:
        return PostResult(Reply(250, f"2.0.0 HTTP {status}"), status, shown, None)
    # No NUL: PostgreSQL's text columns refuse it.
    body = answer.content[:RESPONSE_KEPT].decode("utf-8", "replace").replace("\x00", "\ufffd")
    text = ""
    if answer.headers.get("content-type", "").lower().startswith("text/plain"):
        printable = "".join(ch if ch.isprintable() else " " for ch in body)
        text = " ".join(printable.split())[:REPLY_TEXT]
    said = f"HTTP {status}" + (f": {text}" if text else "")
    if 400 <= status < 500:
        return PostResult(Reply(554, f"5.7.1 {said}"), status, shown, body)
    return PostResult(Reply(450, f"4.3.0 {said}"), status, shown, body)
