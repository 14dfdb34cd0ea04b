"""/healthz says whether the node can accept mail; failures that repeat are logged
once a minute, not once per message or per round of the delivery worker.

Each test runs a node of its own (database, spool, API, SMTP) so that its
database can be made read-only. Tests run as root, which file modes do not stop:
a SQLite database is made read-only with the immutable attribute (chattr +i) of its
files and directory, a PostgreSQL one with ``default_transaction_read_only``, as
after a fail-over to a replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiosmtplib
import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from mailmoat.api.app import create_api
from mailmoat.api.ratelimit import RateLimiter
from mailmoat.config import Settings
from mailmoat.db.database import Database, sqlite_url_for
from mailmoat.db.migrate import migrate
from mailmoat.delivery_runtime import running_delivery
from mailmoat.pipeline.engine import Pipeline
from mailmoat.services.container import Services, build_services
from mailmoat.smtp.server import SmtpOptions, SmtpServer
from tests.api.helpers import assert_error, provision_names
from tests.conftest import BACKENDS, PG_URL, PUBLIC_URL, api_client
from tests.scratch_pg import throwaway_postgres

HEALTHZ = "http://gateway.test/healthz"
DOMAIN = "health.example"


@dataclass
class Node:
    services: Services
    app: FastAPI
    smtp_port: int
    spool: Path
    make_read_only: Callable[[], Awaitable[None]]

    async def healthz(self) -> httpx.Response:
        async with api_client(self.app, None) as client:
            return await client.get(HEALTHZ)

    async def send(self, count: int) -> list[int]:
        """``count`` messages over SMTP: the reply code of each, at RCPT or at DATA."""
        codes = []
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=self.smtp_port, timeout=20) as smtp:
            for n in range(count):
                await smtp.mail("alice@sender.test")
                try:
                    await smtp.rcpt(f"bob@{DOMAIN}")
                    reply = await smtp.data(f"Subject: {n}\r\nMessage-ID: <{n}@t>\r\n\r\nHi\r\n")
                    codes.append(reply.code)
                except aiosmtplib.SMTPResponseException as exc:
                    codes.append(exc.code)
                    await smtp.rset()
        return codes


def _chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


@pytest.fixture(params=BACKENDS)
async def node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Node]:
    data = tmp_path / "data"
    data.mkdir()
    frozen: list[Path] = []
    drop = None
    if request.param == "sqlite":
        probe = tmp_path / "probe"
        probe.touch()
        try:
            _chattr("+i", probe)
            _chattr("-i", probe)
        except (OSError, subprocess.CalledProcessError):
            pytest.skip("this file system has no immutable attribute (chattr +i)")
        url = sqlite_url_for(data)
    else:
        assert PG_URL is not None
        url, drop = await throwaway_postgres(PG_URL)
    database = Database(url)
    await migrate(database)
    services = await build_services(
        database,
        secret_key=None,
        public_url=PUBLIC_URL,
        login_link_lifetime=timedelta(minutes=15),
        spool_dir=data / "spool",
        inline_content_max=0,  # every message in a spool file
    )
    app = create_api(services, RateLimiter(0))
    customer = await services.customers.create("health")
    key = (await services.keys.create(customer.id, "test")).token
    async with api_client(app, key) as client:
        await provision_names(client, "health", DOMAIN)
    pipeline = Pipeline(hostname="mx.gateway.test", scanner=None, authenticator=None)
    smtp = SmtpServer(
        services.intake, pipeline, SmtpOptions(hostname="mx.gateway.test", max_message_size=65536)
    )
    await smtp.start("127.0.0.1", 0)

    async def make_read_only() -> None:
        if database.is_sqlite:
            assert database.url.database is not None
            db_file = Path(database.url.database)
            files = [p for p in (db_file, Path(f"{db_file}-wal")) if p.exists()]
            frozen.extend([*files, data])
            _chattr("+i", *files, data)
        else:
            assert PG_URL is not None
            name = make_url(url).database
            admin = make_url(PG_URL).set(drivername="postgresql")
            conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
            try:
                await conn.execute(
                    f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'
                )
            finally:
                await conn.close()
            await database.engine.dispose()  # sessions from now on are read-only

    try:
        yield Node(services, app, smtp.port, data / "spool", make_read_only)
    finally:
        await smtp.stop()
        if frozen:
            _chattr("-i", *frozen)
        with contextlib.suppress(Exception):
            await services.close()
        await database.dispose()
        if drop is not None:
            await drop()


async def test_a_healthy_node_answers_200(node: Node) -> None:
    response = await node.healthz()
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}
    assert await node.send(1) == [250]


async def test_a_read_only_database_makes_the_node_unhealthy(node: Node) -> None:
    await node.make_read_only()
    assert await node.send(2) == [451, 451]  # mail is refused for now, so...
    assert_error(await node.healthz(), 503, mentions="database: not writable")


async def test_a_spool_that_cannot_take_files_makes_the_node_unhealthy(node: Node) -> None:
    spool = node.spool
    if spool.is_dir():
        spool.rmdir()
    spool.write_text("a file where the spool directory should be")
    assert await node.send(1) == [451]
    assert_error(await node.healthz(), 503, mentions="spool: not writable")


async def test_a_nearly_full_disk_makes_the_node_unhealthy(node: Node) -> None:
    node.services.health.min_free = 1 << 60  # more than any disk has free
    assert_error(await node.healthz(), 503, mentions="spool: disk almost full")


async def test_the_checks_run_once_per_interval(node: Node) -> None:
    """A balancer polling many times a second does not probe the database each time."""
    health = node.services.health
    health.cache_seconds = 0.5
    assert (await node.healthz()).status_code == 200
    health.min_free = 1 << 60
    answers = await asyncio.gather(*(node.healthz() for _ in range(20)))
    assert {a.status_code for a in answers} == {200}  # the result of the first check
    await asyncio.sleep(0.6)
    assert (await node.healthz()).status_code == 503


def _lines(caplog: pytest.LogCaptureFixture, logger: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno >= level]


async def test_repeated_failures_are_logged_once_per_interval(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    """With the database read-only, every message gets 451 and every round of the
    worker fails: one line each, not one per message or per round."""
    assert await node.send(3) == [250, 250, 250]  # queued, waiting for a worker
    await node.make_read_only()
    caplog.set_level(logging.WARNING)
    assert await node.send(5) == [451] * 5
    intake_lines = _lines(caplog, "mailmoat.smtp.handler", logging.ERROR)
    assert len(intake_lines) == 1, intake_lines
    settings = Settings(delivery_poll_interval=0.01, dns_servers="127.0.0.1:9")
    async with running_delivery(settings, node.services):
        await asyncio.sleep(1.0)  # a hundred rounds of the worker, had it not waited
    worker_lines = _lines(caplog, "mailmoat.delivery.worker", logging.ERROR)
    assert len(worker_lines) == 1, worker_lines
    assert "claiming queued mail failed" in worker_lines[0]
