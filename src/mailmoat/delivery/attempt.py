"""One delivery attempt of one claimed message: try destinations, classify replies."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32

from mailmoat import metrics
from mailmoat.db.message_rows import ROUTE_DSN, NewMessage, new_message_id
from mailmoat.db.queue_repo import AttemptRecord, Job, Outcome
from mailmoat.db.spool import Spool, SpoolError
from mailmoat.delivery.destinations import Candidate, Destinations, Unresolvable
from mailmoat.delivery.dsn import FailedRecipient, build_dsn
from mailmoat.delivery.relay import DestinationUnusable, Envelope, Relay, Reply
from mailmoat.domain.downstream import DownstreamAddress
from mailmoat.domain.retry import RetrySchedule
from mailmoat.domain.states import MessageState, RecipientStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DsnOptions:
    """Whether and how mailmoat tells senders about mail it could not deliver."""

    enabled: bool = True
    reporting_mta: str = "localhost"
    include_body: bool = False


@dataclass(slots=True)
class _Tried:
    """What the destinations said during one attempt."""

    replies: dict[str, Reply]
    records: list[AttemptRecord]
    last_failure: str
    remote: str | None


def parse_reply(text: str) -> Reply:
    code, _, rest = text.partition(" ")
    return Reply(int(code) if code.isdigit() else 451, rest)


class Attempt:
    """Delivers claimed jobs through the relay and turns the replies into outcomes."""

    def __init__(
        self,
        spool: Spool,
        relay: Relay,
        destinations: Destinations,
        schedule: RetrySchedule,
        dsn: DsnOptions,
    ) -> None:
        self.spool = spool
        self.relay = relay
        self.destinations = destinations
        self.schedule = schedule
        self.dsn = dsn

    async def run(self, job: Job, downstreams: Sequence[DownstreamAddress]) -> Outcome:
        started = time.monotonic()
        try:
            tried = await self._try(job, downstreams)
        finally:
            metrics.DELIVERY_SECONDS.labels(job.route).observe(time.monotonic() - started)
        return await self._outcome(job, tried, datetime.now(UTC))

    async def _try(self, job: Job, downstreams: Sequence[DownstreamAddress]) -> _Tried:
        pending = list(job.recipients)
        tried = _Tried({}, [], "", None)
        if not pending:
            return tried
        try:
            data = await self._content(job)
            candidates = await self._candidates(job, downstreams)
        except Unresolvable as exc:
            return self._everyone(job, tried, parse_reply(exc.reply), "", exc.permanent)
        for candidate in candidates:
            try:
                servers = await self.destinations.resolve(candidate)
            except Unresolvable as exc:
                self._unreachable(job, tried, str(candidate), exc.reply)
                continue
            for server in servers:
                try:
                    tried.replies = await self.relay.send(
                        server, Envelope(job.mail_from, pending, data)
                    )
                except DestinationUnusable as exc:
                    self._unreachable(job, tried, str(server), str(exc.reply))
                    continue
                tried.remote = server.name.rstrip(".")
                self._record(job, tried, str(server))
                return tried
        reply = tried.last_failure or "451 4.4.1 no downstream server could be reached"
        return self._everyone(job, tried, parse_reply(reply), "", permanent=False)

    async def _content(self, job: Job) -> bytes:
        if job.spool_key is None:
            raise Unresolvable("451 4.3.0 the message content is not kept")
        try:
            return await self.spool.read(job.spool_key)
        except SpoolError as exc:
            log.error("message %s: %s (is the spool shared by every node?)", job.message_id, exc)
            raise Unresolvable("451 4.3.0 the message content is missing from the spool") from exc

    async def _candidates(
        self, job: Job, downstreams: Sequence[DownstreamAddress]
    ) -> list[Candidate]:
        if job.route == ROUTE_DSN:
            return await self.destinations.for_dsn(job.recipients[0])
        if not downstreams:
            raise Unresolvable(
                f"451 4.4.0 no downstream address is configured for {job.domain_name}"
            )
        return self.destinations.downstream(downstreams)

    @staticmethod
    def _everyone(job: Job, tried: _Tried, reply: Reply, target: str, permanent: bool) -> _Tried:
        if permanent and not reply.permanent:
            reply = Reply(554, reply.text)
        tried.replies = dict.fromkeys(job.recipients, reply)
        if target or not tried.records:
            tried.records.append(
                AttemptRecord(
                    datetime.now(UTC),
                    target or "-",
                    "failed" if reply.permanent else "deferred",
                    str(reply),
                    list(job.recipients),
                )
            )
            metrics.DELIVERY_ATTEMPTS.labels(job.route, tried.records[-1].outcome).inc()
        return tried

    @staticmethod
    def _unreachable(job: Job, tried: _Tried, target: str, reply: str) -> None:
        tried.last_failure = reply
        tried.records.append(
            AttemptRecord(datetime.now(UTC), target, "unreachable", reply, list(job.recipients))
        )
        metrics.DELIVERY_ATTEMPTS.labels(job.route, "unreachable").inc()

    @staticmethod
    def _record(job: Job, tried: _Tried, target: str) -> None:
        groups: dict[Reply, list[str]] = defaultdict(list)
        for address, reply in tried.replies.items():
            groups[reply].append(address)
        now = datetime.now(UTC)
        for reply, addresses in groups.items():
            outcome = "delivered" if reply.ok else "failed" if reply.permanent else "deferred"
            tried.records.append(AttemptRecord(now, target, outcome, str(reply), addresses))
            metrics.DELIVERY_ATTEMPTS.labels(job.route, outcome).inc()

    async def _outcome(self, job: Job, tried: _Tried, now: datetime) -> Outcome:
        final: dict[str, tuple[str, str]] = {}
        pending: dict[str, Reply] = {}
        refused: dict[str, Reply] = {}
        for address in job.recipients:
            reply = tried.replies.get(address) or Reply(451, "4.4.1 no reply")
            if reply.ok:
                final[address] = (RecipientStatus.DELIVERED, str(reply))
            elif reply.permanent:
                final[address] = (RecipientStatus.FAILED, str(reply))
                refused[address] = reply
            else:
                pending[address] = reply
        retry_at = None
        expired: dict[str, Reply] = {}
        if pending:
            retry_at = self.schedule.next_attempt(job.attempts + 1, job.queued_at, now)
            if retry_at is None:
                expired = pending
                final.update((a, (RecipientStatus.FAILED, str(r))) for a, r in expired.items())
        for status, _ in final.values():
            result = "delivered" if status == RecipientStatus.DELIVERED else "failed"
            metrics.DELIVERY_RESULTS.labels(job.route, result).inc()
        if retry_at is not None:
            state = MessageState.DEFERRED
        elif refused or expired or job.failed_before:
            state = MessageState.FAILED
        else:
            state = MessageState.DELIVERED
        last = next(iter(pending.values()), None) or next(iter(refused.values()), None)
        outcome = Outcome(
            job=job,
            attempts=tried.records,
            final=final,
            retry_at=retry_at,
            last_reply=str(last) if last else "",
            message_state=state,
        )
        failed = {**refused, **expired}
        if failed and self._wants_dsn(job):
            outcome.dsn = await self._notification(job, failed, tried, bool(expired), now)
        return outcome

    def _wants_dsn(self, job: Job) -> bool:
        return self.dsn.enabled and job.route != ROUTE_DSN and job.mail_from != ""

    async def _notification(
        self, job: Job, failed: dict[str, Reply], tried: _Tried, expired: bool, now: datetime
    ) -> NewMessage | None:
        """The DSN for ``failed`` recipients, already in the spool, or None."""
        try:
            original = await self.spool.read(job.spool_key or "")
        except (SpoolError, ValueError):
            original = b""
        data = build_dsn(
            reporting_mta=self.dsn.reporting_mta,
            sender=job.mail_from,
            original_message=original,
            arrival=job.received_at,
            recipients=[
                FailedRecipient(address, str(reply), tried.remote, now)
                for address, reply in failed.items()
            ],
            envelope_id=job.message_id,
            expired=expired,
            now=now,
            include_body=self.dsn.include_body,
        )
        head = BytesHeaderParser(policy=compat32).parsebytes(data)
        dsn = NewMessage(
            id=new_message_id(),
            customer_id=job.customer_id,
            domain_id=job.domain_id,
            domain_name=job.domain_name,
            received_at=now,
            client_ip="",
            client_helo=self.dsn.reporting_mta,
            mail_from="",
            recipients=[(job.mail_from, None)],
            verdict="unscanned",
            action="accept",
            reason="delivery-status-notification",
            state=MessageState.QUEUED,
            reply="",
            size=len(data),
            message_id_header=head.get("Message-ID"),
            subject=head.get("Subject"),
            data=data,
            related_id=job.message_id,
            route=ROUTE_DSN,
        )
        try:
            directory = await self.spool.write_file(dsn.id, data)
            await self.spool.sync_dirs([directory])
        except SpoolError as exc:
            log.error("message %s: cannot keep its DSN: %s", job.message_id, exc)
            return None
        return dsn
