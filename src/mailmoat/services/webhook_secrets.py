"""Per-account secrets that sign webhook posts, and their rotation.

The newest secret signs every post. After a rotation the one before it signs too,
for a grace period (db/webhook_repo.SECRET_GRACE), so that receivers can switch
over without refusing posts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete

from mailmoat.db import webhook_repo
from mailmoat.db.database import Database
from mailmoat.db.tables import WebhookSecret
from mailmoat.services import audit
from mailmoat.services.caller import Caller


@dataclass(frozen=True, slots=True)
class SecretView:
    secret: str
    created_at: datetime
    previous_valid_until: datetime | None  # when the previous secret stops signing


class WebhookSecrets:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def show(self, caller: Caller) -> SecretView:
        return _view(await webhook_repo.current_secrets(self.db, caller.customer_id))

    async def rotate(self, caller: Caller) -> SecretView:
        async with self.db.write() as session:
            webhook_repo.add_secret(session, caller.customer_id)
            await session.flush()
            rows = await webhook_repo.secret_rows(session, caller.customer_id)
            stale = [r.id for r in rows[2:]]  # only the newest two are ever used
            if stale:
                await session.execute(delete(WebhookSecret).where(WebhookSecret.id.in_(stale)))
            await audit.record(
                session, caller.actor, "rotated the webhook signing secret", domain_id=None
            )
            return _view(rows[:2])


def _view(rows: list[WebhookSecret]) -> SecretView:
    newest = rows[0]
    previous = newest.created_at + webhook_repo.SECRET_GRACE if len(rows) > 1 else None
    return SecretView(newest.secret, newest.created_at, previous)
