"""The delivery worker: claims due queue rows, delivers them, records the outcomes.

A worker keeps up to ``concurrency`` messages in flight. It claims as many due rows
as it has free slots, renews the leases of those in flight, and writes outcomes in
group commits. Several workers, in one process or on several nodes, share one
queue safely (see db/queue_repo.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mailmoat import metrics
from mailmoat.db import queue_repo
from mailmoat.db.batch_writer import BatchWriter
from mailmoat.db.database import Database
from mailmoat.db.queue_repo import Job, Key, Outcome
from mailmoat.db.spool import Spool
from mailmoat.delivery.attempt import Attempt
from mailmoat.delivery.spool_sweeper import SpoolSweeper
from mailmoat.domain.downstream import DownstreamAddress

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    concurrency: int = 100
    lease: timedelta = timedelta(minutes=5)
    poll_interval: float = 1.0
    stop_grace: float = 10.0
    sweep_interval: float = 600.0  # seconds between looks for orphaned spool files


def worker_name() -> str:
    """Who holds a lease: host, process and a random part (unique per start)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


class DeliveryWorker:
    def __init__(
        self,
        db: Database,
        spool: Spool,
        attempt: Attempt,
        options: WorkerOptions,
        *,
        name: str | None = None,
        sweeper: SpoolSweeper | None = None,
    ) -> None:
        self.db = db
        self.spool = spool
        self.attempt = attempt
        self.options = options
        self.name = name or worker_name()
        self.sweeper = sweeper
        self._inflight: dict[Key, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._completer: BatchWriter[Outcome] = BatchWriter(self._complete)

    def wake(self) -> None:
        """New mail was queued in this process: look for due rows now."""
        self._wake.set()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="mailmoat-delivery"),
            asyncio.create_task(self._renew_loop(), name="mailmoat-delivery-leases"),
        ]
        if self.sweeper is not None:
            self._tasks.append(asyncio.create_task(self._sweep_loop(), name="mailmoat-sweep"))
        log.info("delivery worker %s started", self.name)

    async def stop(self) -> None:
        """Stop claiming; let attempts in flight finish for a while, then cancel them.

        A cancelled attempt keeps its lease: its message is tried again when the
        lease runs out, by this node after a restart or by another one.
        """
        self._stopping = True
        self._wake.set()
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=self.options.stop_grace)
        for task in [*self._inflight.values(), *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._inflight.values(), *self._tasks, return_exceptions=True)
        await self._completer.close()

    async def run_once(self) -> int:
        """Claim what is due now and deliver it; for tests and the CLI. Returns the count."""
        started = await self._claim(self.options.concurrency)
        if self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        return started

    async def _claim_loop(self) -> None:
        while not self._stopping:
            free = self.options.concurrency - len(self._inflight)
            got = 0
            if free > 0:
                try:
                    got = await self._claim(free)
                except Exception:
                    log.exception("claiming queued mail failed; trying again shortly")
            if got and got == free:
                await self._wait_for_slot()
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.options.poll_interval)

    async def _wait_for_slot(self) -> None:
        if len(self._inflight) >= self.options.concurrency:
            await asyncio.wait(list(self._inflight.values()), return_when=asyncio.FIRST_COMPLETED)

    async def _claim(self, limit: int) -> int:
        now = datetime.now(UTC)
        claimed = await queue_repo.claim(
            self.db, self.name, limit, self.options.lease, now, busy=list(self._inflight)
        )
        for job in claimed.jobs:
            downstreams = claimed.downstreams.get(job.domain_id or "", [])
            task = asyncio.create_task(self._deliver(job, downstreams))
            self._inflight[job.key] = task
            task.add_done_callback(self._forget(job.key))
        return len(claimed.jobs)

    def _forget(self, key: Key) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            if self._inflight.get(key) is task:
                del self._inflight[key]

        return done

    async def _deliver(self, job: Job, downstreams: Sequence[DownstreamAddress]) -> None:
        outcome = await self.attempt.run(job, downstreams)
        try:
            await self._completer.submit(outcome)
        except Exception:
            # The lease runs out and the message is tried again: nothing is lost.
            log.exception("recording the delivery of message %s failed", job.message_id)

    async def _complete(self, outcomes: Sequence[Outcome]) -> None:
        applied = await queue_repo.complete(self.db, self.name, outcomes, datetime.now(UTC))
        for outcome, done in zip(outcomes, applied, strict=True):
            if done:
                continue
            metrics.DELIVERY_LEASES_LOST.inc()
            log.warning(
                "message %s: the lease ran out during delivery; another worker has it",
                outcome.job.message_id,
            )
            if outcome.dsn is not None:
                await self.spool.delete(outcome.dsn.id)

    async def _sweep_loop(self) -> None:
        assert self.sweeper is not None
        while not self._stopping:
            try:
                await self.sweeper.sweep()
            except Exception:
                log.exception("sweeping the spool failed")
            await asyncio.sleep(self.options.sweep_interval)

    async def _renew_loop(self) -> None:
        period = max(self.options.lease.total_seconds() / 3, 0.2)
        while not self._stopping:
            await asyncio.sleep(period)
            keys = list(self._inflight)
            if not keys:
                continue
            try:
                until = datetime.now(UTC) + self.options.lease
                await queue_repo.renew(self.db, self.name, keys, until)
            except Exception:
                log.exception("renewing delivery leases failed")
