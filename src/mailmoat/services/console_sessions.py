"""Signing in to the Domain Console with a login link, and the sessions that follow.

A login link is single use: using it starts a session bound to the link's domain.
The session cookie carries an opaque random token and an HMAC of it under the
server key; the database keeps only a hash of the token, with the session's
domain, its idle deadline and its absolute end. Forms carry a CSRF token derived
from the session token, so nothing else needs to be stored.
"""

from __future__ import annotations

import enum
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db.database import Database
from mailmoat.db.tables import ConsoleSession, Customer, Domain, LoginLink, new_id, utcnow
from mailmoat.services import audit
from mailmoat.services.caller import Caller
from mailmoat.services.console_policy import ConsolePolicy
from mailmoat.services.secrets import TokenHasher

# Touch a session's idle deadline at most this often: reads stay reads.
TOUCH_EVERY = timedelta(seconds=60)
LINK_MEMORY = timedelta(days=1)


class LinkProblem(enum.StrEnum):
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    USED = "used"


@dataclass(frozen=True, slots=True)
class LinkCheck:
    """What a login link would open, or why it cannot."""

    domain: str | None
    problem: LinkProblem | None


@dataclass(frozen=True, slots=True)
class DomainAdmin:
    """A signed-in console user: an admin of exactly one domain."""

    session_id: str
    domain_id: str
    domain: str  # the domain's name, U-label form
    caller: Caller  # acts as the domain's customer, through the domain's key if it has one
    may_edit_settings: bool  # false when the domain is tied to an API key
    csrf_token: str


@dataclass(frozen=True, slots=True)
class SignedIn:
    cookie: str
    admin: DomainAdmin


class ConsoleSessions:
    def __init__(self, database: Database, hasher: TokenHasher, policy: ConsolePolicy) -> None:
        self.db = database
        self.hasher = hasher
        self.policy = policy

    async def check_link(self, token: str) -> LinkCheck:
        """Look at a login link without using it (mail scanners fetch links too)."""
        async with self.db.read() as session:
            found = await session.execute(
                select(LoginLink, Domain.name_unicode)
                .join(Domain, Domain.id == LoginLink.domain_id)
                .where(LoginLink.token_hash == self.hasher.hash(token))
            )
            row = found.first()
        if row is None:
            return LinkCheck(None, LinkProblem.UNKNOWN)
        link, domain = row
        return LinkCheck(domain, _problem(link, utcnow()))

    async def sign_in(self, token: str, client_ip: str) -> SignedIn | LinkProblem:
        """Use a login link: it can never be used again, and a session starts."""
        now = utcnow()
        async with self.db.write() as session:
            link = await session.scalar(
                select(LoginLink)
                .where(LoginLink.token_hash == self.hasher.hash(token))
                .with_for_update()
            )
            if link is None:
                return LinkProblem.UNKNOWN
            problem = _problem(link, now)
            if problem is not None:
                return problem
            # Compare-and-set: of two requests racing with one link, one wins.
            used = await session.execute(
                update(LoginLink)
                .where(LoginLink.id == link.id, LoginLink.used_at.is_(None))
                .values(used_at=now)
            )
            if used.rowcount != 1:  # type: ignore[attr-defined]
                return LinkProblem.USED
            secret = secrets.token_urlsafe(32)
            row = ConsoleSession(
                id=new_id(),
                token_hash=self.hasher.hash(secret),
                domain_id=link.domain_id,
                login_link_id=link.id,
                api_key_id=link.api_key_id,  # deleting that key ends the session
                client_ip=client_ip[:45],
                created_at=now,
                last_seen_at=now,
                expires_at=now + self.policy.session_max,
            )
            session.add(row)
            await session.flush()
            admin = await self._admin(session, row, secret)
            if admin is None:
                return LinkProblem.UNKNOWN
            await audit.record(
                session,
                admin.caller.actor,
                "signed in",
                domain_id=admin.domain_id,
                detail=f"login link {link.id[:12]} from {client_ip}",
            )
        return SignedIn(self._cookie(secret), admin)

    async def resume(self, cookie: str | None) -> DomainAdmin | None:
        """The admin a session cookie belongs to, or None when it is not (or no longer)
        a live session."""
        secret = self._verified(cookie)
        if secret is None:
            return None
        now = utcnow()
        async with self.db.read() as session:
            row = await session.scalar(
                select(ConsoleSession).where(ConsoleSession.token_hash == self.hasher.hash(secret))
            )
            if row is None or _ended(row, now, self.policy.session_idle):
                return None
            admin = await self._admin(session, row, secret)
            stale = now - row.last_seen_at > TOUCH_EVERY
        if admin is not None and stale:
            async with self.db.write() as session:
                await session.execute(
                    update(ConsoleSession)
                    .where(ConsoleSession.id == row.id)
                    .values(last_seen_at=now)
                )
        return admin

    async def sign_out(self, admin: DomainAdmin) -> None:
        async with self.db.write() as session:
            await session.execute(
                delete(ConsoleSession).where(ConsoleSession.id == admin.session_id)
            )
            await audit.record(session, admin.caller.actor, "signed out", domain_id=admin.domain_id)

    async def forget_ended(self) -> int:
        """Delete ended sessions, and login links a day past their expiry (until then
        a late click still learns that its link expired rather than never existed)."""
        now = utcnow()
        async with self.db.write() as session:
            gone = await session.execute(
                delete(ConsoleSession).where(
                    (ConsoleSession.expires_at < now)
                    | (ConsoleSession.last_seen_at < now - self.policy.session_idle)
                )
            )
            await session.execute(delete(LoginLink).where(LoginLink.expires_at < now - LINK_MEMORY))
            return int(gone.rowcount)  # type: ignore[attr-defined]

    def csrf_valid(self, admin: DomainAdmin, submitted: str | None) -> bool:
        return bool(submitted) and hmac.compare_digest(
            admin.csrf_token.encode(), (submitted or "").encode("utf-8", "surrogateescape")
        )

    # -- internals ------------------------------------------------------------------

    def _cookie(self, secret: str) -> str:
        return f"{secret}.{self._signature(secret)}"

    def _signature(self, secret: str) -> str:
        return self.hasher.hash(f"console-cookie:{secret}")[:32]

    def _verified(self, cookie: str | None) -> str | None:
        if not cookie or "." not in cookie:
            return None
        secret, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(
            self._signature(secret).encode(), signature.encode("utf-8", "surrogateescape")
        ):
            return None
        return secret

    async def _admin(
        self, session: AsyncSession, row: ConsoleSession, secret: str
    ) -> DomainAdmin | None:
        found = (
            await session.execute(
                select(Domain, Customer.handle)
                .join(Customer, Customer.id == Domain.customer_id)
                .where(Domain.id == row.domain_id)
            )
        ).first()
        if found is None:
            return None
        domain, handle = found
        caller = Caller(
            customer_id=domain.customer_id,
            customer_handle=handle,
            key_id=domain.api_key_id or "",
            name=f"{domain.name_unicode} admin (console session {row.id[:12]})",
        )
        return DomainAdmin(
            session_id=row.id,
            domain_id=domain.id,
            domain=domain.name_unicode,
            caller=caller,
            may_edit_settings=domain.api_key_id is None,
            csrf_token=self.hasher.hash(f"console-csrf:{secret}")[:40],
        )


def _problem(link: LoginLink, now: datetime) -> LinkProblem | None:
    if link.used_at is not None:
        return LinkProblem.USED
    if link.expires_at <= now:
        return LinkProblem.EXPIRED
    return None


def _ended(row: ConsoleSession, now: datetime, idle: timedelta) -> bool:
    return row.expires_at <= now or row.last_seen_at + idle <= now
