"""Composition of webhook posting, shared by the SMTP role (sync mode) and workers."""

from __future__ import annotations

from mailmoat.config import Settings
from mailmoat.delivery.destinations import Destinations, NameResolver
from mailmoat.delivery.webhook_client import WebhookClient
from mailmoat.delivery.webhook_delivery import WebhookDelivery
from mailmoat.pipeline.dns import DnsResolver, parse_dns_servers
from mailmoat.services.container import Services


def webhook_delivery(
    settings: Settings, services: Services, resolver: NameResolver | None = None
) -> WebhookDelivery:
    """Posting to webhooks, as the SMTP role (sync mode) and workers do it."""
    destinations = Destinations(
        resolver or DnsResolver(parse_dns_servers(settings.dns_servers), settings.dns_timeout),
        policy=settings.webhook_address_policy,
    )
    client = WebhookClient(destinations, timeout=settings.webhook_timeout)
    return WebhookDelivery(services.db, client)
