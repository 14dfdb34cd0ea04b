"""The schema. Change it only together with a new Alembic revision."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps in UTC, timezone-aware on both backends (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime}  # noqa: RUF012 (SQLAlchemy reads it as is)


class ServerSecret(Base):
    """Secrets shared by every node of one installation (e.g. the API key HMAC key)."""

    __tablename__ = "server_secrets"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    handle: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Subscription(Base):
    __tablename__ = "subscriptions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    handle: Mapped[str] = mapped_column(String(128), unique=True)
    plan_handle: Mapped[str] = mapped_column(String(128), default="self-hosted")
    plan_name: Mapped[str] = mapped_column(String(128), default="mailmoat self-hosted")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    domain_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    protected_address_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    customer_id: Mapped[str] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Domain(Base):
    __tablename__ = "domains"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    subscription_id: Mapped[str] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True
    )
    name_ascii: Mapped[str] = mapped_column(String(255), unique=True)
    name_unicode: Mapped[str] = mapped_column(String(255))
    api_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), nullable=True, index=True
    )
    abuse_policy: Mapped[str] = mapped_column(String(16))
    abuse_policy_override: Mapped[bool] = mapped_column(Boolean, default=False)
    spam_header_name: Mapped[str] = mapped_column(String(80))
    spam_header_value: Mapped[str] = mapped_column(String(998))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_domains_customer_name", "customer_id", "name_ascii"),)


class DomainAlias(Base):
    __tablename__ = "domain_aliases"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    domain_id: Mapped[str] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    name_ascii: Mapped[str] = mapped_column(String(255), unique=True)
    name_unicode: Mapped[str] = mapped_column(String(255))


class DomainAdmin(Base):
    __tablename__ = "domain_admins"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    domain_id: Mapped[str] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))

    __table_args__ = (UniqueConstraint("domain_id", "email"),)


class DownstreamAddress(Base):
    __tablename__ = "downstream_addresses"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    domain_id: Mapped[str] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer)
    weight: Mapped[int] = mapped_column(Integer)
    port: Mapped[int] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(String(255))


class Recipient(Base):
    """A protected address ("user" in the API), created by API or as mail arrives."""

    __tablename__ = "recipients"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    subscription_id: Mapped[str] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True
    )
    domain_id: Mapped[str] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    filter: Mapped[bool] = mapped_column(Boolean, default=True)
    # The user's own abuse policy; None follows the domain (see abusePolicyOverride).
    abuse_policy: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ListEntry(Base):
    """One safelist/blocklist item at account, domain or user tier.

    ``scope`` is "account", "domain:<id>" or "user:<id>" so that one unique
    constraint covers every tier (NULLs would not collide in a unique index).
    """

    __tablename__ = "list_entries"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    domain_id: Mapped[str | None] = mapped_column(
        ForeignKey("domains.id", ondelete="CASCADE"), nullable=True, index=True
    )
    recipient_id: Mapped[str | None] = mapped_column(
        ForeignKey("recipients.id", ondelete="CASCADE"), nullable=True, index=True
    )
    scope: Mapped[str] = mapped_column(String(48))
    action: Mapped[str] = mapped_column(String(16))
    item: Mapped[str] = mapped_column(String(320))
    item_type: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("customer_id", "scope", "action", "item"),)


class LoginLink(Base):
    __tablename__ = "login_links"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    domain_id: Mapped[str] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The API key that issued the link (None from the command line).
    api_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookAddress(Base):
    """An email-to-webhook address: mail to <token>@<address domain> is POSTed to target."""

    __tablename__ = "webhook_addresses"
    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    customer_id: Mapped[str] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    token: Mapped[str] = mapped_column(String(32), unique=True)
    target: Mapped[str] = mapped_column(String(2048))
    target_format: Mapped[str] = mapped_column(String(16))
    nickname: Mapped[str | None] = mapped_column(String(200), nullable=True)
    mode: Mapped[str] = mapped_column(String(8))  # sync or queued
    max_size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CustomDomain(Base):
    """A customer's own domain whose mail goes to one of their webhook addresses."""

    __tablename__ = "custom_domains"
    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    customer_id: Mapped[str] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    address_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_addresses.id", ondelete="CASCADE"), index=True
    )
    # "example.com", or "*.example.com" for any one-label subdomain of it.
    name_ascii: Mapped[str] = mapped_column(String(255), unique=True)
    name_unicode: Mapped[str] = mapped_column(String(255))
    pattern: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ClaimedName(Base):
    """Who holds a name mail is routed by, one row per name across every kind.

    ``kind`` is domain, alias or custom-domain, with ``owner_id`` the domain (of a
    domain or its alias) or custom domain holding the name; or "parent", with no
    owner, for a parent the customer holds because it holds names under it (see
    domain/claims.py). The primary key is what makes two customers' claims exclude
    each other, also when they race.
    """

    __tablename__ = "claimed_names"
    name_ascii: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_id: Mapped[str] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[str | None] = mapped_column(String(32), nullable=True)


class WebhookSecret(Base):
    """A customer's webhook signing secret; the newest signs, the one before it too for
    a while after a rotation."""

    __tablename__ = "webhook_secrets"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    customer_id: Mapped[str] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    secret: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SendingDomain(Base):
    """A domain a customer sends from, with its DKIM key and the records to publish."""

    __tablename__ = "sending_domains"
    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    customer_id: Mapped[str] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    name_ascii: Mapped[str] = mapped_column(String(255))
    name_unicode: Mapped[str] = mapped_column(String(255))
    dkim_selector: Mapped[str] = mapped_column(String(63))
    dkim_private_key: Mapped[str] = mapped_column(Text)
    dkim_public_key: Mapped[str] = mapped_column(Text)
    return_path: Mapped[str] = mapped_column(String(255))
    verified_at: Mapped[datetime | None] = mapped_column(nullable=True)
    checked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    checks: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("customer_id", "name_ascii"),)


class ConsoleSession(Base):
    """A Domain Console session, started by using a login link; scoped to one domain."""

    __tablename__ = "console_sessions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    domain_id: Mapped[str] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    login_link_id: Mapped[str] = mapped_column(String(32))
    # The key that issued the link the session started from.
    api_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    client_ip: Mapped[str] = mapped_column(String(45))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class AuditEvent(Base):
    """Who did what, and when: console and API actions on mail, lists and settings."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    domain_id: Mapped[str | None] = mapped_column(
        ForeignKey("domains.id", ondelete="SET NULL"), nullable=True
    )
    message_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(String(1000), default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_audit_events_domain_at", "domain_id", "at"),)


class Report(Base):
    """A false-positive/negative report as submitted through POST /report."""

    __tablename__ = "reports"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    customer_id: Mapped[str] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    domain_id: Mapped[str | None] = mapped_column(
        ForeignKey("domains.id", ondelete="SET NULL"), nullable=True
    )
    report_type: Mapped[str] = mapped_column(String(32))
    message_content: Mapped[str] = mapped_column(Text)
    message_id_header: Mapped[str | None] = mapped_column(String(998), nullable=True)
    ehlo: Mapped[str | None] = mapped_column(String(255), nullable=True)
    mail_from: Mapped[str | None] = mapped_column(String(320), nullable=True)
    rcpt_to: Mapped[str | None] = mapped_column(String(320), nullable=True)
    sending_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    message_id: Mapped[str | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Message(Base):
    """What one domain received in one SMTP transaction: the message log record.

    The bytes (with the headers mailmoat added) are found by ``spool_key``: in
    ``message_contents`` when small enough, otherwise in a spool file.
    """

    __tablename__ = "messages"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    domain_id: Mapped[str | None] = mapped_column(
        ForeignKey("domains.id", ondelete="SET NULL"), nullable=True
    )
    domain_name: Mapped[str] = mapped_column(String(255))
    received_at: Mapped[datetime] = mapped_column()
    client_ip: Mapped[str] = mapped_column(String(45))
    client_helo: Mapped[str] = mapped_column(String(255))
    mail_from: Mapped[str] = mapped_column(String(320))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    message_id_header: Mapped[str | None] = mapped_column(String(998), nullable=True)
    subject: Mapped[str | None] = mapped_column(String(998), nullable=True)
    verdict: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    rules: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)
    auth_results: Mapped[str | None] = mapped_column(Text, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    reply: Mapped[str] = mapped_column(String(512), default="")
    spool_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state_changed_at: Mapped[datetime] = mapped_column()
    # For a delivery status notification mailmoat sent: the message it reports on.
    related_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # For mail to a webhook address (or a custom domain routed to one): that address.
    address_id: Mapped[str | None] = mapped_column(
        ForeignKey("webhook_addresses.id", ondelete="SET NULL"), nullable=True
    )

    __table_args__ = (
        Index("ix_messages_domain_received", "domain_id", "received_at"),
        Index("ix_messages_customer_received", "customer_id", "received_at"),
        Index("ix_messages_message_id_header", "message_id_header"),
        Index("ix_messages_state_changed", "state", "state_changed_at"),
        Index("ix_messages_address_received", "address_id", "received_at"),
    )


class MessageContent(Base):
    """The bytes of a message kept in the database rather than in a spool file.

    Written in the same transaction as the message's record (see db/contents.py);
    a table of its own keeps the message log's rows narrow.
    """

    __tablename__ = "message_contents"
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)


class MessageRecipient(Base):
    __tablename__ = "message_recipients"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    address: Mapped[str] = mapped_column(String(320), index=True)
    recipient_id: Mapped[str | None] = mapped_column(
        ForeignKey("recipients.id", ondelete="SET NULL"), nullable=True
    )
    # None while the recipient waits for delivery; "delivered" or "failed" once final.
    delivery_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    delivery_reply: Mapped[str | None] = mapped_column(String(512), nullable=True)


class Delivery(Base):
    """The queue: a message waiting to be delivered over one route.

    ``due_at`` is when a worker may take the row. Taking it (a lease) moves
    ``due_at`` to the end of the lease, so a row whose worker died becomes due
    again by itself; ``lease_owner`` tells the worker whether the row is still its
    own when it reports the outcome. Rows leave the queue when delivery is final.
    """

    __tablename__ = "deliveries"
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    route: Mapped[str] = mapped_column(String(16), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    queued_at: Mapped[datetime] = mapped_column()
    due_at: Mapped[datetime] = mapped_column()
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_reply: Mapped[str] = mapped_column(String(512), default="")

    __table_args__ = (Index("ix_deliveries_due_at", "due_at"),)


class DeliveryAttempt(Base):
    """One try at one destination, with the reply that applied to some recipients."""

    __tablename__ = "delivery_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column()
    route: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(320))
    outcome: Mapped[str] = mapped_column(String(16))
    reply: Mapped[str] = mapped_column(String(512))
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Webhook attempts: the HTTP status (None when no answer came) and the first
    # 2 KB of the body of an answer that was not a success.
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response: Mapped[str | None] = mapped_column(Text, nullable=True)


class BayesToken(Base):
    """How often a token was seen in spam and in ham, per classifier scope."""

    __tablename__ = "bayes_tokens"
    scope: Mapped[str] = mapped_column(String(48), primary_key=True)
    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    spam: Mapped[int] = mapped_column(Integer, default=0)
    ham: Mapped[int] = mapped_column(Integer, default=0)


class BayesTotals(Base):
    """How many spam and ham messages a classifier scope has learned from."""

    __tablename__ = "bayes_totals"
    scope: Mapped[str] = mapped_column(String(48), primary_key=True)
    spam: Mapped[int] = mapped_column(Integer, default=0)
    ham: Mapped[int] = mapped_column(Integer, default=0)
