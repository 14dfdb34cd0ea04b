"""The processes behind ``bench/smtp.py``: SMTP load generator and SMTP sink.

    python bench/smtp_load.py client --port P --sessions N [...]
        Prints "ready", reads "T_START T_END" (time.monotonic() values, shared by all
        processes on Linux) from stdin, then runs N sessions against 127.0.0.1:P
        until T_END and writes to --result as JSON what happened between the two,
        and, over the whole run, the Message-ID of every message answered 250, the
        time of the first send and that of the last 250.
    python bench/smtp_load.py sink --port P --count-file F [--ids-file G]
        Accepts and discards all mail on 127.0.0.1:P, prints "ready" once
        listening, appends "TIME MESSAGE-ID" for every message received to G and
        keeps "COUNT TIME-OF-LAST" in F (both brought up to date every 0.05 s, G
        first), so bench/smtp.py can wait for delivery and check that every
        acknowledged message arrived. Its SMTP server is a small asyncio protocol
        (PIPELINING, no line-by-line parsing of DATA), several times cheaper per
        message than aiosmtpd, so that it costs the systems measured little CPU;
        ``--impl aiosmtpd`` runs aiosmtpd instead, for comparison.

Each session is one connection reused for --per-connection messages, as an MTA
reuses a connection to the same next hop, then QUIT and a new connection. One
message is aiosmtplib's ``sendmail``: MAIL FROM, RCPT TO, DATA without PIPELINING
(aiosmtplib does not pipeline), so there is no RSET between messages; after a
refused command aiosmtplib sends RSET itself. Latency runs from sending MAIL FROM
to the reply to the end of DATA; connecting, banner and EHLO are not in it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any, cast

HOST = "127.0.0.1"
USERS = 100
DOMAIN = "bench.test"
CLIENT_NAME = "client.bench.localdomain"  # EHLO name; avoids socket.getfqdn()
SENDER = "alice@sender.bench.example"
BODY_TEXT = (
    "Hello team,\r\n\r\n"
    "Please find below the notes from Tuesday's planning meeting. We agreed to move "
    "the release of the reporting module to the second week of next month, so that "
    "the migration of the customer database can be finished first. Maria will update "
    "the schedule and share it with everyone by Friday.\r\n\r\n"
    "Open points:\r\n"
    "- the new invoice template still needs a review by the finance department;\r\n"
    "- the test environment will be unavailable on Thursday morning for maintenance;\r\n"
    "- we still have to decide who covers support during the holidays.\r\n\r\n"
    "If I missed anything, reply to this message and I will add it to the minutes. "
    "The next meeting is on Monday at ten in the small conference room on the third "
    "floor; the video link stays the same as last time.\r\n\r\n"
)
SIGNATURE = "\r\nBest regards,\r\nAlice\r\n"


def wrap(text: str, width: int = 76) -> str:
    """Text with CRLF lines of at most width characters, words kept whole."""
    lines: list[str] = []
    for paragraph in text.split("\r\n"):
        line = ""
        for word in paragraph.split(" "):
            if line and len(line) + 1 + len(word) > width:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
    return "\r\n".join(lines)


def recipient_address(n: int, domain: str = DOMAIN) -> str:
    return f"user{n % USERS:03d}@{domain}"


RECIPIENTS = [recipient_address(n) for n in range(USERS)]


class Messages:
    """Plain-text messages of exactly ``size`` bytes, each with its own Message-ID,
    Subject and recipient. Numbers have a fixed width, so sizes never change."""

    def __init__(self, tag: str, size: int, domain: str) -> None:
        self.tag = tag
        self.domain = domain
        self.counter = 0
        probe = self.headers(0, formatdate(0))  # always 31 characters
        body = wrap(BODY_TEXT * (size // len(BODY_TEXT) + 2))
        room = size - len(probe) - len(SIGNATURE)
        if room < 0:
            raise ValueError(f"--size {size} is smaller than the headers")
        body = body[:room]
        if body.endswith("\r"):  # never split a CRLF
            body = body[:-1] + " "
        self.body = (body + SIGNATURE).encode()

    def headers(self, n: int, date: str) -> str:
        return (
            f"From: Alice Example <{SENDER}>\r\n"
            f"To: <{self.recipient(n)}>\r\n"
            f"Subject: Planning notes, week {n % 52 + 1:02d} (ref {n:09d})\r\n"
            f"Date: {date}\r\n"
            f"Message-ID: <{self.message_id(n)}>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "Content-Transfer-Encoding: 7bit\r\n"
            "\r\n"
        )

    def recipient(self, n: int) -> str:
        return recipient_address(n, self.domain)

    def message_id(self, n: int) -> str:
        return f"{self.tag}.{n:09d}@sender.bench.example"  # as in headers()

    def next(self) -> tuple[str, bytes, str]:
        """Recipient, message and Message-ID (without <>) of the next message."""
        self.counter += 1
        n = self.counter
        message = self.headers(n, formatdate()).encode() + self.body
        return self.recipient(n), message, self.message_id(n)


# -- client ---------------------------------------------------------------------


@dataclass
class Tally:
    t_start: float
    t_end: float
    accepted: int = 0
    replies: dict[str, int] = field(default_factory=dict)  # other final replies, by code
    errors: dict[str, int] = field(default_factory=dict)  # transport errors, by type
    latencies: list[float] = field(default_factory=list)
    connections: int = 0
    # Over the whole run, warm-up and the replies after T_END included:
    acknowledged: list[str] = field(default_factory=list)  # Message-IDs answered 250
    first_send: float | None = None  # when the first session started to connect
    last_ack: float | None = None  # when the last 250 arrived

    def counts(self, now: float) -> bool:
        return self.t_start <= now <= self.t_end

    def reply(self, code: int, started: float, now: float, message_id: str) -> None:
        if code == 250:
            self.acknowledged.append(message_id)
            self.last_ack = now
        if not self.counts(now):
            return
        if code == 250:
            self.accepted += 1
            self.latencies.append(now - started)
        else:
            self.replies[str(code)] = self.replies.get(str(code), 0) + 1

    def error(self, exc: BaseException, now: float) -> None:
        if self.counts(now):
            name = type(exc).__name__
            self.errors[name] = self.errors.get(name, 0) + 1


async def session(
    index: int, args: argparse.Namespace, tally: Tally, tag: str, semaphore: asyncio.Semaphore
) -> None:
    import aiosmtplib

    messages = Messages(f"{tag}s{index:03d}", args.size, args.domain)
    while time.monotonic() < tally.t_end:
        smtp = aiosmtplib.SMTP(
            hostname=HOST,
            port=args.port,
            local_hostname=CLIENT_NAME,
            start_tls=False,
            timeout=args.timeout,
        )
        try:
            async with semaphore:  # connects a few at a time, not all at once
                await smtp.connect()
            tally.connections += 1
            for _ in range(args.per_connection):
                if time.monotonic() >= tally.t_end:
                    break
                recipient, message, message_id = messages.next()
                started = time.monotonic()
                try:
                    await smtp.sendmail(SENDER, [recipient], message)
                    code = 250
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    code = exc.recipients[0].code if exc.recipients else 0
                except aiosmtplib.SMTPResponseException as exc:
                    code = exc.code
                tally.reply(code, started, time.monotonic(), message_id)
                if code in (421, 0):
                    break
            await smtp.quit()
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            tally.error(exc, time.monotonic())
            await asyncio.sleep(0.05)
        finally:
            smtp.close()


async def run_client(args: argparse.Namespace, t_start: float, t_end: float) -> Tally:
    tally = Tally(t_start, t_end)
    semaphore = asyncio.Semaphore(5)
    tally.first_send = time.monotonic()
    await asyncio.gather(
        *(session(i, args, tally, args.tag, semaphore) for i in range(args.sessions))
    )
    return tally


def client_main(args: argparse.Namespace) -> int:
    import aiosmtplib  # noqa: F401  (imported before "ready": not in the warm-up)

    print("ready", flush=True)
    line = sys.stdin.readline().split()
    if len(line) != 2:
        return 2
    t_start, t_end = float(line[0]), float(line[1])
    cpu = time.process_time()
    tally = asyncio_run(run_client(args, t_start, t_end))
    cpu = time.process_time() - cpu
    result: dict[str, Any] = {
        "accepted": tally.accepted,
        "replies": tally.replies,
        "errors": tally.errors,
        "latencies": tally.latencies,
        "connections": tally.connections,
        "acknowledged": tally.acknowledged,
        "first_send": tally.first_send,
        "last_ack": tally.last_ack,
        "cpu_seconds": cpu,  # from the start line to the end of the run
    }
    Path(args.result).write_text(json.dumps(result))
    return 0


# -- sink -----------------------------------------------------------------------

SINK_NAME = b"sink.bench.localdomain"
MESSAGE_ID = re.compile(rb"^message-id:[ \t]*<([^>\r\n]*)>", re.IGNORECASE | re.MULTILINE)


def message_id_of(message: bytes) -> str:
    """The Message-ID (without <>) in the header of a message, or "-"."""
    end = message.find(b"\r\n\r\n")
    found = MESSAGE_ID.search(message, 0, end if end >= 0 else len(message))
    return found.group(1).decode("ascii", "replace") if found else "-"


class Recorder:
    """Counts the messages received and logs the Message-ID and arrival of each."""

    def __init__(self, count_file: Path, ids_file: Path | None) -> None:
        self.count_file = count_file
        self.ids = ids_file.open("a", encoding="ascii") if ids_file is not None else None
        self.received = 0
        self.last = 0.0  # time.monotonic() of the last message
        self.written = -1
        self.pending: list[str] = []

    def record(self, message: bytes) -> None:
        self.received += 1
        self.last = time.monotonic()
        if self.ids is not None:
            self.pending.append(f"{self.last:.6f} {message_id_of(message)}\n")

    def flush(self) -> None:
        if self.pending and self.ids is not None:
            self.ids.write("".join(self.pending))
            self.ids.flush()  # before the count: a count of N means N lines in the log
            self.pending.clear()
        if self.received != self.written:
            self.written = self.received
            tmp = self.count_file.with_suffix(".tmp")
            tmp.write_text(f"{self.written} {self.last:.6f}\n")
            tmp.replace(self.count_file)

    async def keep_count(self) -> None:
        while True:
            self.flush()
            await asyncio.sleep(0.05)


class FastSink(asyncio.Protocol):
    """A minimal SMTP server that takes every message and keeps none.

    EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP and QUIT, with PIPELINING: the replies
    to everything in one read go out in one write. DATA ends at CRLF.CRLF; the
    content is neither unstuffed nor kept, only its Message-ID is read.
    """

    EHLO = b"250-%s\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n" % SINK_NAME

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.buffer = bytearray()
        self.in_data = False
        self.scanned = 0  # in DATA: the end marker does not start before this offset
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.write(b"220 " + SINK_NAME + b" ESMTP bench sink\r\n")

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        replies: list[bytes] = []
        closing = False
        while True:
            if self.in_data:
                if buffer.startswith(b".\r\n"):  # an empty message
                    end, rest = 0, 3
                else:
                    found = buffer.find(b"\r\n.\r\n", self.scanned)
                    if found < 0:
                        self.scanned = max(0, len(buffer) - 4)
                        break
                    end, rest = found + 2, found + 5
                self.recorder.record(bytes(buffer[:end]))
                del buffer[:rest]
                self.in_data, self.scanned = False, 0
                replies.append(b"250 2.0.0 Ok: discarded\r\n")
                continue
            found = buffer.find(b"\n")
            if found < 0:
                if len(buffer) > 4096:
                    replies.append(b"500 5.5.6 line too long\r\n")
                    closing = True
                break
            verb = bytes(buffer[:4]).upper()
            del buffer[: found + 1]
            if verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                replies.append(b"250 2.0.0 Ok\r\n")
            elif verb == b"DATA":
                self.in_data = True
                replies.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            elif verb == b"EHLO":
                replies.append(self.EHLO)
            elif verb == b"HELO":
                replies.append(b"250 " + SINK_NAME + b"\r\n")
            elif verb == b"QUIT":
                replies.append(b"221 2.0.0 Bye\r\n")
                closing = True
                break
            else:
                replies.append(b"502 5.5.2 Command not implemented\r\n")
        assert self.transport is not None
        if replies:
            self.transport.write(b"".join(replies))
        if closing:
            self.transport.close()


class AiosmtpdSinkHandler:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.recorder.record(envelope.original_content or envelope.content)
        return "250 2.0.0 Ok: discarded"


async def run_sink(port: int, count_file: Path, ids_file: Path | None, impl: str) -> None:
    recorder = Recorder(count_file, ids_file)
    loop = asyncio.get_running_loop()
    if impl == "aiosmtpd":
        from aiosmtpd.smtp import SMTP

        handler = AiosmtpdSinkHandler(recorder)
        server = await loop.create_server(
            lambda: SMTP(handler, hostname=SINK_NAME.decode(), data_size_limit=None),
            host=HOST,
            port=port,
            backlog=256,
        )
    else:
        server = await loop.create_server(
            lambda: FastSink(recorder), host=HOST, port=port, backlog=256
        )
    print("ready", flush=True)
    async with server:
        try:
            await recorder.keep_count()
        finally:
            recorder.flush()


def sink_main(args: argparse.Namespace) -> int:
    ids_file = Path(args.ids_file) if args.ids_file else None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio_run(run_sink(args.port, Path(args.count_file), ids_file, args.impl))
    return 0


# -- main -----------------------------------------------------------------------


def asyncio_run(coro: Any) -> Any:
    """Run on uvloop when it is installed: a cheaper loop, more CPU for the server."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    client = sub.add_parser("client", help="send mail to 127.0.0.1:PORT")
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--sessions", type=int, default=20)
    client.add_argument("--size", type=int, default=2048, help="bytes per message")
    client.add_argument("--per-connection", type=int, default=100)
    client.add_argument("--domain", default="bench.test")
    client.add_argument("--tag", default="c0", help="part of every Message-ID")
    client.add_argument("--timeout", type=float, default=30.0)
    client.add_argument("--result", required=True, help="file for the JSON result")
    sink = sub.add_parser("sink", help="accept and discard mail on 127.0.0.1:PORT")
    sink.add_argument("--port", type=int, required=True)
    sink.add_argument("--count-file", required=True)
    sink.add_argument("--ids-file", help="log of the Message-ID of every message received")
    sink.add_argument(
        "--impl", choices=("fast", "aiosmtpd"), default="fast", help="the SMTP server used"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return client_main(args) if args.mode == "client" else sink_main(args)


if __name__ == "__main__":
    sys.exit(main())
