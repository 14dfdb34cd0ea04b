"""The delivery worker: claims due queue rows, delivers them, records the outcomes.

A worker keeps up to ``concurrency`` messages in flight. It claims as many due rows
as it has free slots, renews the leases of those in flight, and writes outcomes in
group commits. Several workers, in one process or on several nodes, share one
queue safely (see db/queue_repo.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mailmoat import metrics
from mailmoat.db import queue_repo
from mailmoat.db.database import Database
from mailmoat.db.group_commit import GroupCommit
from mailmoat.db.message_rows import NewMessage
from mailmoat.db.queue_repo import Job, Key
from mailmoat.db.spool import Spool
from mailmoat.delivery.attempt import Attempt
from mailmoat.delivery.spool_sweeper import SpoolSweeper
from mailmoat.domain.downstream import DownstreamAddress
from mailmoat.log_throttle import LogThrottle

log = logging.getLogger(__name__)

HANDOFF_BACKLOG = 10  # mail taken from intake, at most, per slot of concurrency
HANDOFF_BYTES = 64 * 1024 * 1024  # message contents kept in memory for them, at most
ROUTES_TTL = 5.0  # seconds a domain's downstream addresses are trusted


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
        commits: GroupCommit,
        spool: Spool,
        attempt: Attempt,
        options: WorkerOptions,
        *,
        name: str | None = None,
        sweeper: SpoolSweeper | None = None,
    ) -> None:
        self.db = db
        self.commits = commits
        self.spool = spool
        self.attempt = attempt
        self.options = options
        self.name = name or worker_name()
        self.sweeper = sweeper
        self._inflight: dict[Key, asyncio.Task[None]] = {}
        self._handed: deque[Job] = deque()  # taken from intake, not started yet
        self._handed_bytes = 0  # of the message contents they carry
        self._next_poll = 0.0  # when to look at the queue in the database next
        self._giving_back: set[asyncio.Task[None]] = set()
        self._routes: dict[str, tuple[float, list[DownstreamAddress]]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        # A read-only database or a full disk fails every round the same way.
        self._failures = LogThrottle(log)

    # -- taking new mail straight from intake (services.intake.LocalDelivery) --------

    @property
    def owner(self) -> str:
        return self.name

    @property
    def lease(self) -> timedelta:
        return self.options.lease

    def accepting(self) -> bool:
        """Whether new mail may be handed over (its rows are then leased to us)."""
        backlog = len(self._handed) + len(self._inflight)
        return not self._stopping and backlog < HANDOFF_BACKLOG * self.options.concurrency

    def take(self, messages: Sequence[NewMessage]) -> None:
        """Queue rows for ``messages`` were committed, leased to this worker."""
        if self._stopping:
            # Accepted just as the worker stopped: give the rows back to the queue.
            keys = [(m.id, m.route) for m in messages]
            task = asyncio.create_task(self._give_back(keys))
            self._giving_back.add(task)
            task.add_done_callback(self._giving_back.discard)
            return
        for m in messages:
            # Small contents travel in memory (no spool read), within a budget.
            data = m.data
            if data is not None and self._handed_bytes + len(data) > HANDOFF_BYTES:
                data = None
            self._handed_bytes += len(data or b"")
            self._handed.append(
                Job(
                    message_id=m.id,
                    route=m.route,
                    attempts=0,
                    queued_at=m.received_at,
                    customer_id=m.customer_id,
                    domain_id=m.domain_id,
                    domain_name=m.domain_name,
                    mail_from=m.mail_from,
                    received_at=m.received_at,
                    spool_key=m.id,
                    recipients=tuple(address for address, _ in m.recipients),
                    related_id=m.related_id,
                    failed_before=0,
                    data=data,
                    address_id=m.address_id,
                )
            )
        if messages:
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

        Mail handed over but not started is given back to the queue at once. A
        cancelled attempt keeps its lease: its message is tried again when the lease
        runs out, by this node after a restart or by another one.
        """
        self._stopping = True
        self._wake.set()
        if self._handed:
            keys = [job.key for job in self._handed]
            self._handed.clear()
            self._handed_bytes = 0
            await self._give_back(keys)
        if self._giving_back:
            await asyncio.gather(*self._giving_back, return_exceptions=True)
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=self.options.stop_grace)
        for task in [*self._inflight.values(), *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._inflight.values(), *self._tasks, return_exceptions=True)

    async def _give_back(self, keys: list[Key]) -> None:
        try:
            now = datetime.now(UTC)
            await self.commits.run(lambda c: queue_repo.release(c, self.name, keys, now))
        except Exception as exc:
            self._failures.failed(
                "give back", exc, "could not give %d messages back to the queue", len(keys)
            )

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()  # before looking: a wake-up during the look is kept
            free = self.options.concurrency - len(self._inflight)
            if free > 0:
                try:
                    free -= await self._poll_queue(free)
                    free -= await self._start_handed(free)
                except Exception as exc:
                    # Not at once: after a poll interval, as when the queue is idle.
                    self._next_poll = time.monotonic() + self.options.poll_interval
                    self._failures.failed(
                        "claim", exc, "claiming queued mail failed; trying again shortly"
                    )
                else:
                    self._failures.recovered("claim", "claiming queued mail works again")
            timeout = max(self._next_poll - time.monotonic(), 0.01)
            if free <= 0:
                timeout = self.options.poll_interval  # a finished attempt wakes us
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _poll_queue(self, free: int) -> int:
        """Every poll interval (at once while it has more than we took), claim from the
        queue in the database: retries, released and redelivered mail, mail of
        processes without a worker. Half the free slots at most while mail handed
        over by intake waits too, so that neither starves the other."""
        if time.monotonic() < self._next_poll:
            return 0
        wanted = max(1, free // 2) if self._handed else free
        claimed = await self._claim(wanted)
        more = claimed == wanted  # the queue may hold more: look again soon
        pause = 0.0 if more else self.options.poll_interval
        self._next_poll = time.monotonic() + pause
        return claimed

    async def _start_handed(self, limit: int) -> int:
        count = min(limit, len(self._handed))
        if count <= 0:
            return 0
        # Routes first: the jobs leave the deque only once nothing can fail any more.
        waiting = list(itertools.islice(self._handed, count))
        routes = await self._downstreams({j.domain_id for j in waiting if j.domain_id is not None})
        if self._stopping:
            return 0  # stop() gives them back
        for _ in range(count):
            job = self._handed.popleft()
            self._handed_bytes -= len(job.data or b"")
            self._start(job, routes.get(job.domain_id or "", []))
        return count

    async def _downstreams(self, domain_ids: set[str]) -> dict[str, list[DownstreamAddress]]:
        """Domains' downstream addresses, read at most every few seconds per domain."""
        now = time.monotonic()
        stale = {d for d in domain_ids if now - self._routes.get(d, (-1e9, []))[0] > ROUTES_TTL}
        if stale:
            found = await queue_repo.downstreams_of(self.db, stale)
            if len(self._routes) > 10_000:
                self._routes.clear()
            for domain_id in stale:
                self._routes[domain_id] = (now, found.get(domain_id, []))
        return {d: self._routes[d][1] for d in domain_ids}

    async def _claim(self, limit: int) -> int:
        now = datetime.now(UTC)
        if not await queue_repo.any_due(self.db, now):
            return 0
        busy = [*self._inflight, *(job.key for job in self._handed)]
        claimed = await self.commits.run(
            lambda c: queue_repo.claim(c, self.name, limit, self.options.lease, now, busy=busy)
        )
        for job in claimed.jobs:
            self._start(job, claimed.downstreams.get(job.domain_id or "", []))
        return len(claimed.jobs)

    def _start(self, job: Job, downstreams: Sequence[DownstreamAddress]) -> None:
        task = asyncio.create_task(self._deliver(job, downstreams))
        self._inflight[job.key] = task
        task.add_done_callback(self._forget(job.key))

    def _forget(self, key: Key) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            if self._inflight.get(key) is task:
                del self._inflight[key]
            self._wake.set()  # a slot is free

        return done

    async def _deliver(self, job: Job, downstreams: Sequence[DownstreamAddress]) -> None:
        outcome = await self.attempt.run(job, downstreams)
        try:
            now = datetime.now(UTC)
            done = await self.commits.run_merged(
                queue_repo.complete_merged, (self.name, outcome, now)
            )
        except Exception as exc:
            # The lease runs out and the message is tried again: nothing is lost.
            self._failures.failed(
                "record", exc, "recording the delivery of message %s failed", job.message_id
            )
            return
        self._failures.recovered("record", "recording deliveries works again")
        if not done:
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
            except Exception as exc:
                self._failures.failed("sweep", exc, "sweeping the spool failed")
            await asyncio.sleep(self.options.sweep_interval)

    async def _renew_loop(self) -> None:
        period = max(self.options.lease.total_seconds() / 3, 0.2)
        while not self._stopping:
            await asyncio.sleep(period)
            keys = [*self._inflight, *(job.key for job in self._handed)]
            if not keys:
                continue
            try:
                until = datetime.now(UTC) + self.options.lease
                await self.commits.run(
                    functools.partial(queue_repo.renew, owner=self.name, keys=keys, until=until)
                )
            except Exception as exc:
                self._failures.failed("renew", exc, "renewing delivery leases failed")
            else:
                self._failures.recovered("renew", "renewing delivery leases works again")
