"""One delivery attempt of one claimed message: try destinations, classify replies."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32

from mailmoat import metrics
from mailmoat.db.contents import MessageStore
from mailmoat.db.message_rows import ROUTE_DSN, ROUTE_HTTP, NewMessage, new_message_id
from mailmoat.db.queue_repo import AttemptRecord, Job, Outcome
from mailmoat.db.spool import SpoolError
from mailmoat.delivery.destinations import Candidate, Destinations, Unresolvable
from mailmoat.delivery.dsn import FailedRecipient, build_dsn
from mailmoat.delivery.relay import DestinationUnusable, Envelope, Relay, Reply
from mailmoat.delivery.webhook_delivery import NO_ADDRESS, WebhookDelivery
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

    replies: dict[str, Reply] = field(default_factory=dict)  # the latest, per recipient
    remote: dict[str, str] = field(default_factory=dict)  # who gave that reply
    records: list[AttemptRecord] = field(default_factory=list)


def parse_reply(text: str) -> Reply:
    code, _, rest = text.partition(" ")
    return Reply(int(code) if code.isdigit() else 451, rest)


NO_SERVER = Reply(451, "4.4.1 no downstream server could be reached")
LOCAL_ERROR = Reply(451, "4.3.0 local error in mailmoat; the message will be tried again")


class Attempt:
    """Delivers claimed jobs through the relay and turns the replies into outcomes."""

    def __init__(
        self,
        contents: MessageStore,
        relay: Relay,
        destinations: Destinations,
        schedule: RetrySchedule,
        dsn: DsnOptions,
        webhooks: WebhookDelivery | None = None,
    ) -> None:
        self.contents = contents
        self.relay = relay
        self.destinations = destinations
        self.schedule = schedule
        self.dsn = dsn
        self.webhooks = webhooks

    async def run(self, job: Job, downstreams: Sequence[DownstreamAddress]) -> Outcome:
        """Try the job's destinations; always returns an outcome to record.

        An unexpected error defers the recipients that have no reply yet, so that a
        bug cannot make a message loop unseen: it still expires and bounces in time.
        """
        started = time.monotonic()
        tried = _Tried()
        try:
            await self._try(job, downstreams, tried)
        except Exception:
            log.exception("delivering message %s failed unexpectedly", job.message_id)
            self._settle(job, tried, LOCAL_ERROR, "-")
        finally:
            metrics.DELIVERY_SECONDS.labels(job.route).observe(time.monotonic() - started)
        return await self._outcome(job, tried, datetime.now(UTC))

    async def _try(self, job: Job, downstreams: Sequence[DownstreamAddress], tried: _Tried) -> None:
        """Try servers in order until every recipient has a final (2xx/5xx) reply.

        As with MX fallback, recipients that got a temporary reply from one server
        are offered to the next one; a permanent reply is final.
        """
        pending = list(job.recipients)
        if not pending:
            return
        if job.route == ROUTE_HTTP:
            await self._post(job, tried)
            return
        try:
            data = await self._content(job)
            candidates = await self._candidates(job, downstreams)
        except Unresolvable as exc:
            reply = parse_reply(exc.reply)
            self._settle(job, tried, Reply(554, reply.text) if exc.permanent else reply, "-")
            return
        failure = NO_SERVER
        for candidate in candidates:
            try:
                servers = await self.destinations.resolve(candidate)
            except Unresolvable as exc:
                failure = parse_reply(exc.reply)
                self._record(job, tried, str(candidate), dict.fromkeys(pending, failure), "")
                continue
            for server in servers:
                try:
                    replies = await self.relay.send(server, Envelope(job.mail_from, pending, data))
                except DestinationUnusable as exc:
                    failure = exc.reply
                    self._record(job, tried, str(server), dict.fromkeys(pending, failure), "")
                    continue
                self._record(job, tried, str(server), replies, server.name.rstrip("."))
                pending = [a for a in pending if tried.replies[a].temporary]
                if not pending:
                    return
        self._settle(job, tried, failure, "-")

    async def _post(self, job: Job, tried: _Tried) -> None:
        """One POST of the message to its webhook, for all its recipients at once."""
        try:
            data = await self._content(job)
        except Unresolvable as exc:
            self._settle(job, tried, parse_reply(exc.reply), "-")
            return
        result = None if self.webhooks is None else await self.webhooks.post_job(job, data)
        if result is None:
            self._settle(job, tried, NO_ADDRESS if self.webhooks else LOCAL_ERROR, "-")
            return
        reply = Reply(result.code, result.text)
        for address in job.recipients:
            tried.replies[address] = reply
            if result.status is not None:
                tried.remote[address] = result.target
        if result.status is None:
            outcome = "unreachable"
        else:
            outcome = "delivered" if reply.ok else "failed" if reply.permanent else "deferred"
        tried.records.append(
            AttemptRecord(
                datetime.now(UTC),
                result.target,
                outcome,
                str(reply),
                list(job.recipients),
                http_status=result.status,
                response=result.response,
            )
        )
        metrics.DELIVERY_ATTEMPTS.labels(job.route, outcome).inc()

    async def _content(self, job: Job) -> bytes:
        if job.data is not None:
            return job.data
        if job.spool_key is None:
            raise Unresolvable("451 4.3.0 the message content is not kept")
        try:
            return await self.contents.read(job.spool_key)
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
    def _settle(job: Job, tried: _Tried, reply: Reply, target: str) -> None:
        """Give ``reply`` to every recipient that has no reply yet, and record it."""
        unanswered = [a for a in job.recipients if a not in tried.replies]
        if unanswered:
            Attempt._record(job, tried, target, dict.fromkeys(unanswered, reply), "")

    @staticmethod
    def _record(
        job: Job, tried: _Tried, target: str, replies: dict[str, Reply], remote: str
    ) -> None:
        """Keep each recipient's reply and log one attempt row per distinct reply.

        ``remote`` is empty when no server gave the reply (it could not be reached).
        """
        groups: dict[Reply, list[str]] = defaultdict(list)
        for address, reply in replies.items():
            groups[reply].append(address)
            if remote or address not in tried.remote:  # a server's word beats "unreachable"
                tried.replies[address] = reply
            if remote:
                tried.remote[address] = remote
        now = datetime.now(UTC)
        for reply, addresses in groups.items():
            if not remote and target != "-":
                outcome = "unreachable"
            else:
                outcome = "delivered" if reply.ok else "failed" if reply.permanent else "deferred"
            tried.records.append(AttemptRecord(now, target, outcome, str(reply), addresses))
            metrics.DELIVERY_ATTEMPTS.labels(job.route, outcome).inc()

    async def _outcome(self, job: Job, tried: _Tried, now: datetime) -> Outcome:
        final: dict[str, tuple[str, str]] = {}
        pending: dict[str, Reply] = {}
        refused: dict[str, Reply] = {}
        for address in job.recipients:
            reply = tried.replies.get(address, LOCAL_ERROR)
            if reply.ok:
                final[address] = (RecipientStatus.DELIVERED, str(reply))
            elif reply.permanent:
                refused[address] = reply
            else:
                pending[address] = reply
        retry_at = None
        expired: dict[str, Reply] = {}
        if pending:
            retry_at = self.schedule.next_attempt(job.attempts + 1, job.queued_at, now)
            if retry_at is None:
                expired, pending = pending, {}
        failed = {**refused, **expired}
        dsn = None
        if failed and self._wants_dsn(job):
            try:
                dsn = await self._notification(job, failed, tried, bool(expired), now)
            except SpoolError as exc:
                # Not kept: the failures wait, so that the sender hears of them later.
                log.error("message %s: cannot keep its DSN: %s", job.message_id, exc)
                pending.update(failed)
                failed = {}
                retry_at = now + self.schedule.delay(job.attempts + 1)
        final.update((a, (RecipientStatus.FAILED, str(r))) for a, r in failed.items())
        for status, _ in final.values():
            result = "delivered" if status == RecipientStatus.DELIVERED else "failed"
            metrics.DELIVERY_RESULTS.labels(job.route, result).inc()
        if pending:
            state = MessageState.DEFERRED
        elif failed or job.failed_before:
            state = MessageState.FAILED
        else:
            state = MessageState.DELIVERED
        last = next(iter(pending.values()), None) or next(iter(failed.values()), None)
        return Outcome(
            job=job,
            attempts=tried.records,
            final=final,
            retry_at=retry_at if pending else None,
            last_reply=str(last) if last else "",
            message_state=state,
            dsn=dsn,
        )

    def _wants_dsn(self, job: Job) -> bool:
        return self.dsn.enabled and job.route != ROUTE_DSN and job.mail_from != ""

    async def _notification(
        self, job: Job, failed: dict[str, Reply], tried: _Tried, expired: bool, now: datetime
    ) -> NewMessage | None:
        """The DSN for ``failed`` recipients, already in the spool.

        Returns None (logged) when no DSN can be built; raises SpoolError when one
        was built but cannot be kept.
        """
        try:
            original = await self.contents.read(job.spool_key or "")
        except (SpoolError, ValueError):
            original = b""
        try:
            data = build_dsn(
                reporting_mta=self.dsn.reporting_mta,
                sender=job.mail_from,
                original_message=original,
                arrival=job.received_at,
                recipients=[
                    FailedRecipient(address, str(reply), tried.remote.get(address), now)
                    for address, reply in failed.items()
                ],
                envelope_id=job.message_id,
                expired=expired,
                now=now,
                include_body=self.dsn.include_body,
            )
        except Exception:
            log.exception("message %s: cannot build its DSN", job.message_id)
            return None
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
        spool = self.contents.spool
        await spool.sync_dirs([await spool.write_file(dsn.id, data)])
        return dsn
