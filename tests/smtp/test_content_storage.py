"""Where accepted bytes are kept: small messages in the database, large ones in files."""

from __future__ import annotations

from sqlalchemy import select

from mailmoat.db.contents import DEFAULT_INLINE_MAX
from mailmoat.db.tables import MessageContent
from mailmoat.services.container import Services
from tests.smtp.conftest import Gateway, message


async def _row(services: Services, message_id: str) -> bytes | None:
    async with services.db.read() as session:
        data = await session.scalar(
            select(MessageContent.data).where(MessageContent.message_id == message_id)
        )
    return None if data is None else bytes(data)


async def test_a_small_message_is_kept_in_the_database_with_its_record(
    gateway: Gateway, services: Services
) -> None:
    _, reply = await gateway.send(message(body="Small enough for the database.\r\n"))
    assert reply.startswith("2.0.0")
    record = await gateway.only_message()
    stored = await _row(services, record["id"])
    assert stored is not None and b"Small enough for the database." in stored
    assert await gateway.raw(record["id"]) == stored
    assert not services.intake.contents.spool.path(record["id"]).exists()


async def test_a_large_message_is_kept_in_a_spool_file(
    gateway: Gateway, services: Services
) -> None:
    line = "A line of a long report, repeated to pass the database's share of mail.\r\n"
    body = line * (DEFAULT_INLINE_MAX // len(line) + 10)
    _, reply = await gateway.send(message(body=body))
    assert reply.startswith("2.0.0")
    record = await gateway.only_message()
    assert await _row(services, record["id"]) is None
    path = services.intake.contents.spool.path(record["id"])
    assert path.exists() and path.stat().st_size > DEFAULT_INLINE_MAX
    raw = await gateway.raw(record["id"])
    assert raw == path.read_bytes() and raw.endswith(line.encode())
