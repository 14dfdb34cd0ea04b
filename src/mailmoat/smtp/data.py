"""Receiving DATA with bounded memory.

A session keeps a message in memory while it is small (most mail: no file, no
extra copy). Past ``SPILL_THRESHOLD`` bytes the content goes to a temporary file
under ``<data dir>/incoming/`` as it arrives, so a session holds at most about
that much of a message while receiving it. Processing a message (filtering,
DKIM, the Received header) needs it whole in memory: a ``ByteBudget`` shared by
every session of the process (smtp/budget.py) admits messages while their
bytes fit, and makes the others wait their turn.

Line endings: every LF ends a line (a bare LF or CR is stored as CRLF), but only
``CRLF.CRLF`` ends DATA, so a bare-LF ``.`` can never end it (SMTP smuggling).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from mailmoat.domain.webhooks import REASON_MAX_SIZE

log = logging.getLogger(__name__)

SPILL_THRESHOLD = 1024 * 1024  # bytes a session keeps in memory before using a file
_FLUSH = 256 * 1024  # bytes gathered between two writes to that file

REASON_LINE_TOO_LONG = "line-too-long"
MESSAGE_TOO_BIG = "552 5.3.4 Message too big for system"
LOCAL_PROBLEM = "451 4.3.0 Temporary local problem, try again later"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why DATA was refused as a whole; ``reason`` is "" for mailmoat's own failure,
    which leaves no record (the sender retries)."""

    reason: str
    reply: str
    size: int = 0  # bytes received before the end of data


def line_too_long(limit: int) -> Refusal:
    return Refusal(REASON_LINE_TOO_LONG, f"500 5.5.2 Line too long (limit {limit} bytes)")


_BARE_NEWLINE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def normalize_newlines(data: bytes) -> bytes:
    """Every bare CR or LF as CRLF, so that no later server can read a bare-LF dot
    in mail mailmoat relays as an end of data."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") == crlf and data.count(b"\r") == crlf:
        return data  # the usual case, found without a regular expression
    return _BARE_NEWLINE.sub(b"\r\n", data)


TOO_BIG = Refusal(REASON_MAX_SIZE, MESSAGE_TOO_BIG)
LOCAL_FAILURE = Refusal("", LOCAL_PROBLEM)


class IncomingFiles:
    """The directory of messages being received that did not fit in memory.

    Files are named after the process that writes them, so that a process
    starting up removes what an earlier (crashed) process left, and only that.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._ready = False

    def create(self) -> SpillFile:
        if not self._ready:
            self.root.mkdir(parents=True, exist_ok=True)
            self._ready = True
        path = self.root / f"{os.getpid()}-{secrets.token_hex(8)}.part"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return SpillFile(path, fd)

    def sweep(self) -> None:
        """Remove the files of processes that no longer run (or of this one's
        predecessor with the same id: this process has no session yet)."""
        if not self.root.is_dir():
            return
        for path in self.root.glob("*.part"):
            pid = path.name.partition("-")[0]
            if not pid.isdigit() or int(pid) == os.getpid() or not _running(int(pid)):
                path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process: leave its files alone
    return True


class SpillFile:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        self.size = 0

    async def write(self, data: bytes) -> None:
        fd = self._fd
        assert fd is not None
        await asyncio.to_thread(_write_all, fd, data)
        self.size += len(data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def read(self) -> bytes:
        return await asyncio.to_thread(self.path.read_bytes)

    def discard(self) -> None:
        """Close and remove the file; safe to call more than once, and while cancelled."""
        self.close()
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Received:
    """A message's content as received (newlines as CRLF, dots unstuffed)."""

    def __init__(self, size: int, memory: bytes | None = None, file: SpillFile | None = None):
        self.size = size
        self._memory = memory
        self._file = file

    @property
    def spilled(self) -> bool:
        return self._file is not None

    async def load(self) -> bytes:
        """The content in memory (read from its file when it was too big to keep)."""
        if self._memory is not None:
            return self._memory
        assert self._file is not None
        return await self._file.read()

    def discard(self) -> None:
        self._memory = None
        if self._file is not None:
            self._file.discard()


async def read_data(
    reader: asyncio.StreamReader,
    files: IncomingFiles,
    *,
    size_limit: int | None,
    max_line: int,
) -> Received | Refusal:
    """Read DATA up to ``CRLF.CRLF``: the content, or why it is refused.

    A refused message is read to its end all the same (RFC 5321 §4.2.5: the reply
    comes after the data), holding nothing of it. ``reader``'s limit must exceed
    ``max_line`` plus a line ending; longer lines arrive in parts.
    """
    lines: list[bytes] = []
    held = 0  # bytes in ``lines``
    total = 0  # bytes received, as sent
    spill: SpillFile | None = None
    refusal: Refusal | None = None
    whole = True  # the last piece read ended a line
    ending = b"\r\n"  # the last two bytes read; DATA starts after a CRLF
    try:
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as exc:
                # A piece of a line longer than any accepted: drop it.
                piece = await reader.read(exc.consumed)
                total += len(piece)
                ending = (ending + piece)[-2:]
                whole = False
                if refusal is None:
                    refusal = line_too_long(max_line)
                    lines.clear()
                    if spill is not None:
                        spill.discard()
                continue
            total += len(line)
            if not whole:  # the end of an over-long line
                ending = (ending + line)[-2:]
                whole = True
                continue
            if ending == b"\r\n" and line == b".\r\n":
                break
            ending = line[-2:]
            if refusal is not None:
                continue
            if size_limit and total > size_limit:
                refusal = TOO_BIG
            elif len(line) - (2 if ending == b"\r\n" else 1) > max_line:
                refusal = line_too_long(max_line)
            if refusal is not None:
                lines.clear()
                if spill is not None:
                    spill.discard()
                continue
            if line[:1] == b".":
                line = line[1:]
            lines.append(line)
            held += len(line)
            if held >= (_FLUSH if spill is not None else SPILL_THRESHOLD):
                try:
                    spill = spill or files.create()
                    await spill.write(normalize_newlines(b"".join(lines)))
                except OSError as exc:
                    log.error("cannot write a message being received to %s: %s", files.root, exc)
                    refusal = LOCAL_FAILURE
                    if spill is not None:
                        spill.discard()
                lines.clear()
                held = 0
        if refusal is not None:
            return dataclasses.replace(refusal, size=total)
        content = normalize_newlines(b"".join(lines))
        lines.clear()
        if spill is None:
            return Received(len(content), memory=content)
        try:
            await spill.write(content)
        except OSError as exc:
            log.error("cannot write a message being received to %s: %s", files.root, exc)
            spill.discard()
            return LOCAL_FAILURE
        spill.close()
        return Received(spill.size, file=spill)
    except BaseException:
        if spill is not None:
            spill.discard()  # the session went away (or failed) mid-DATA
        raise
