"""Composition of the worker role: relay, name resolution, attempts and the worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from mailmoat.config import Settings, parse_listen
from mailmoat.delivery.attempt import Attempt, DsnOptions
from mailmoat.delivery.destinations import Destinations, NameResolver
from mailmoat.delivery.relay import Relay, RelayOptions
from mailmoat.delivery.spool_sweeper import SpoolSweeper
from mailmoat.delivery.worker import DeliveryWorker, WorkerOptions
from mailmoat.pipeline.dns import DnsResolver, parse_dns_servers
from mailmoat.services.container import Services
from mailmoat.webhook_runtime import webhook_delivery


def relay_options(settings: Settings) -> RelayOptions:
    return RelayOptions(
        helo=settings.smtp_hostname,
        tls=settings.delivery_tls,
        connect_timeout=settings.delivery_connect_timeout,
        command_timeout=settings.delivery_timeout,
        per_destination=settings.delivery_per_destination,
    )


@asynccontextmanager
async def running_delivery(
    settings: Settings, services: Services, *, resolver: NameResolver | None = None
) -> AsyncIterator[DeliveryWorker]:
    """Deliver queued mail until the block ends."""
    relay = Relay(relay_options(settings))
    destinations = Destinations(
        resolver or DnsResolver(parse_dns_servers(settings.dns_servers), settings.dns_timeout),
        dsn_relay=parse_listen(settings.dsn_relay) if settings.dsn_relay else None,
        policy=settings.address_policy,
    )
    webhooks = webhook_delivery(settings, services, resolver)
    contents = services.intake.contents
    attempt = Attempt(
        contents,
        relay,
        destinations,
        settings.retry_schedule,
        DsnOptions(settings.dsn, settings.smtp_hostname, settings.dsn_include_body),
        webhooks,
    )
    worker = DeliveryWorker(
        services.db,
        services.commits,
        contents.spool,
        attempt,
        WorkerOptions(
            concurrency=settings.delivery_concurrency,
            lease=timedelta(seconds=settings.delivery_lease),
            poll_interval=settings.delivery_poll_interval,
        ),
        sweeper=SpoolSweeper(services.db, contents.spool),
    )
    await worker.start()
    services.intake.local_delivery = worker
    try:
        yield worker
    finally:
        services.intake.local_delivery = None
        await worker.stop()
        await relay.close()
        await webhooks.client.close()
