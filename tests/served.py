"""Start ``mailmoat serve`` as a real process on a free loopback port."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

KEY_PATTERN = re.compile(r"mm_[A-Za-z0-9_-]{20,}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    base_url: str
    api_key: str
    process: subprocess.Popen[bytes]
    log_path: Path
    smtp_port: int

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def mailmoat_command() -> list[str]:
    return [sys.executable, "-m", "mailmoat"]


@contextmanager
def serve(
    data_dir: Path,
    *,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    timeout: float = 30.0,
) -> Iterator[Served]:
    port, smtp_port = free_port(), free_port()
    args = [*mailmoat_command(), "serve", "--data-dir", str(data_dir)]
    args += ["--api-listen", f"127.0.0.1:{port}", "--smtp-listen", f"127.0.0.1:{smtp_port}"]
    args += extra_args or []
    api_served = not any(role in args for role in ("smtp", "worker"))
    worker_only = "worker" in args
    if database_url:
        args += ["--database-url", database_url]
    environment = {
        **os.environ,
        "COLUMNS": "200",
        # The tests' downstream servers listen on 127.0.0.1: the operator allows it.
        "MAILMOAT_DOWNSTREAM_ALLOW_PRIVATE": "true",
        **(env or {}),
    }
    log_path = data_dir.parent / f"{data_dir.name}-serve-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=environment)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not (
            _healthy(base)
            if api_served
            else "delivery :" in log_path.read_text()
            if worker_only
            else _accepting(smtp_port)
        ):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mailmoat did not start:\n" + log_path.read_text())
            time.sleep(0.1)
        match = KEY_PATTERN.search(log_path.read_text())
        yield Served(base, match.group(0) if match else "", process, log_path, smtp_port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
