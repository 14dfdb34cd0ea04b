"""The claimed names table: taking and releasing names inside the caller's transaction.

Taking inserts a row for the name and for each parent it needs, skipping rows that
exist (ON CONFLICT DO NOTHING: on PostgreSQL that waits for a concurrent
transaction inserting the same name to end), then reads the rows back locked and
checks who holds them. Of two customers racing for overlapping names, the second
finds the first's rows: exactly one wins.

Releasing deletes the names' rows, keeps (or puts back) the parents the customer
still needs for its other names and deletes the others. Both lock the rows they
read, so that a release and a take of one customer never leave a name without
its parent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db.tables import ClaimedName

PARENT = "parent"
CHUNK = 500
LIKE_LIMIT = 20  # tree names looked for by pattern; beyond, all the customer's are read
ATTEMPTS = 3  # a parent released concurrently is inserted again this often


@dataclass(frozen=True, slots=True)
class Claim:
    name: str  # A-label form; "*.example.com" for a wildcard custom domain
    kind: str  # domain, alias or custom-domain
    owner_id: str
    parents: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Clash:
    """Why a claim was refused: the row ``at`` (the name or one of its parents) is
    held, by another customer or, for the name itself, by something else."""

    name: str
    at: str
    other_customer: bool
    kind: str


class ClaimsChanged(Exception):
    """Parents kept disappearing under concurrent releases."""


def _chunks(values: Sequence[Any]) -> list[Sequence[Any]]:
    return [values[i : i + CHUNK] for i in range(0, len(values), CHUNK)]


async def _insert_missing(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    for part in _chunks(sorted(rows, key=lambda r: r["name_ascii"])):
        await session.execute(
            insert(ClaimedName)
            .values(list(part))
            .on_conflict_do_nothing(index_elements=["name_ascii"])
        )


async def _locked(session: AsyncSession, names: Sequence[str]) -> dict[str, Row[Any]]:
    found: dict[str, Row[Any]] = {}
    for part in _chunks(sorted(set(names))):
        rows = await session.execute(
            select(
                ClaimedName.name_ascii,
                ClaimedName.customer_id,
                ClaimedName.kind,
                ClaimedName.owner_id,
            )
            .where(ClaimedName.name_ascii.in_(part))
            .order_by(ClaimedName.name_ascii)
            .with_for_update()
        )
        found.update({row.name_ascii: row for row in rows})
    return found


async def take(session: AsyncSession, customer_id: str, claims: Sequence[Claim]) -> list[Clash]:
    """Take every claim that clashes with nothing; return the clashes of the others.

    Rows of refused claims may have been written: roll back to a savepoint taken
    before, and take the remaining claims again.
    """
    rows: dict[str, dict[str, Any]] = {}
    for claim in claims:
        for parent in claim.parents:
            rows.setdefault(parent, _row(parent, customer_id, PARENT, None))
    for claim in claims:
        rows[claim.name] = _row(claim.name, customer_id, claim.kind, claim.owner_id)
    for _ in range(ATTEMPTS):
        await _insert_missing(session, list(rows.values()))
        held = await _locked(session, list(rows))
        if all(name in held for name in rows):
            return await _check(session, customer_id, claims, held)
    raise ClaimsChanged("names changed while they were claimed")


def _row(name: str, customer_id: str, kind: str, owner_id: str | None) -> dict[str, Any]:
    return {"name_ascii": name, "customer_id": customer_id, "kind": kind, "owner_id": owner_id}


async def _check(
    session: AsyncSession, customer_id: str, claims: Sequence[Claim], held: dict[str, Row[Any]]
) -> list[Clash]:
    clashes: list[Clash] = []
    for claim in claims:
        row = held[claim.name]
        if row.customer_id != customer_id:
            clashes.append(Clash(claim.name, claim.name, True, row.kind))
            continue
        if row.owner_id is None:  # a parent of the customer's own names: now held itself
            await session.execute(
                update(ClaimedName)
                .where(ClaimedName.name_ascii == claim.name, ClaimedName.owner_id.is_(None))
                .values(kind=claim.kind, owner_id=claim.owner_id)
            )
        elif (row.kind, row.owner_id) != (claim.kind, claim.owner_id):
            clashes.append(Clash(claim.name, claim.name, False, row.kind))
            continue
        other = next((p for p in claim.parents if held[p].customer_id != customer_id), None)
        if other is not None:
            clashes.append(Clash(claim.name, other, True, held[other].kind))
    return clashes


async def release(
    session: AsyncSession, customer_id: str, names: Sequence[str], trees: Sequence[str]
) -> None:
    """Release the customer's ``names``; ``trees`` are those names and their parents."""
    if not names:
        return
    tree = sorted(set(trees) | set(names))
    await _locked(session, tree)
    for part in _chunks(sorted(set(names))):
        await session.execute(
            delete(ClaimedName).where(
                ClaimedName.name_ascii.in_(part), ClaimedName.customer_id == customer_id
            )
        )
    needed = await _still_needed(session, customer_id, tree)
    held = await _locked(session, tree)
    await _insert_missing(
        session,
        [
            _row(name, customer_id, PARENT, None)
            for name in tree
            if name in needed and name not in held
        ],
    )
    unneeded = [
        name
        for name, row in held.items()
        if name not in needed and row.customer_id == customer_id and row.owner_id is None
    ]
    for part in _chunks(unneeded):
        await session.execute(delete(ClaimedName).where(ClaimedName.name_ascii.in_(part)))


async def _still_needed(session: AsyncSession, customer_id: str, tree: Sequence[str]) -> set[str]:
    """Those of ``tree`` the customer holds names under."""
    held = (ClaimedName.customer_id == customer_id) & ClaimedName.owner_id.is_not(None)
    if len(tree) <= LIKE_LIMIT:
        query = select(ClaimedName.name_ascii).where(
            held, or_(*(ClaimedName.name_ascii.like(f"%.{name}") for name in tree))
        )
    else:  # one pass over the customer's names beats many patterns on each of them
        query = select(ClaimedName.name_ascii).where(held)
    wanted = set(tree)
    needed: set[str] = set()
    for name in await session.scalars(query):
        labels = name.split(".")
        needed.update(
            p for p in (".".join(labels[i:]) for i in range(1, len(labels))) if p in wanted
        )
    return needed
