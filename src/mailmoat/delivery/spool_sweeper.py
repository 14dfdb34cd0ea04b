"""Removing spool files that no message record refers to.

A crash between writing a message's bytes and committing its record leaves a file
nobody will ever read (the sender was not told 250, so it sends the message again).
Files are only written into the directory of the current ~72 minutes, so a
directory that ended more than ``grace`` ago can get no new file: each such
directory is looked at once per process, and its unknown files are deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from pathlib import Path

from mailmoat.db import queue_repo
from mailmoat.db.database import Database
from mailmoat.db.spool import Spool, directory_end, files_in

log = logging.getLogger(__name__)


class SpoolSweeper:
    def __init__(
        self, db: Database, spool: Spool, *, grace: timedelta = timedelta(hours=1)
    ) -> None:
        self.db = db
        self.spool = spool
        self.grace = grace
        self._swept: set[str] = set()

    async def sweep(self) -> int:
        """Look at every directory old enough and not yet swept; returns files removed."""
        removed = 0
        for directory in await asyncio.to_thread(self._due_directories):
            removed += await self._sweep_directory(directory)
            self._swept.add(directory.name)
        if removed:
            log.warning("removed %d spool file(s) that no message record refers to", removed)
        return removed

    def _due_directories(self) -> list[Path]:
        if not self.spool.root.is_dir():
            return []
        cutoff = time.time() - self.grace.total_seconds()
        due = []
        for entry in self.spool.root.iterdir():
            end = directory_end(entry.name)
            if end is not None and end < cutoff and entry.name not in self._swept:
                due.append(entry)
        return sorted(due)

    async def _sweep_directory(self, directory: Path) -> int:
        files = await asyncio.to_thread(files_in, directory)
        keys = [f.stem for f in files if f.suffix == ".eml"]
        async with self.db.read() as session:
            kept = await queue_repo.kept_keys(session, keys)
        orphans = [f for f in files if f.suffix == ".tmp" or f.stem not in kept]
        for orphan in orphans:
            await asyncio.to_thread(orphan.unlink, True)
        return len(orphans)
