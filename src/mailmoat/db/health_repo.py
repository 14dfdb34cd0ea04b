"""Probes of whether this node can still store mail: a database write, a spool file."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.dialects import postgresql, sqlite

from mailmoat.db.database import Database
from mailmoat.db.tables import ServerSecret

PROBE_ROW = "health-probe"  # in server_secrets; holds the time of the last probe, no secret


async def probe_database_write(db: Database) -> None:
    """Commit a real change, as storing a message would; raises when that fails.

    A transaction that is rolled back, or an update that changes nothing, can
    succeed on a database whose writes fail at commit (a read-only file already
    open, a full disk): only a committed change tells.
    """
    insert = sqlite.insert if db.is_sqlite else postgresql.insert
    now = datetime.now(UTC).isoformat()
    statement = (
        insert(ServerSecret)
        .values(name=PROBE_ROW, value=now)
        .on_conflict_do_update(index_elements=[ServerSecret.name], set_={"value": now})
    )
    async with db.write() as session:
        await session.execute(statement)


class StorageProblem(Exception):
    """Files cannot be stored: ``reason`` is short and names no path; the text says more."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def probe_directory(directory: Path, min_free: int) -> None:
    """Raise StorageProblem unless files can be stored in ``directory`` (created if
    missing): a file is created, written, fsynced and removed, as the spool does
    with a message, and at least ``min_free`` bytes must be free."""
    probe = directory / f".health-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"mailmoat")
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
        stats = os.statvfs(directory)
    except OSError as exc:
        reason = "disk full" if exc.errno == errno.ENOSPC else "not writable"
        raise StorageProblem(reason, f"cannot store files in {directory}: {exc}") from None
    free = stats.f_bavail * stats.f_frsize
    if free < min_free:
        raise StorageProblem(
            "disk almost full",
            f"{directory} has {free // 2**20} MiB free, less than {min_free // 2**20} MiB",
        )
