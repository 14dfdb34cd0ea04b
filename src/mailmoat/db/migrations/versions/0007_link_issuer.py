"""the API key that issued a login link, and the console sessions it started

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No foreign key: deleting a key deletes what it issued explicitly, and links
    # issued by the command line carry no key at all.
    with op.batch_alter_table("login_links") as batch:
        batch.add_column(sa.Column("api_key_id", sa.String(length=32), nullable=True))
        batch.create_index(op.f("ix_login_links_api_key_id"), ["api_key_id"])
    with op.batch_alter_table("console_sessions") as batch:
        batch.add_column(sa.Column("api_key_id", sa.String(length=32), nullable=True))
        batch.create_index(op.f("ix_console_sessions_api_key_id"), ["api_key_id"])


def downgrade() -> None:
    with op.batch_alter_table("console_sessions") as batch:
        batch.drop_index(op.f("ix_console_sessions_api_key_id"))
        batch.drop_column("api_key_id")
    with op.batch_alter_table("login_links") as batch:
        batch.drop_index(op.f("ix_login_links_api_key_id"))
        batch.drop_column("api_key_id")
