"""The whole gateway as operators run it: ``mailmoat serve`` in its own process."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest

from tests.served import Served, serve
from tests.smtp.conftest import GTUBE, message

SWAKS = shutil.which("swaks")


def provision(served: Served, domain: str) -> httpx.Client:
    client = httpx.Client(
        base_url=f"{served.base_url}/inbound/v1", headers={"X-API-Key": served.api_key}
    )
    response = client.post("/domains", json={"domain": domain, "subscriptionHandle": "default"})
    assert response.status_code == 201, response.text
    return client


@pytest.fixture
def served(data_dir: Path) -> Iterator[Served]:
    with serve(data_dir, env={"MAILMOAT_AUTH_CHECKS": "false"}) as running:
        yield running


def send(port: int, recipient: str) -> dict[str, Any]:
    """One message over a new connection, with aiosmtplib in a loop of its own."""

    async def go() -> dict[str, Any]:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as smtp:
            errors, _ = await smtp.sendmail("alice@sender.test", [recipient], message(to=recipient))
            return dict(errors)

    return asyncio.run(go())


def test_serve_accepts_mail_for_provisioned_domains_only(served: Served) -> None:
    assert f"SMTP     : 127.0.0.1:{served.smtp_port}" in served.output
    api = provision(served, "served.example")
    assert send(served.smtp_port, "bob@served.example") == {}
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        send(served.smtp_port, "x@unknown.example")
    log = api.get("/domains/served.example/messages").json()["messages"]
    # Accepted; with no downstream address configured its delivery waits.
    assert [m["state"] for m in log] in (["queued"], ["deferred"])
    metrics = httpx.get(f"{served.base_url}/metrics").text
    assert 'mailmoat_smtp_replies_total{code="550",command="RCPT"} 1.0' in metrics


@pytest.mark.skipif(
    SWAKS is None and not os.environ.get("CI"),
    reason="swaks is not installed (apt-get install swaks)",
)
def test_swaks_sends_gtube_and_it_is_quarantined(served: Served, tmp_path: Path) -> None:
    assert SWAKS is not None, "CI must install swaks"
    api = provision(served, "swaks.example")
    body = tmp_path / "body.txt"
    body.write_text(f"{GTUBE}\n")
    result = subprocess.run(
        [
            SWAKS,
            *("--server", "127.0.0.1", "--port", str(served.smtp_port)),
            *("--from", "tester@sender.test", "--to", "user@swaks.example"),
            *("--helo", "swaks.sender.test", "--header", "Subject: swaks test"),
            *("--body", str(body), "--timeout", "20"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<-  250 2.0.0 Ok: queued as" in result.stdout
    [record] = api.get("/domains/swaks.example/messages").json()["messages"]
    assert record["state"] == "quarantined"
    assert record["clientHelo"] == "swaks.sender.test"
    assert record["subject"] == "swaks test"
    refused = subprocess.run(
        [
            SWAKS,
            *("--server", "127.0.0.1", "--port", str(served.smtp_port)),
            *("--from", "tester@sender.test", "--to", "user@not-served.example"),
            "--quit-after",
            "RCPT",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "<** 550 5.7.1" in refused.stdout, refused.stdout


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(line) for line in found.split()]


def test_several_smtp_processes_share_the_port_and_the_metrics(data_dir: Path) -> None:
    env = {"MAILMOAT_AUTH_CHECKS": "false", "MAILMOAT_SMTP_PROCESSES": "3"}
    with serve(data_dir, env=env) as served:
        assert "3 processes" in served.output
        children = _children(served.process.pid)
        assert len(children) == 2, children
        api = provision(served, "multi.example")
        for n in range(24):  # a connection each: the kernel spreads them over the processes
            assert send(served.smtp_port, f"u{n}@multi.example") == {}
        log = api.get("/domains/multi.example/messages", params={"limit": 100}).json()
        assert log["total"] == 24
        metrics = httpx.get(f"{served.base_url}/metrics").text
        assert 'mailmoat_smtp_replies_total{code="250",command="DATA"} 24.0' in metrics
    # The parent stops its SMTP processes before it exits.
    assert [c for c in children if Path(f"/proc/{c}").exists()] == []


def test_extra_smtp_processes_stop_when_their_parent_is_killed(data_dir: Path) -> None:
    env = {"MAILMOAT_AUTH_CHECKS": "false", "MAILMOAT_SMTP_PROCESSES": "2"}
    with serve(data_dir, env=env) as served:
        [child] = _children(served.process.pid)
        served.process.kill()  # no chance to stop its children
        served.process.wait()
        deadline = time.monotonic() + 25
        while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not Path(f"/proc/{child}").exists(), "an orphaned SMTP process kept running"
