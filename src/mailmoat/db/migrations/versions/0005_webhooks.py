"""webhook addresses, custom domains, signing secrets, sending domains; webhook
attempts and the address of a message

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _customer_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["customer_id"],
        ["customers.id"],
        name=op.f(f"fk_{table}_customer_id_customers"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "webhook_addresses",
        sa.Column("id", sa.String(length=20), nullable=False),
        sa.Column("customer_id", sa.String(length=32), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=2048), nullable=False),
        sa.Column("target_format", sa.String(length=16), nullable=False),
        sa.Column("nickname", sa.String(length=200), nullable=True),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("max_size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _customer_fk("webhook_addresses"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_addresses")),
        sa.UniqueConstraint("token", name=op.f("uq_webhook_addresses_token")),
    )
    with op.batch_alter_table("webhook_addresses", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_addresses_customer_id"), ["customer_id"], unique=False
        )

    op.create_table(
        "custom_domains",
        sa.Column("id", sa.String(length=20), nullable=False),
        sa.Column("customer_id", sa.String(length=32), nullable=False),
        sa.Column("address_id", sa.String(length=20), nullable=False),
        sa.Column("name_ascii", sa.String(length=255), nullable=False),
        sa.Column("name_unicode", sa.String(length=255), nullable=False),
        sa.Column("pattern", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["address_id"],
            ["webhook_addresses.id"],
            name=op.f("fk_custom_domains_address_id_webhook_addresses"),
            ondelete="CASCADE",
        ),
        _customer_fk("custom_domains"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custom_domains")),
        sa.UniqueConstraint("name_ascii", name=op.f("uq_custom_domains_name_ascii")),
    )
    with op.batch_alter_table("custom_domains", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_custom_domains_address_id"), ["address_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_custom_domains_customer_id"), ["customer_id"], unique=False
        )

    op.create_table(
        "webhook_secrets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=32), nullable=False),
        sa.Column("secret", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _customer_fk("webhook_secrets"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_secrets")),
    )
    with op.batch_alter_table("webhook_secrets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_secrets_customer_id"), ["customer_id"], unique=False
        )

    op.create_table(
        "sending_domains",
        sa.Column("id", sa.String(length=20), nullable=False),
        sa.Column("customer_id", sa.String(length=32), nullable=False),
        sa.Column("name_ascii", sa.String(length=255), nullable=False),
        sa.Column("name_unicode", sa.String(length=255), nullable=False),
        sa.Column("dkim_selector", sa.String(length=63), nullable=False),
        sa.Column("dkim_private_key", sa.Text(), nullable=False),
        sa.Column("dkim_public_key", sa.Text(), nullable=False),
        sa.Column("return_path", sa.String(length=255), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _customer_fk("sending_domains"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sending_domains")),
        sa.UniqueConstraint(
            "customer_id", "name_ascii", name=op.f("uq_sending_domains_customer_id")
        ),
    )
    with op.batch_alter_table("sending_domains", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sending_domains_customer_id"), ["customer_id"], unique=False
        )

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("address_id", sa.String(length=20), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_messages_address_id_webhook_addresses"),
            "webhook_addresses",
            ["address_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_index(
            "ix_messages_address_received", ["address_id", "received_at"], unique=False
        )

    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("http_status", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("response", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_column("response")
        batch_op.drop_column("http_status")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_address_received")
        batch_op.drop_constraint(
            batch_op.f("fk_messages_address_id_webhook_addresses"), type_="foreignkey"
        )
        batch_op.drop_column("address_id")
    for table in ("sending_domains", "webhook_secrets", "custom_domains", "webhook_addresses"):
        op.drop_table(table)
