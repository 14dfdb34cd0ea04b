from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from mailmoat.scanners.base import ScanInput, ScannerUnavailable, Verdict
from mailmoat.scanners.spamd import SpamdScanner, parse_report
from tests.daemons import free_port
from tests.scanners.messages import GTUBE_MESSAGE, NORMAL

REPORT = """\
Spam detection software, running on the system "vm",
has identified this incoming email as possible spam.

Content preview:  XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X

Content analysis details:   (1002.5 points, 5.0 required)

 pts rule name              description
---- ---------------------- --------------------------------------------------
-0.0 NO_RECEIVED            Informational: message has no Received headers
1000 GTUBE                  BODY: Generic Test for Unsolicited Bulk Email
 2.5 URIBL_FAKE             Contains a URL listed in a made-up list
                            [URIs: prize.example]
 0.0 TVD_SPACE_RATIO        No description available.

"""


def test_parse_report_reads_points_names_and_wrapped_descriptions() -> None:
    symbols = {s.name: s for s in parse_report(REPORT)}
    assert list(symbols) == ["NO_RECEIVED", "GTUBE", "URIBL_FAKE", "TVD_SPACE_RATIO"]
    assert symbols["GTUBE"].score == 1000.0
    assert symbols["NO_RECEIVED"].score == 0.0
    assert symbols["URIBL_FAKE"].score == 2.5
    assert symbols["URIBL_FAKE"].description.endswith("made-up list [URIs: prize.example]")
    assert parse_report("no table here\n 1.0 NOT_A_RULE x\n") == []


async def test_gtube_is_spam(spamd_port: int) -> None:
    result = await SpamdScanner("127.0.0.1", spamd_port, 30).scan(ScanInput(GTUBE_MESSAGE, "a"))
    assert result.verdict is Verdict.SPAM
    assert result.score >= 1000 and result.threshold == 5.0
    gtube = [s for s in result.symbols if s.name == "GTUBE"]
    assert len(gtube) == 1 and gtube[0].score >= 1000
    assert "Unsolicited Bulk Email" in gtube[0].description
    assert result.scanner == "spamd"


async def test_normal_mail_is_ham(spamd_port: int) -> None:
    result = await SpamdScanner("127.0.0.1", spamd_port, 30).scan(ScanInput(NORMAL, "a"))
    assert result.verdict is Verdict.HAM
    assert result.score < result.threshold == 5.0
    assert "GTUBE" not in {s.name for s in result.symbols}


async def test_closed_port_is_unavailable() -> None:
    scanner = SpamdScanner("127.0.0.1", free_port(), 5)
    with pytest.raises(ScannerUnavailable, match=r"spamd at 127\.0\.0\.1"):
        await scanner.scan(ScanInput(NORMAL, "a"))


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def fake_spamd() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    """Loopback TCP servers that answer like a broken spamd."""
    servers: list[asyncio.Server] = []

    async def serve(handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield serve
    for server in servers:
        server.close()
        await server.wait_closed()


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(100)
    writer.write(b"HTTP/1.1 200 OK\r\n\r\nnot spamd at all")
    await writer.drain()
    writer.close()


async def _error(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(100)
    writer.write(b"SPAMD/1.5 76 Bad header line: (EOF)\r\n\r\n")
    await writer.drain()
    writer.close()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(5)
    writer.close()


@pytest.mark.parametrize("handler", [_garbage, _error, _silent])
async def test_bad_replies_and_timeouts_are_unavailable(
    fake_spamd: Callable[[Handler], Awaitable[int]], handler: Handler
) -> None:
    port = await fake_spamd(handler)
    scanner = SpamdScanner("127.0.0.1", port, timeout=0.5)
    with pytest.raises(ScannerUnavailable):
        await scanner.scan(ScanInput(NORMAL, "a"))


def _spamd_reply(body: bytes, spam_header: bool = True) -> bytes:
    head = b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\n" % len(body)
    if spam_header:
        head += b"Spam: True ; 7.5 / 5.0\r\n"
    return head + b"\r\n" + body


async def _custom_template(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A spamd whose report template leaves out the rule table."""
    request = await reader.read()
    if request.startswith(b"SYMBOLS "):
        writer.write(_spamd_reply(b"BAYES_99,HTML_MESSAGE,URIBL_X"))
    else:
        writer.write(_spamd_reply(b"Looks like spam to me.\r\n"))
    await writer.drain()
    writer.close()


async def test_rule_names_come_from_symbols_when_the_report_has_no_table(
    fake_spamd: Callable[[Handler], Awaitable[int]],
) -> None:
    port = await fake_spamd(_custom_template)
    result = await SpamdScanner("127.0.0.1", port, timeout=5).scan(ScanInput(NORMAL, "a"))
    assert (result.score, result.threshold, result.verdict) == (7.5, 5.0, Verdict.SPAM)
    assert [(s.name, s.score) for s in result.symbols] == [
        ("BAYES_99", 0.0),
        ("HTML_MESSAGE", 0.0),
        ("URIBL_X", 0.0),
    ]


async def _no_spam_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()
    writer.write(_spamd_reply(b"", spam_header=False))
    await writer.drain()
    writer.close()


async def test_a_reply_without_verdict_is_unavailable(
    fake_spamd: Callable[[Handler], Awaitable[int]],
) -> None:
    port = await fake_spamd(_no_spam_header)
    with pytest.raises(ScannerUnavailable, match="Spam header"):
        await SpamdScanner("127.0.0.1", port, timeout=5).scan(ScanInput(NORMAL, "a"))
