"""claimed names: one row per name of a domain, alias or custom domain, and per parent
its customer holds because of it

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 01:00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from mailmoat.domain.claims import NameRules
from mailmoat.pipeline.auth import is_public_suffix

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    claimed = op.create_table(
        "claimed_names",
        sa.Column("name_ascii", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("owner_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_claimed_names_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("name_ascii", name=op.f("pk_claimed_names")),
    )
    with op.batch_alter_table("claimed_names", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_claimed_names_customer_id"), ["customer_id"], unique=False
        )
    rows = _backfill(op.get_bind())
    for start in range(0, len(rows), 500):
        op.bulk_insert(claimed, rows[start : start + 500])


def _backfill(bind: sa.Connection) -> list[dict[str, Any]]:
    """Rows for the names held today, the oldest claim first.

    Names that already overlap another customer's (allowed before this revision)
    keep working: each keeps its own row where it is free, and the parents go to
    whoever held a name under them first.
    """
    claims = list(
        bind.execute(
            sa.text(
                "SELECT d.created_at, 0, d.id, d.customer_id, d.name_ascii, 'domain' "
                "FROM domains d "
                "UNION ALL SELECT d.created_at, 1, d.id, d.customer_id, a.name_ascii, 'alias' "
                "FROM domain_aliases a JOIN domains d ON d.id = a.domain_id "
                "UNION ALL SELECT c.created_at, 2, c.id, c.customer_id, c.name_ascii, "
                "'custom-domain' FROM custom_domains c"
            )
        )
    )
    claims.sort(key=lambda c: (str(c[0]), c[1], c[4]))
    rules = NameRules(is_public_suffix)
    held: dict[str, dict[str, Any]] = {}
    for _, _, owner_id, customer_id, name, kind in claims:
        row = held.get(name)
        if row is None or (row["customer_id"] == customer_id and row["owner_id"] is None):
            held[name] = _row(name, customer_id, kind, owner_id)
        for parent in rules.parents(name):
            held.setdefault(parent, _row(parent, customer_id, "parent", None))
    return list(held.values())


def _row(name: str, customer_id: str, kind: str, owner_id: str | None) -> dict[str, Any]:
    return {"name_ascii": name, "customer_id": customer_id, "kind": kind, "owner_id": owner_id}


def downgrade() -> None:
    with op.batch_alter_table("claimed_names", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_claimed_names_customer_id"))
    op.drop_table("claimed_names")
