"""DATA through real sockets: long lines, bare LF, limits and their records, large
messages received through a temporary file that never outlives its session."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import aiosmtplib
import pytest

from mailmoat.scanners.base import ScanInput, ScanResult, Verdict
from tests.smtp.conftest import DOMAIN, Gateway, GatewayFactory, message


async def _dialogue_until_data(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A session that has just been told 354 (each reply read before the next command)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await reader.readline()).startswith(b"220")
    for command in (
        b"EHLO client.test",
        b"MAIL FROM:<alice@sender.test>",
        b"RCPT TO:<bob@example.com>",
    ):
        writer.write(command + b"\r\n")
        while (line := await reader.readline())[3:4] == b"-":
            pass
        assert line.startswith(b"250"), line
    writer.write(b"DATA\r\n")
    assert (await reader.readline()).startswith(b"354")
    return reader, writer


async def _send_data(port: int, data: bytes) -> bytes:
    """Send ``data`` (end of data included) in one transaction; returns the reply."""
    reader, writer = await _dialogue_until_data(port)
    writer.write(data)
    await writer.drain()
    reply = await asyncio.wait_for(reader.readline(), 10)
    writer.write(b"QUIT\r\n")
    writer.close()
    return reply


async def test_a_line_longer_than_1000_bytes_is_accepted_intact(gateway: Gateway) -> None:
    long_line = "<p>" + "word " * 299 + "</p>"  # 1,502 bytes, as HTML mailers write
    errors, reply = await gateway.send(message(body=f"Hello\r\n{long_line}\r\nBye\r\n"))
    assert errors == {}
    assert reply.startswith("2.0.0 Ok: queued as ")
    record = await gateway.only_message()
    assert record["state"] == "queued"
    raw = await gateway.raw(record["id"])
    assert raw.endswith(f"\r\n\r\nHello\r\n{long_line}\r\nBye\r\n".encode())


async def test_a_message_with_bare_lf_line_endings_is_accepted(gateway: Gateway) -> None:
    body = "".join(f"line {i} of a message written by a Unix tool\n" for i in range(60))
    lf_message = (
        "From: alice@sender.test\nTo: bob@example.com\nSubject: written with LF\n"
        "Message-ID: <lf@sender.test>\n\n" + body
    ).encode()
    assert len(lf_message) > 2000
    reply = await _send_data(gateway.port, lf_message + b"\r\n.\r\n")
    assert reply.startswith(b"250 2.0.0"), reply
    record = await gateway.only_message()
    assert record["subject"] == "written with LF"  # each LF ended a header line
    assert record["messageId"] == "<lf@sender.test>"
    raw = await gateway.raw(record["id"])
    assert b"\n" not in raw.replace(b"\r\n", b"")  # stored with CRLF only
    assert raw.endswith(lf_message.replace(b"\n", b"\r\n") + b"\r\n")


async def test_a_bare_lf_before_the_final_dot_does_not_end_data(gateway: Gateway) -> None:
    """``LF . CRLF`` and ``LF . LF`` are body text; only ``CRLF . CRLF`` ends DATA."""
    data = (
        b"Subject: outer\r\n\r\nfirst\n.\r\nRSET\r\nMAIL FROM:<ceo@bank.test>\r\n"
        b"more\n.\nQUIT\r\nlast\r\n.\r\n"
    )
    reply = await _send_data(gateway.port, data)
    assert reply.startswith(b"250 2.0.0"), reply
    record = await gateway.only_message()
    assert record["subject"] == "outer"
    raw = await gateway.raw(record["id"])
    assert raw.endswith(
        b"first\r\n\r\nRSET\r\nMAIL FROM:<ceo@bank.test>\r\nmore\r\n\r\nQUIT\r\nlast\r\n"
    )


@pytest.mark.parametrize("length", [2001, 300_000], ids=["just-over", "far-over"])
async def test_a_line_over_the_limit_is_refused_and_recorded(
    make_gateway: GatewayFactory, length: int
) -> None:
    gateway = await make_gateway(max_line_length=2000)
    async with gateway.client() as smtp:
        await smtp.mail("alice@sender.test")
        await smtp.rcpt(f"bob@{DOMAIN}")
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await smtp.data(message(body="a\r\n" + "y" * length + "\r\nz\r\n").encode())
        assert refused.value.code == 500
        assert refused.value.message.startswith("5.5.2 Line too long")
        # The session goes on: a line of exactly the limit is accepted.
        errors, reply = await smtp.sendmail(
            "alice@sender.test", [f"bob@{DOMAIN}"], message(body="y" * 2000 + "\r\n")
        )
        assert errors == {} and reply.startswith("2.0.0")
    accepted, refused_record = sorted(await gateway.messages(), key=lambda m: m["state"])
    assert refused_record["state"] == "rejected"
    assert refused_record["reason"] == "line-too-long"
    assert refused_record["smtpReply"].startswith("500 5.5.2")
    assert refused_record["recipients"] == [f"bob@{DOMAIN}"]
    assert refused_record["mailFrom"] == "alice@sender.test"
    assert refused_record["size"] > length
    assert accepted["state"] == "queued"


def _files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.is_dir() else []


async def _wait_for(condition: Callable[[], object], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_a_large_message_is_received_through_a_temporary_file(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    incoming = tmp_path / "incoming"
    gateway = await make_gateway(max_message_size=8 * 1024 * 1024, incoming_dir=incoming)
    small = message(body="Short and sweet.\r\n")
    errors, _ = await gateway.send(small)
    assert errors == {}
    assert not incoming.exists()  # small mail never touches a file

    lines = b"".join(b"%07d " % i + b"z" * 70 + b"\r\n" for i in range(60_000))
    big = message(subject="big").encode() + b".starts with a dot\r\n" + lines
    reader, writer = await _dialogue_until_data(gateway.port)
    writer.write(big[: len(big) // 2])
    await writer.drain()
    # Half-way through, the content is on disk, not in memory.
    await _wait_for(lambda: _files(incoming), "a temporary file")
    writer.write(big[len(big) // 2 :] + b".\r\n")
    reply = await asyncio.wait_for(reader.readline(), 20)
    assert reply.startswith(b"250 2.0.0"), reply
    writer.close()
    assert _files(incoming) == []
    record = next(m for m in await gateway.messages() if m["subject"] == "big")
    raw = await gateway.raw(record["id"])
    # Byte for byte, dot-stuffing undone.
    assert raw.endswith(big.split(b"\r\n\r\n", 1)[1].replace(b"\r\n.starts", b"\r\nstarts"))


async def test_a_disconnect_mid_data_leaves_no_temporary_file(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    incoming = tmp_path / "incoming"
    gateway = await make_gateway(max_message_size=8 * 1024 * 1024, incoming_dir=incoming)
    _reader, writer = await _dialogue_until_data(gateway.port)
    writer.write(message().encode())
    writer.write(b"".join(b"line %d\r\n" % i for i in range(300_000)))
    await writer.drain()
    await _wait_for(lambda: _files(incoming), "a temporary file")
    writer.transport.abort()  # the client vanishes mid-DATA
    await _wait_for(lambda: not _files(incoming), "the temporary file to go")
    assert await gateway.messages() == []
    # And the gateway goes on receiving mail.
    errors, _ = await gateway.send(message())
    assert errors == {}


async def test_an_oversized_large_message_is_refused_recorded_and_not_kept(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    incoming = tmp_path / "incoming"
    limit = 2 * 1024 * 1024
    gateway = await make_gateway(max_message_size=limit, incoming_dir=incoming)
    body = b"".join(b"%07d " % i + b"q" * 70 + b"\r\n" for i in range(40_000))
    reply = await _send_data(gateway.port, message().encode() + body + b".\r\n")
    assert reply.startswith(b"552 5.3.4"), reply
    assert _files(incoming) == []
    (record,) = await gateway.messages()
    assert record["state"] == "rejected"
    assert record["reason"] == "max-size"
    assert record["size"] > limit
    assert record["recipients"] == [f"bob@{DOMAIN}"]


class SlowScanner:
    """A scanner that takes its time, and counts how many messages it sees at once."""

    name = "slow"

    def __init__(self) -> None:
        self.active = 0
        self.most = 0
        self.seen = 0

    async def scan(self, message: ScanInput) -> ScanResult:
        self.active += 1
        self.seen += 1
        self.most = max(self.most, self.active)
        try:
            await asyncio.sleep(0.5)
        finally:
            self.active -= 1
        return ScanResult(0.0, 5.0, Verdict.HAM, scanner=self.name)

    async def close(self) -> None:
        return None


def _sized(subject: str, size: int) -> bytes:
    line = b"m" * 98 + b"\r\n"
    head = message(subject=subject).encode()
    return head + line * ((size - len(head)) // len(line))


async def test_large_messages_take_turns_within_the_memory_budget(
    make_gateway: GatewayFactory,
) -> None:
    """Two 1.5 MB messages need more than a 4 MiB budget together: one waits."""
    scanner = SlowScanner()
    gateway = await make_gateway(
        scanner=scanner, max_message_size=8 * 2**20, memory_budget=4 * 2**20
    )
    replies = await asyncio.gather(
        *(_send_data(gateway.port, _sized(f"m{i}", 1_500_000) + b".\r\n") for i in range(2))
    )
    assert all(r.startswith(b"250 2.0.0") for r in replies), replies
    assert scanner.seen == 2 and scanner.most == 1
    # Small messages fit side by side.
    replies = await asyncio.gather(
        *(_send_data(gateway.port, _sized(f"s{i}", 20_000) + b".\r\n") for i in range(3))
    )
    assert all(r.startswith(b"250 2.0.0") for r in replies), replies
    assert scanner.most == 3


async def test_a_session_that_leaves_while_waiting_its_turn_does_not_block_others(
    make_gateway: GatewayFactory,
) -> None:
    scanner = SlowScanner()
    gateway = await make_gateway(
        scanner=scanner, max_message_size=8 * 2**20, memory_budget=4 * 2**20
    )
    first = asyncio.create_task(_send_data(gateway.port, _sized("a", 1_500_000) + b".\r\n"))
    await _wait_for(lambda: scanner.active == 1, "the first message to be scanned")
    _reader, leaving = await _dialogue_until_data(gateway.port)
    leaving.write(_sized("b", 1_500_000) + b".\r\n")
    await leaving.drain()
    await asyncio.sleep(0.1)  # its DATA is complete: it waits for the budget
    leaving.transport.abort()
    assert (await first).startswith(b"250 2.0.0")
    reply = await _send_data(gateway.port, _sized("c", 1_500_000) + b".\r\n")
    assert reply.startswith(b"250 2.0.0"), reply
    subjects = sorted(m["subject"] for m in await gateway.messages())
    assert subjects == ["a", "c"]


async def test_files_left_by_a_process_that_is_gone_are_removed_at_start(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    crashed = incoming / "999999999-0a1b2c3d.part"  # no such process
    earlier_self = incoming / f"{os.getpid()}-0a1b2c3d.part"  # this process's id, reused
    running = incoming / "1-0a1b2c3d.part"  # a process that is running
    for path in (crashed, earlier_self, running):
        path.write_bytes(b"half a message")
    await make_gateway(incoming_dir=incoming)
    assert _files(incoming) == [running]


async def test_a_message_that_cannot_be_written_aside_is_a_temporary_failure(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    gateway = await make_gateway(max_message_size=8 * 2**20, incoming_dir=blocked / "incoming")
    reply = await _send_data(gateway.port, _sized("big", 2_000_000) + b".\r\n")
    assert reply.startswith(b"451 4.3.0"), reply  # the sender keeps it and retries
    assert await gateway.messages() == []
    errors, _ = await gateway.send(message())  # small mail needs no file
    assert errors == {}
