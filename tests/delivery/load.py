"""Sending many messages at once, remembering which ones the gateway acknowledged."""

from __future__ import annotations

import asyncio
import uuid

import aiosmtplib

from tests.smtp.conftest import message


def send_many(
    port: int,
    recipient: str,
    count: int,
    *,
    sessions: int = 8,
    tag: str = "load",
    acknowledged: list[str] | None = None,
) -> list[str]:
    """Send up to ``count`` messages over ``sessions`` connections.

    Returns (and appends to ``acknowledged`` as they come, for a watching thread)
    the Message-IDs of those that got a 250 at the end of DATA. A session whose
    server goes away stops; the messages it had not sent are not counted.
    """
    found: list[str] = [] if acknowledged is None else acknowledged

    async def session(numbers: list[int], acknowledged: list[str]) -> None:
        try:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as smtp:
                for n in numbers:
                    message_id = f"<{tag}-{n}-{uuid.uuid4().hex[:8]}@sender.test>"
                    body = message(f"{tag} {n}", to=recipient, message_id=message_id)
                    errors, reply = await smtp.sendmail("alice@sender.test", [recipient], body)
                    if not errors and reply.startswith("2"):
                        acknowledged.append(message_id)
        except (aiosmtplib.SMTPException, OSError):
            return

    async def run() -> list[str]:
        shares = [list(range(count))[i::sessions] for i in range(sessions)]
        await asyncio.gather(*(session(share, found) for share in shares))
        return found

    return asyncio.run(run())
