"""All services of one installation, built over one database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from mailmoat.db.contents import DEFAULT_INLINE_MAX, MessageStore
from mailmoat.db.database import Database
from mailmoat.db.group_commit import GroupCommit
from mailmoat.db.spool import Spool
from mailmoat.domain.addresses import AddressPolicy
from mailmoat.domain.claims import NameRules
from mailmoat.services.console import ConsoleService
from mailmoat.services.console_policy import ConsolePolicy
from mailmoat.services.console_sessions import ConsoleSessions
from mailmoat.services.customers import CustomerService
from mailmoat.services.domains import DomainService
from mailmoat.services.health import DEFAULT_CACHE_SECONDS, DEFAULT_MIN_FREE, HealthService
from mailmoat.services.intake import IntakeService
from mailmoat.services.keys import KeyService
from mailmoat.services.lists import ListService
from mailmoat.services.login_links import LoginLinkService
from mailmoat.services.messages import MessageService
from mailmoat.services.name_claims import NameClaims
from mailmoat.services.queue import QueueService
from mailmoat.services.reports import Learner, ReportService
from mailmoat.services.secrets import load_hasher
from mailmoat.services.sending_domains import DnsLookup, SendingDomainService, SendingPolicy
from mailmoat.services.users import UserService
from mailmoat.services.webhook_addresses import WebhookAddressService
from mailmoat.services.webhook_secrets import WebhookSecrets
from mailmoat.services.webhook_statuses import WebhookStatusService


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    address_domain: str = "webhooks.invalid"
    allow_private_targets: bool = False
    size_limit: int = 25 * 1024 * 1024


@dataclass(slots=True)
class Services:
    db: Database
    customers: CustomerService
    keys: KeyService
    domains: DomainService
    lists: ListService
    users: UserService
    login_links: LoginLinkService
    reports: ReportService
    intake: IntakeService
    messages: MessageService
    queue: QueueService
    commits: GroupCommit
    console: ConsoleService
    console_sessions: ConsoleSessions
    console_policy: ConsolePolicy
    webhook_addresses: WebhookAddressService
    webhook_statuses: WebhookStatusService
    webhook_secrets: WebhookSecrets
    sending_domains: SendingDomainService
    health: HealthService

    async def close(self) -> None:
        """Commit what is pending; call before the database is disposed of."""
        await self.commits.close()


async def build_services(
    database: Database,
    *,
    secret_key: str | None,
    public_url: str,
    login_link_lifetime: timedelta,
    spool_dir: Path,
    inline_content_max: int = DEFAULT_INLINE_MAX,
    key_cache_seconds: float = 0.0,
    learner: Learner | None = None,
    console_policy: ConsolePolicy | None = None,
    webhooks: WebhookPolicy | None = None,
    sending: SendingPolicy | None = None,
    resolver: DnsLookup | None = None,
    targets: AddressPolicy | None = None,
    health_min_free: int = DEFAULT_MIN_FREE,
    health_cache_seconds: float = DEFAULT_CACHE_SECONDS,
    names: NameRules | None = None,
) -> Services:
    """``targets``: the address policy of downstream servers; webhook targets follow
    it with their own allowance (``webhooks.allow_private_targets``). ``names``: the
    rule of which names customers may hold, from the composition root (the public
    suffix list lives in pipeline/); the webhook address domain is added to its own
    names here."""
    hasher = await load_hasher(database, secret_key)
    keys = KeyService(database, hasher, key_cache_seconds)
    contents = MessageStore(database, Spool(spool_dir), inline_content_max)
    commits = GroupCommit(database)
    policy = console_policy or ConsolePolicy()
    hooks = webhooks or WebhookPolicy()
    smtp_targets = targets or AddressPolicy()
    claims = NameClaims((names or NameRules()).with_own_names([hooks.address_domain]))
    domains = DomainService(database, keys, hooks.address_domain, smtp_targets, claims)
    lists = ListService(database)
    reports = ReportService(database, learner)
    messages = MessageService(database, contents, policy.quarantine_retention)
    return Services(
        db=database,
        customers=CustomerService(database),
        keys=keys,
        domains=domains,
        lists=lists,
        users=UserService(database),
        login_links=LoginLinkService(database, hasher, public_url, login_link_lifetime),
        reports=reports,
        intake=IntakeService(database, contents, commits, webhook_domain=hooks.address_domain),
        messages=messages,
        queue=QueueService(database),
        commits=commits,
        console=ConsoleService(database, messages, lists, domains, reports),
        console_sessions=ConsoleSessions(database, hasher, policy),
        console_policy=policy,
        webhook_addresses=WebhookAddressService(
            database,
            hooks.address_domain,
            targets=smtp_targets.allowing(hooks.allow_private_targets),
            size_limit=hooks.size_limit,
            claims=claims,
        ),
        webhook_statuses=WebhookStatusService(database),
        webhook_secrets=WebhookSecrets(database),
        sending_domains=SendingDomainService(database, sending, resolver),
        health=HealthService(
            database, spool_dir, min_free=health_min_free, cache_seconds=health_cache_seconds
        ),
    )
