"""Alembic environment: mailmoat always hands in an open connection."""

from __future__ import annotations

from alembic import context

from mailmoat.db.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `mailmoat serve` or mailmoat.db.migrate")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
