"""Benchmark of the /inbound/v1 provisioning API against a real ``mailmoat serve`` process.

Prints figures, asserts nothing. Run ``.venv/bin/python bench/api.py --help``.

Setup (not measured): a temporary data directory; customers ``default`` and
``bench-00`` … ``bench-NN`` (one per lookup worker) with one key each, created with
the ``mailmoat`` CLI before the server starts; then the server on a free loopback
port with the rate limiter on (MAILMOAT_RATE_LIMIT, default 100 requests/s/customer).

1. batch   POST /domains/batch?subscriptionHandle=default with 1000 domains (one
           downstreamAddress each); repeated, each batch deprovisioned afterwards.
2. list    100 batches of 1000 (customer ``default`` then has 100,000 domains), then
           GET /domains?limit=5000 at offset 0 and at an offset in the middle.
3. lookup  GET /domains/{domain} by --concurrency workers, one customer and key each,
           for --duration seconds after a warm-up; only 200 answers count.

The server is always stopped at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.scratch_pg import throwaway_postgres

ROOT = Path(__file__).resolve().parent.parent
MAILMOAT = Path(sys.executable).parent / "mailmoat"
PREFIX = "/inbound/v1"
HOST = "127.0.0.1"
KEY_RE = re.compile(r"mm_[A-Za-z0-9_-]+")
DOWNSTREAM = [{"priority": 10, "weight": 10, "port": 25, "target": "mx.bench.example."}]

TARGET_BATCH_S = 1.0
TARGET_LOOKUPS_PER_S = 1000.0


# -- small helpers ---------------------------------------------------------------


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of values; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def verdict(ok: bool) -> str:
    return "target met" if ok else "TARGET MISSED"


def say(text: str = "") -> None:
    print(text, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float | None:
    """User+system CPU time of a process (Linux /proc), or None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_seconds() -> float | None:
    """CPU time spent by the whole machine, all processes (Linux /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        idle = int(fields[3]) + int(fields[4])  # idle + iowait
        return (sum(int(f) for f in fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Load:
    """CPU used by the server and by everything else on the machine over a span of time."""

    def __init__(self, env: Env) -> None:
        self.pid = env.server.pid if env.server else 0
        self.started = time.perf_counter()
        self.server0 = cpu_seconds(self.pid)
        self.machine0 = machine_busy_seconds()
        self.own0 = time.process_time()

    def summary(self) -> str:
        elapsed = time.perf_counter() - self.started
        server1, machine1 = cpu_seconds(self.pid), machine_busy_seconds()
        if self.server0 is None or server1 is None or self.machine0 is None or machine1 is None:
            return "   (no CPU figures on this system)"
        server = server1 - self.server0
        own = time.process_time() - self.own0
        others = max(0.0, machine1 - self.machine0 - server - own)
        return (
            f"   CPU over {elapsed:.1f} s on {os.cpu_count()} cores: server {server:.1f} s, "
            f"bench client {own:.1f} s, other processes {others:.1f} s"
        )


def domain_batch(prefix: str, count: int) -> bytes:
    items = [
        {"domain": f"{prefix}-{i:05d}.bench.example", "downstreamAddress": DOWNSTREAM}
        for i in range(count)
    ]
    return json.dumps({"domains": items}).encode()


# -- the environment: database, CLI, server --------------------------------------


@dataclass
class Env:
    data_dir: Path
    database_url: str | None  # None: the embedded SQLite database in data_dir
    rate_limit: int
    redis_url: str | None
    log_path: Path
    server: subprocess.Popen[bytes] | None = None
    port: int = 0
    drop_database: Callable[[], Awaitable[None]] | None = None

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILMOAT_")}
        env["MAILMOAT_DATA_DIR"] = str(self.data_dir)
        env["MAILMOAT_RATE_LIMIT"] = str(self.rate_limit)
        env["MAILMOAT_LOG_LEVEL"] = "warning"
        if self.database_url:
            env["MAILMOAT_DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["MAILMOAT_REDIS_URL"] = self.redis_url
        return env

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def cli(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(MAILMOAT),
            *args,
            env=self.environ(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, errout = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"mailmoat {' '.join(args)} failed: {errout.decode().strip()}")
        return out.decode()

    async def create_customer(self, handle: str) -> str:
        """Customer HANDLE (with subscription HANDLE) and one key, by the CLI; the key."""
        await self.cli("customers", "create", handle)
        key = (await self.cli("keys", "create", "--customer", handle)).strip()
        if not KEY_RE.fullmatch(key):
            raise RuntimeError(f"unexpected output of 'mailmoat keys create': {key!r}")
        return key

    def start_server(self) -> None:
        self.port = free_port()
        log = self.log_path.open("ab")
        self.server = subprocess.Popen(
            [str(MAILMOAT), "serve", "--api-listen", f"{HOST}:{self.port}"],
            env=self.environ(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C on the bench does not hit it mid-cleanup
        )
        log.close()
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=self.base_url, timeout=2) as client:
            while time.monotonic() < deadline:
                if self.server.poll() is not None:
                    raise RuntimeError(f"server exited with {self.server.returncode}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/healthz").status_code == 200:
                        return
                time.sleep(0.1)
        raise RuntimeError("server did not answer /healthz within 60 s")

    def stop_server(self) -> None:
        proc, self.server = self.server, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)

    def server_log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


async def create_customers(env: Env, handles: Sequence[str], parallel: int) -> dict[str, str]:
    """Create the customers with the CLI; the first alone, as it migrates the schema."""
    keys = {handles[0]: await env.create_customer(handles[0])}
    gate = asyncio.Semaphore(parallel)

    async def one(handle: str) -> None:
        async with gate:
            keys[handle] = await env.create_customer(handle)

    await asyncio.gather(*(one(h) for h in handles[1:]))
    return keys


# -- 1. batch provisioning ------------------------------------------------------------


async def post_batch(client: httpx.AsyncClient, key: str, subscription: str, body: bytes) -> float:
    started = time.perf_counter()
    response = await client.post(
        f"{PREFIX}/domains/batch",
        params={"subscriptionHandle": subscription},
        content=body,
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"batch answered {response.status_code}: {response.text[:300]}")
    result = response.json()
    if result["errors"]:
        raise RuntimeError(f"batch had {len(result['errors'])} errors: {result['errors'][0]}")
    return elapsed


async def bench_batch(env: Env, key: str, repeats: int) -> None:
    say(f"\n1. POST /domains/batch, 1000 domains, {repeats} runs (each deprovisioned after)")
    times: list[float] = []
    load = Load(env)
    async with httpx.AsyncClient(base_url=env.base_url, timeout=120) as client:
        for run in range(repeats):
            prefix = f"b{run}"
            times.append(await post_batch(client, key, "default", domain_batch(prefix, 1000)))
            say(f"   run {run + 1}: {ms(times[-1])}")
            names = [{"domain": f"{prefix}-{i:05d}.bench.example"} for i in range(1000)]
            gone = await client.post(
                f"{PREFIX}/domains/batch/deprovision",
                json={"domains": names},
                headers={"X-API-Key": key},
            )
            if gone.status_code != 200 or gone.json()["errors"]:
                raise RuntimeError(f"deprovisioning failed: {gone.status_code} {gone.text[:300]}")
    median = pct(times, 50)
    say(
        f"   first {ms(times[0])}, median {ms(median)}, best {ms(min(times))}, "
        f"worst {ms(max(times))}  (target < {TARGET_BATCH_S:.0f} s: "
        f"{verdict(median < TARGET_BATCH_S)} by the median)"
    )
    say(load.summary())


# -- 2. listing a large account ----------------------------------------------------------


async def bench_list(env: Env, key: str, domains: int, requests: int) -> None:
    batches = domains // 1000
    say(f"\n2. GET /domains?limit=5000 with {batches * 1000} domains")
    async with httpx.AsyncClient(base_url=env.base_url, timeout=300) as client:
        batch_times: list[float] = []
        load = Load(env)
        started = time.perf_counter()
        for n in range(batches):
            body = domain_batch(f"l{n:03d}", 1000)
            batch_times.append(await post_batch(client, key, "default", body))
        total_time = time.perf_counter() - started
        say(
            f"   provisioning {batches} batches of 1000: {total_time:.1f} s "
            f"({batches * 1000 / total_time:.0f} domains/s; per batch median "
            f"{ms(pct(batch_times, 50))}, first {ms(batch_times[0])}, "
            f"last {ms(batch_times[-1])}, worst {ms(max(batch_times))})"
        )
        say(load.summary())
        headers = {"X-API-Key": key}
        load = Load(env)
        for label, offset in (("offset 0", 0), (f"offset {batches * 500}", batches * 500)):
            params = {"limit": 5000, "offset": offset}
            check = await client.get(f"{PREFIX}/domains", params=params, headers=headers)
            page = check.json()  # also the warm-up request for this offset
            if check.status_code != 200 or page["total"] != batches * 1000:
                raise RuntimeError(f"listing answered {check.status_code}: {check.text[:300]}")
            size = len(check.content)
            latencies = []
            for _ in range(requests):
                t0 = time.perf_counter()
                response = await client.get(f"{PREFIX}/domains", params=params, headers=headers)
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    raise RuntimeError(f"listing answered {response.status_code}")
            say(
                f"   {label:>12}: p50 {ms(pct(latencies, 50))}, p95 {ms(pct(latencies, 95))}, "
                f"max {ms(max(latencies))} over {requests} requests "
                f"({len(page['domains'])} domains, {size / 1e6:.1f} MB per answer)"
            )
        say(load.summary())


# -- 3. lookups under concurrency -------------------------------------------------------


@dataclass
class Tally:
    measuring: bool = False
    ok: int = 0
    limited: int = 0
    other: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    latencies: list[float] = field(default_factory=list)

    def record(self, status: int, latency: float) -> None:
        if not self.measuring:
            return
        if status == 200:
            self.ok += 1
            self.latencies.append(latency)
        elif status == 503:
            self.limited += 1
        else:
            self.other[status] = self.other.get(status, 0) + 1


class RawConnection:
    """HTTP/1.1 keep-alive GETs over one asyncio stream: the cheapest client there is."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.key = key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            f"X-API-Key: {self.key}\r\n\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if match is None:
            raise RuntimeError("answer without Content-Length")
        await self.reader.readexactly(int(match.group(1)))
        if re.search(rb"(?i)\r\nconnection:\s*close", head):
            await self.close()
        return status

    async def close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def provision_lookup_domains(env: Env, keys: dict[str, str], per_customer: int) -> None:
    async with httpx.AsyncClient(base_url=env.base_url, timeout=120) as client:
        await asyncio.gather(
            *(
                post_batch(client, key, handle, domain_batch(handle, per_customer))
                for handle, key in keys.items()
            )
        )


def lookup_paths(handle: str, per_customer: int) -> Iterator[str]:
    while True:
        for i in range(per_customer):
            yield f"{PREFIX}/domains/{handle}-{i:05d}.bench.example"


async def bench_lookups(
    env: Env,
    keys: dict[str, str],
    per_customer: int,
    client_kind: str,
    warmup: float,
    duration: float,
) -> None:
    tally = Tally()
    stop = asyncio.Event()

    async def httpx_worker(handle: str, key: str) -> None:
        # One AsyncClient (a pool of one keep-alive connection) per worker: one client
        # shared by 50 workers costs ~6x more client CPU per request (httpcore's pool).
        paths = lookup_paths(handle, per_customer)
        async with httpx.AsyncClient(
            base_url=env.base_url, headers={"X-API-Key": key}, timeout=30
        ) as client:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    response = await client.get(next(paths))
                except httpx.HTTPError:
                    tally.errors += 1
                    continue
                tally.record(response.status_code, time.perf_counter() - t0)

    async def raw_worker(handle: str, key: str) -> None:
        connection = RawConnection(env.port, key)
        paths = lookup_paths(handle, per_customer)
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    status = await connection.get(next(paths))
                except (OSError, asyncio.IncompleteReadError, RuntimeError):
                    tally.errors += 1
                    await connection.close()
                    continue
                tally.record(status, time.perf_counter() - t0)
        finally:
            await connection.close()

    worker = httpx_worker if client_kind == "httpx" else raw_worker
    server_pid = env.server.pid if env.server else 0
    tasks = [asyncio.create_task(worker(h, k)) for h, k in keys.items()]
    try:
        await asyncio.sleep(warmup)
        server_cpu0, client_cpu0 = cpu_seconds(server_pid), time.process_time()
        machine0 = machine_busy_seconds()
        started = time.perf_counter()
        tally.measuring = True
        await asyncio.sleep(duration)
        tally.measuring = False
        elapsed = time.perf_counter() - started
        server_cpu1, client_cpu1 = cpu_seconds(server_pid), time.process_time()
        machine1 = machine_busy_seconds()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    rate = tally.ok / elapsed
    say(
        f"   client {client_kind:>5}: {rate:,.0f} req/s (200 only), "
        f"p50 {ms(pct(tally.latencies, 50))}, p99 {ms(pct(tally.latencies, 99))}; "
        f"answers 200: {tally.ok}, 503: {tally.limited}, other: {tally.other or 0}, "
        f"transport errors: {tally.errors}  (target ≥ {TARGET_LOOKUPS_PER_S:,.0f} req/s: "
        f"{verdict(rate >= TARGET_LOOKUPS_PER_S)})"
    )
    if server_cpu0 is not None and server_cpu1 is not None:
        server_cpu, client_cpu = server_cpu1 - server_cpu0, client_cpu1 - client_cpu0
        others = ""
        if machine0 is not None and machine1 is not None:
            rest = max(0.0, machine1 - machine0 - server_cpu - client_cpu)
            others = f", other processes {rest:.1f} s"
        say(
            f"   {'':>12}  CPU over {elapsed:.1f} s on {os.cpu_count()} cores: server "
            f"{server_cpu:.1f} s, load generator {client_cpu:.1f} s{others}; "
            f"server CPU per 200 {ms(server_cpu / max(tally.ok, 1))}"
        )


# -- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        help="postgresql://… server whose credentials may CREATE DATABASE: a throw-away "
        "database is made beside it and dropped at the end (default: SQLite in a temp dir)",
    )
    parser.add_argument("--redis-url", help="put the rate limiter in Redis (default: in memory)")
    parser.add_argument("--duration", type=float, default=10.0, help="lookup seconds measured")
    parser.add_argument("--warmup", type=float, default=2.0, help="lookup seconds not measured")
    parser.add_argument("--concurrency", type=int, default=50, help="lookup workers = customers")
    parser.add_argument(
        "--client",
        choices=["httpx", "raw", "both"],
        default="both",
        help="lookup client: httpx.AsyncClient per worker, a minimal raw HTTP/1.1 client "
        "(far cheaper, so it leaves more CPU to the server), or both one after the other",
    )
    parser.add_argument("--rate-limit", type=int, default=100, help="requests/s per customer")
    parser.add_argument("--batch-runs", type=int, default=5, help="runs of benchmark 1")
    parser.add_argument("--list-domains", type=int, default=100_000, help="domains for 2")
    parser.add_argument("--list-requests", type=int, default=10, help="requests per offset")
    parser.add_argument("--lookup-domains", type=int, default=20, help="domains per customer")
    parser.add_argument(
        "--only", default="1,2,3", help="comma-separated benchmarks to run (default 1,2,3)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args(argv)
    if args.rate_limit < 1:
        parser.error("the rate limiter must stay on: --rate-limit ≥ 1")
    if not 1 <= args.concurrency <= 1000 or args.list_domains < 1000:
        parser.error("--concurrency must be 1-1000 and --list-domains ≥ 1000")
    if args.database_url and not args.database_url.startswith(("postgresql", "postgres")):
        parser.error("--database-url must be postgresql://…; SQLite is the default")
    return args


async def run(args: argparse.Namespace, env: Env) -> None:
    main_task = asyncio.current_task()
    if main_task is not None:  # SIGTERM: unwind, so that the server is stopped
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    if args.database_url:
        env.database_url, env.drop_database = await throwaway_postgres(
            args.database_url, "mailmoat_bench"
        )
    only = {part.strip() for part in args.only.split(",")}
    handles = ["default"] + (
        [f"bench-{i:02d}" for i in range(args.concurrency)] if "3" in only else []
    )
    say(f"setup: {len(handles)} customers with one key each, by the mailmoat CLI …")
    started = time.perf_counter()
    keys = await create_customers(env, handles, parallel=os.cpu_count() or 2)
    say(f"setup: done in {time.perf_counter() - started:.1f} s")
    env.start_server()
    say(f"server: pid {env.server.pid if env.server else '?'} on {env.base_url}")

    if "1" in only:
        await bench_batch(env, keys["default"], args.batch_runs)
    if "2" in only:
        await bench_list(env, keys["default"], args.list_domains, args.list_requests)
    if "3" in only:
        bench_keys = {h: k for h, k in keys.items() if h != "default"}
        say(
            f"\n3. GET /domains/{{domain}}: {args.concurrency} workers, one customer each, "
            f"rate limit {args.rate_limit}/s per customer, {args.warmup:g} s warm-up, "
            f"{args.duration:g} s measured"
        )
        await provision_lookup_domains(env, bench_keys, args.lookup_domains)
        kinds = ["httpx", "raw"] if args.client == "both" else [args.client]
        for kind in kinds:
            await bench_lookups(
                env, bench_keys, args.lookup_domains, kind, args.warmup, args.duration
            )


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends the bench as Ctrl-C does, so that the server is stopped."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # a cheaper event loop makes a cheaper load generator
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    data_dir = Path(tempfile.mkdtemp(prefix="mailmoat-bench-"))
    env = Env(
        data_dir=data_dir / "var",
        database_url=None,
        rate_limit=args.rate_limit,
        redis_url=args.redis_url,
        log_path=data_dir / "server.log",
    )
    signal.signal(signal.SIGTERM, interrupt)
    say(f"mailmoat API benchmark: {os.cpu_count()} cores, data in {data_dir}")
    status = 0
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            try:
                runner.run(run(args, env))
            finally:
                env.stop_server()
                if env.drop_database is not None:
                    runner.run(env.drop_database())
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted")
        status = 130
    except Exception as exc:
        say(f"benchmark failed: {type(exc).__name__}: {exc}")
        tail = env.server_log_tail()
        if tail:
            say(f"last lines of the server log:\n{tail}")
        status = 1
    finally:
        env.stop_server()
        if args.keep:
            say(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
