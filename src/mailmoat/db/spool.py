"""The spool: message bytes on disk, written durably before mailmoat says 250.

A message is written under its final name and fsynced, and the directory holding
it is fsynced before the message's record is committed: after a crash a committed
record always finds its complete bytes. A crash before the commit can leave a
file, perhaps partial, that no record refers to; nothing reads it, and the spool
sweeper removes it. (Writing to a temporary name and renaming would cost a rename
per message, one of the dearest steps of accepting mail, and protect nothing: no
reader looks at a file before its record exists.)

Keys are message ids, which start with the time of arrival: files are grouped in
one directory per ~70 minutes (the first 6 hex digits), so the messages of one
group commit usually share a directory and one directory fsync.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterable
from pathlib import Path

_KEY = re.compile(r"^[0-9a-f]{8,64}$")


class SpoolError(OSError):
    """The spool could not store or read a message."""


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._ready_dirs: set[Path] = set()

    def path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"invalid spool key {key!r}")
        return self.root / key[:6] / f"{key}.eml"

    async def write_file(self, key: str, data: bytes) -> Path:
        """Store the file's bytes durably; its directory entry needs ``sync_dirs``."""
        return await asyncio.to_thread(self._write_file, key, data)

    def write_now(self, key: str, data: bytes) -> Path:
        """``write_file`` in the calling thread (one of the group commit's file writers)."""
        return self._write_file(key, data)

    def _write_file(self, key: str, data: bytes) -> Path:
        final = self.path(key)
        self._ensure_dir(final.parent)
        try:
            fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SpoolError(f"cannot store message {key}: {exc}") from exc
        return final.parent

    async def sync_dirs(self, directories: Iterable[Path]) -> None:
        unique = set(directories)
        if unique:
            await asyncio.to_thread(fsync_directories, unique)

    async def read(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self.path(key).read_bytes)
        except OSError as exc:
            raise SpoolError(f"cannot read message {key}: {exc}") from exc

    async def delete(self, key: str) -> None:
        def remove() -> None:
            self.path(key).unlink(missing_ok=True)

        await asyncio.to_thread(remove)

    def _ensure_dir(self, directory: Path) -> None:
        if directory in self._ready_dirs:
            return
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            fsync_directories([directory.parent])
        self._ready_dirs.add(directory)


def fsync_directories(directories: Iterable[Path]) -> None:
    """Make the new directory entries (renamed files) in ``directories`` durable."""
    for directory in directories:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# Keys start with 14 hex digits of microseconds; a directory holds the keys that share
# the first 6, so it covers 2**32 microseconds (about 72 minutes) of arrivals.
_DIRECTORY_SPAN_US = 1 << 32


def directory_end(name: str) -> float | None:
    """When the arrivals a spool directory holds end (a UNIX time), or None for a
    directory that is not one of the spool's."""
    if len(name) != 6:
        return None
    try:
        start = int(name, 16) << 32
    except ValueError:
        return None
    return (start + _DIRECTORY_SPAN_US) / 1e6


def files_in(directory: Path) -> list[Path]:
    """The message files of one spool directory, and temporary files left by earlier
    versions of mailmoat, which wrote each message under a temporary name first."""
    return sorted(p for p in directory.iterdir() if p.suffix in (".eml", ".tmp"))
