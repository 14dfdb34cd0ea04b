"""Opening an installation: database, migrations, services, first-start bootstrap.

Kept apart from app.py so that CLI commands which never serve HTTP start quickly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from mailmoat.config import Settings
from mailmoat.db.bayes_store import DatabaseTokenStore
from mailmoat.db.database import Database
from mailmoat.db.migrate import migrate
from mailmoat.domain.claims import NameRules
from mailmoat.failures import DATABASE_ERRORS, data_dir_failure, database_failure
from mailmoat.pipeline.auth import is_public_suffix
from mailmoat.pipeline.dns import DnsResolver, parse_dns_servers
from mailmoat.scanners.builtin import BuiltinScanner
from mailmoat.services.container import Services, WebhookPolicy, build_services
from mailmoat.services.customers import DEFAULT_HANDLE
from mailmoat.services.errors import Conflict
from mailmoat.services.reports import Learner


@dataclass(slots=True)
class FirstStart:
    customer: str
    api_key: str


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open the database, bring the schema up to date and build the services.

    A data directory or database that cannot be used raises ``OperatorError``.
    """
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise data_dir_failure(exc, settings.data_dir) from exc
    url = settings.effective_database_url
    try:
        database = Database(url)
    except OSError as exc:
        raise database_failure(exc, url) from exc
    try:
        try:
            await migrate(database)
        except DATABASE_ERRORS as exc:
            raise database_failure(exc, url) from exc
        services = await build_services(
            database,
            secret_key=settings.secret_key,
            public_url=settings.effective_public_url,
            login_link_lifetime=settings.login_link_lifetime,
            spool_dir=settings.spool_dir,
            inline_content_max=settings.inline_content_max,
            key_cache_seconds=settings.key_cache_seconds,
            learner=bayes_learner(database, settings.spam_threshold),
            console_policy=settings.console_policy,
            webhooks=WebhookPolicy(
                address_domain=settings.effective_webhook_domain,
                allow_private_targets=settings.webhook_allow_private,
                size_limit=settings.smtp_max_message_size,
            ),
            sending=settings.sending_policy,
            resolver=DnsResolver(parse_dns_servers(settings.dns_servers), settings.dns_timeout),
            targets=settings.address_policy,
            health_min_free=settings.health_min_free_space,
            health_cache_seconds=settings.health_check_interval,
            names=NameRules(is_public_suffix).with_own_names(
                [settings.smtp_hostname, settings.effective_webhook_domain]
            ),
        )
        try:
            yield services
        finally:
            await services.close()
    finally:
        await database.dispose()


def bayes_learner(database: Database, threshold: float) -> Learner:
    """Misclassification reports teach the built-in scanner's Bayes classifier.

    They do so whichever scanner is configured: spamd and rspamd keep their own
    training data, which mailmoat does not feed.
    """
    scanner = BuiltinScanner(DatabaseTokenStore(database), threshold=threshold)

    async def learn(raw: bytes, scope: str, spam: bool) -> None:
        await scanner.learn(raw, scope, spam=spam)

    return learn


async def bootstrap(services: Services) -> FirstStart | None:
    """On an empty database create customer ``default`` and its first key."""
    if not await services.customers.is_empty():
        return None
    try:
        customer = await services.customers.create(DEFAULT_HANDLE)
    except Conflict:
        return None  # another node got there first
    new = await services.keys.create(customer.id, "created on first start")
    return FirstStart(customer.handle, new.token)
