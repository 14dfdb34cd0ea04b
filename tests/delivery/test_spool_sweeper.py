"""Spool files without a message record are removed once their directory is old."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mailmoat.db.spool import directory_end
from mailmoat.delivery.spool_sweeper import SpoolSweeper
from mailmoat.services.container import Services
from tests.delivery.conftest import Mailroom
from tests.smtp.conftest import message


async def test_orphans_go_and_kept_messages_stay(
    mailroom: Mailroom, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services.intake.contents, "inline_max", 0)  # every message in a file
    kept_id = await mailroom.send(message())  # no downstream: it stays queued/deferred
    spool = services.intake.contents.spool
    kept = spool.path(kept_id)
    assert kept.exists()
    # What a crash between the spool write and the commit leaves behind:
    orphan_key = kept_id[:6] + "f" * 26
    await spool.write_file(orphan_key, b"Subject: never committed\r\n\r\n")
    leftover = kept.parent / "0123abcd.tmp"
    leftover.write_bytes(b"half a message")

    young = SpoolSweeper(services.db, spool, grace=timedelta(hours=1))
    assert await young.sweep() == 0  # the directory is current: nothing is touched
    assert spool.path(orphan_key).exists()

    sweeper = SpoolSweeper(services.db, spool, grace=timedelta(hours=-2))
    # (The spool is shared by the tests of this run: earlier tests' files are orphans too.)
    assert await sweeper.sweep() >= 2
    assert kept.exists() and not spool.path(orphan_key).exists() and not leftover.exists()
    assert (await mailroom.gateway.raw(kept_id)).startswith(b"Received:")
    assert await sweeper.sweep() == 0  # each directory is looked at once


def test_directory_names_map_to_the_end_of_their_arrivals() -> None:
    end = directory_end("000001")
    assert end is not None and abs(end - 2 * (1 << 32) / 1e6) < 1e-6
    assert directory_end("tmp") is None and directory_end("zzzzzz") is None
