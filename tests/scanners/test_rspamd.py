from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from mailmoat.scanners.base import ScanInput, ScannerUnavailable, Verdict
from mailmoat.scanners.rspamd import RspamdScanner, parse_reply
from tests.daemons import free_port
from tests.scanners.messages import GTUBE_MESSAGE, NORMAL


def envelope(raw: bytes, **overrides: object) -> ScanInput:
    fields: dict[str, object] = {
        "client_ip": "192.0.2.10",
        "helo": "mail.sender.example",
        "mail_from": "alice@sender.example",
        "recipients": ("bob@customer.example",),
        **overrides,
    }
    return ScanInput(raw, "acme", **fields)  # type: ignore[arg-type]


@pytest.fixture
async def scanner(rspamd_url: str) -> AsyncIterator[RspamdScanner]:
    scanner = RspamdScanner(rspamd_url, timeout=30)
    yield scanner
    await scanner.close()


async def test_gtube_is_spam(scanner: RspamdScanner) -> None:
    result = await scanner.scan(envelope(GTUBE_MESSAGE))
    assert result.verdict is Verdict.SPAM
    assert "GTUBE" in {s.name for s in result.symbols}
    assert result.score >= result.threshold > 0
    assert result.scanner == "rspamd"


async def test_normal_mail_is_ham(scanner: RspamdScanner) -> None:
    result = await scanner.scan(envelope(NORMAL))
    assert result.verdict is Verdict.HAM
    assert result.score < result.threshold
    assert "GTUBE" not in {s.name for s in result.symbols}


async def test_the_envelope_reaches_rspamd(scanner: RspamdScanner) -> None:
    # NORMAL is To: bob@customer.example; he is the second envelope recipient.
    two = await scanner.scan(
        envelope(NORMAL, recipients=("carol@x.example", "bob@customer.example"))
    )
    names = {s.name for s in two.symbols}
    assert "TO_MATCH_ENVRCPT_ALL" in names
    assert "FROM_EQ_ENVFROM" in names  # envelope sender alice@ matches the From header
    other = await scanner.scan(envelope(NORMAL, recipients=("carol@x.example",)))
    assert "TO_MATCH_ENVRCPT_ALL" not in {s.name for s in other.symbols}
    bounce = await scanner.scan(envelope(NORMAL, mail_from="", client_ip="", helo=""))
    assert "FROM_EQ_ENVFROM" not in {s.name for s in bounce.symbols}
    # Whatever an SMTP client put in HELO cannot break the request.
    odd = await scanner.scan(envelope(NORMAL, helo="bad\r\nX-Injected: 1\x00 h\u00e9lo"))
    assert odd.verdict is Verdict.HAM


async def test_closed_port_is_unavailable() -> None:
    scanner = RspamdScanner(f"http://127.0.0.1:{free_port()}", timeout=5)
    try:
        with pytest.raises(ScannerUnavailable, match="rspamd at"):
            await scanner.scan(envelope(NORMAL))
    finally:
        await scanner.close()


RECORDED = {
    "is_skipped": False,
    "score": 7.5,
    "required_score": 15.0,
    "action": "add header",
    "symbols": {
        "DATE_IN_PAST": {
            "name": "DATE_IN_PAST",
            "score": 1.0,
            "metric_score": 1.0,
            "description": "Message date is in past",
            "options": ["25347"],
        },
        "R_SUSPICIOUS_URL": {"name": "R_SUSPICIOUS_URL", "score": 6.5, "metric_score": 6.5},
    },
    "messages": {},
    "message-id": "x@example.com",
}


def replying(status: int, body: bytes) -> tuple[RspamdScanner, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=body)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return RspamdScanner("http://rspamd.test/", timeout=5, client=client), seen


async def test_reply_is_read_and_request_carries_the_envelope() -> None:
    scanner, seen = replying(200, json.dumps(RECORDED).encode())
    result = await scanner.scan(envelope(NORMAL, recipients=("a@x.example", "b@y.example")))
    assert (result.score, result.threshold, result.verdict) == (7.5, 15.0, Verdict.SPAM)
    symbols = {s.name: s for s in result.symbols}
    assert symbols["DATE_IN_PAST"].score == 1.0
    assert symbols["DATE_IN_PAST"].description == "Message date is in past [25347]"
    assert symbols["R_SUSPICIOUS_URL"].description == ""
    request = seen[0]
    assert request.url == "http://rspamd.test/checkv2"
    assert request.content == NORMAL
    assert request.headers["IP"] == "192.0.2.10"
    assert request.headers["Helo"] == "mail.sender.example"
    assert request.headers["From"] == "alice@sender.example"
    assert request.headers.get_list("Rcpt") == ["a@x.example", "b@y.example"]
    await scanner.close()
    assert not scanner.client.is_closed  # the caller's client stays open


@pytest.mark.parametrize(
    ("action", "verdict"),
    [
        ("no action", Verdict.HAM),
        ("greylist", Verdict.SPAM),
        ("add header", Verdict.SPAM),
        ("rewrite subject", Verdict.SPAM),
        ("soft reject", Verdict.SPAM),
        ("reject", Verdict.SPAM),
    ],
)
def test_actions_map_to_verdicts(action: str, verdict: Verdict) -> None:
    assert parse_reply({**RECORDED, "action": action}).verdict is verdict


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b"internal error"),
        (200, b"not json"),
        (200, b"[1, 2]"),
        (200, b'{"error": "cannot parse input"}'),
        (200, b'{"score": "many", "required_score": 15, "action": "reject"}'),
        (200, b'{"score": 1, "required_score": 15}'),
        (200, b'{"score": 1, "required_score": 15, "action": "reject", "symbols": ["X"]}'),
    ],
)
async def test_bad_replies_are_unavailable(status: int, body: bytes) -> None:
    scanner, _seen = replying(status, body)
    with pytest.raises(ScannerUnavailable):
        await scanner.scan(envelope(NORMAL))
