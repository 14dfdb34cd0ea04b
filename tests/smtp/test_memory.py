"""Memory of ``mailmoat serve`` while it receives several large messages at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PG_URL
from tests.scratch_pg import throwaway_postgres
from tests.served import Served, serve
from tests.smtp.conftest import message
from tests.smtp.test_served import provision

MESSAGES = 8
SIZE = 25_000_000  # under the default 25 MiB limit
GROWTH_LIMIT = 250 * 1024 * 1024


ENV = {
    "MAILMOAT_AUTH_CHECKS": "false",
    "MAILMOAT_DNS_SERVERS": "127.0.0.1:9",
}


@pytest.fixture(params=["sqlite"] + (["postgresql"] if PG_URL else []))
def served(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Served]:
    database_url = None
    if request.param == "postgresql":
        assert PG_URL is not None
        database_url, drop = asyncio.run(throwaway_postgres(PG_URL))
    try:
        with serve(data_dir, env=ENV, database_url=database_url) as running:
            yield running
    finally:
        if database_url is not None:
            asyncio.run(drop())


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _large_message(index: int) -> bytes:
    # Lines RFC 5321 allows (aiosmtpd's limit), so that any version can take them.
    line = b"0123456789abcdefghij" * 49 + b"\r\n"
    head = message(subject=f"large {index}").encode()
    return head + line * ((SIZE - len(head)) // len(line))


async def _send(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert (await reader.readline()).startswith(b"220")
        for command in (b"HELO client.test", b"MAIL FROM:<a@sender.test>", b"RCPT TO:<b@big.test>"):
            writer.write(command + b"\r\n")
            assert (await reader.readline()).startswith(b"250")
        writer.write(b"DATA\r\n")
        assert (await reader.readline()).startswith(b"354")
        writer.write(data)
        writer.write(b".\r\n")
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 300)
    finally:
        writer.close()


def _probe_health(base_url: str, stop: threading.Event, latencies: list[float]) -> None:
    """Latencies of /healthz, asked every 100 ms until ``stop`` (in a thread of its own,
    so that the test's sending does not delay it)."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200  # connected before measuring
        while not stop.is_set():
            started = time.perf_counter()
            response = client.get("/healthz")
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200
            stop.wait(0.1)


async def _send_all(port: int) -> list[bytes]:
    data = [_large_message(i) for i in range(MESSAGES)]
    return await asyncio.gather(*(_send(port, d) for d in data))


def test_eight_concurrent_25_mb_messages_stay_within_bounded_memory(
    served: Served, data_dir: Path
) -> None:
    api = provision(served, "big.test")
    pid = served.process.pid
    assert asyncio.run(_send(served.smtp_port, message().encode())).startswith(b"250")
    baseline = _status_kib(pid, "VmRSS") * 1024

    latencies: list[float] = []
    stop = threading.Event()
    probe = threading.Thread(target=_probe_health, args=(served.base_url, stop, latencies))
    probe.start()
    try:
        replies = asyncio.run(_send_all(served.smtp_port))
    finally:
        stop.set()
        probe.join()

    assert all(r.startswith(b"250 2.0.0") for r in replies), replies
    growth = _status_kib(pid, "VmHWM") * 1024 - baseline
    assert growth < GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.0f} MiB"
    # The process kept answering while it took the messages in.
    assert len(latencies) > 5
    assert max(latencies) < 0.2, sorted(latencies)
    log = api.get("/domains/big.test/messages", params={"limit": 20}).json()["messages"]
    assert sorted(m["size"] for m in log if m["subject"].startswith("large")) == sorted(
        [len(_large_message(0))] * MESSAGES
    )
    assert list((data_dir / "incoming").iterdir()) == []  # every temporary file removed
