"""SMTP accept throughput of a real ``mailmoat serve``, and of Postfix doing the same job.

Prints figures, asserts nothing. Run ``.venv/bin/python bench/smtp.py --help``.

Each target gets the same load, one after the other, from the same run: --sessions
concurrent SMTP sessions (default 20) from --clients load-generator processes
(bench/smtp_load.py), each sending --size byte plain-text messages (default 2048)
to one recipient in bench.test, as fast as the replies come, for --warmup seconds
not measured and then --seconds measured. Figures: messages accepted (250 to the
end of DATA) per second, p50/p99 latency from MAIL FROM to that reply, other
replies and transport errors, and the CPU time of the server, the load generator,
the sink and everything else on the machine over the measured window.

  mailmoat  ``mailmoat serve`` with the built-in scanner, SPF/DKIM/DMARC checks off
            (no DNS) and bench.test provisioned through the API with a downstream
            of [127.0.0.1]:SINK.
  postfix   a private Postfix instance (bench/postfix_instance.py) relaying
            bench.test to [127.0.0.1]:SINK: accept into its queue, then relay.
            Only when /usr/sbin/postfix exists and the bench runs as root.
            --postfix-hold: it keeps the mail in its hold queue, relays nothing.

SINK is an aiosmtpd server in a process of its own that accepts and discards. All
traffic stays on 127.0.0.1 and nothing uses the system's DNS resolver. Every
server is stopped at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import postfix_instance
from postfix_instance import tree_cpu_seconds
from smtp_load import RECIPIENTS

PYTHON = sys.executable
MAILMOAT = Path(sys.executable).parent / "mailmoat"
LOAD = Path(__file__).resolve().parent / "smtp_load.py"
HOST = "127.0.0.1"
DOMAIN = "bench.test"
PREFIX = "/inbound/v1"
KEY_RE = re.compile(r"mm_[A-Za-z0-9_-]{20,}")
TARGETS = ("mailmoat", "postfix")


# -- small helpers ---------------------------------------------------------------


def say(text: str = "") -> None:
    print(text, flush=True)


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of values; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def machine_busy_seconds() -> float:
    """CPU time spent by the whole machine, all processes (Linux /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    idle = int(fields[3]) + int(fields[4])  # idle + iowait
    return (sum(int(f) for f in fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def stop_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = 15) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


def smtp_banner(port: int, timeout: float = 2) -> str | None:
    """The greeting of an SMTP server on 127.0.0.1:port, or None when there is none."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            banner = sock.recv(512).decode(errors="replace").strip()
            with contextlib.suppress(OSError):
                sock.sendall(b"QUIT\r\n")
            return banner or None
    except OSError:
        return None


def wait_for_smtp(port: int, seconds: float, alive: Callable[[], bool]) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and alive():
        banner = smtp_banner(port)
        if banner is not None:
            if not banner.startswith("220"):
                raise RuntimeError(f"SMTP server on port {port} greets with {banner!r}")
            return banner
        time.sleep(0.2)
    raise RuntimeError(f"no SMTP server on {HOST}:{port} within {seconds:g} s")


class Skipped(Exception):
    """A target that cannot run here; the reason is printed, the bench goes on."""


# -- servers ------------------------------------------------------------------------


@dataclass
class Sink:
    process: subprocess.Popen[str]
    port: int
    count_file: Path

    def received(self) -> int:
        try:
            return int(self.count_file.read_text())
        except (OSError, ValueError):
            return 0

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid)


@contextlib.contextmanager
def sink(workdir: Path) -> Iterator[Sink]:
    """An SMTP server on a free loopback port that accepts everything and discards it."""
    port = free_port()
    count_file = workdir / f"sink-{port}.count"
    process = subprocess.Popen(
        [PYTHON, str(LOAD), "sink", "--port", str(port), "--count-file", str(count_file)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the SMTP sink did not start")
        yield Sink(process, port, count_file)
    finally:
        stop_process(process)


@dataclass
class Target:
    name: str
    port: int
    description: str
    cpu_seconds: Callable[[], float]  # of all the server's processes so far
    log_tail: Callable[[], str] = field(default=lambda: "")


@contextlib.contextmanager
def mailmoat_target(workdir: Path, sink_port: int, args: argparse.Namespace) -> Iterator[Target]:
    """``mailmoat serve`` on free loopback ports, bench.test provisioned by the API."""
    api_port, smtp_port = free_port(), free_port()
    log_path = workdir / "mailmoat.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILMOAT_")}
    env |= {
        "MAILMOAT_DATA_DIR": str(workdir / "mailmoat-data"),
        "MAILMOAT_API_LISTEN": f"{HOST}:{api_port}",
        "MAILMOAT_SMTP_LISTEN": f"{HOST}:{smtp_port}",
        "MAILMOAT_SMTP_HOSTNAME": "mailmoat.bench.localdomain",  # not socket.getfqdn()
        "MAILMOAT_AUTH_CHECKS": "false",  # no SPF/DKIM/DMARC: no DNS
        "MAILMOAT_DNS_SERVERS": f"{HOST}:{free_port()}",  # nobody answers: no DNS leaves
        "MAILMOAT_SCANNER": "builtin",
        "MAILMOAT_RATE_LIMIT": "0",
        "MAILMOAT_LOG_LEVEL": "warning",
        "MAILMOAT_SMTP_PROCESSES": str(args.smtp_processes),
        "COLUMNS": "200",  # the banner's key on one line
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(MAILMOAT), "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C on the bench does not hit it mid-cleanup
        )

    def log_tail(lines: int = 30) -> str:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    try:
        base_url = f"http://{HOST}:{api_port}"
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=base_url, timeout=10) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"mailmoat exited with {process.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError("mailmoat did not answer /healthz within 60 s")
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/healthz").status_code == 200:
                        break
                time.sleep(0.1)
            output = log_path.read_text(errors="replace")
            if "not served yet" in output:
                raise Skipped("this version of mailmoat does not serve SMTP yet")
            key = KEY_RE.search(output)
            if key is None:
                raise RuntimeError("no API key in the output of the first start")
            downstream = {"priority": 10, "weight": 10, "port": sink_port, "target": HOST}
            answer = client.post(
                f"{PREFIX}/domains",
                json={
                    "domain": DOMAIN,
                    "subscriptionHandle": "default",
                    "downstreamAddresses": [downstream],
                },
                headers={"X-API-Key": key.group(0)},
            )
            if answer.status_code not in (200, 201):
                raise RuntimeError(
                    f"provisioning {DOMAIN} answered {answer.status_code}: {answer.text[:300]}"
                )
            # The steady state: the recipients are known users, as after the first
            # mail to each (creating a user on first arrival is a write of its own).
            for address in RECIPIENTS:
                answer = client.put(
                    f"{PREFIX}/users",
                    params={"email_address": address, "admin": "false"},
                    headers={"X-API-Key": key.group(0)},
                )
                if answer.status_code not in (200, 201):
                    raise RuntimeError(f"adding user {address} answered {answer.status_code}")
        wait_for_smtp(smtp_port, 30, lambda: process.poll() is None)
        yield Target(
            name="mailmoat",
            port=smtp_port,
            description="mailmoat serve, built-in scanner, auth checks off, SQLite",
            cpu_seconds=lambda: tree_cpu_seconds(process.pid),
            log_tail=log_tail,
        )
    except (Skipped, RuntimeError) as exc:
        if isinstance(exc, RuntimeError):
            exc.add_note(f"last lines of the mailmoat log:\n{log_tail()}")
        raise
    finally:
        stop_process(process)


@contextlib.contextmanager
def postfix_target(workdir: Path, sink_port: int, args: argparse.Namespace) -> Iterator[Target]:
    """A private Postfix instance relaying bench.test to the sink (or holding it)."""
    hold: bool = args.postfix_hold
    reason = postfix_instance.available()
    if reason is not None:
        raise Skipped(reason)
    workdir.chmod(0o755)  # Postfix's services run as user postfix and need to get in
    with postfix_instance.postfix_instance(
        workdir / "postfix", free_port(), sink_port, DOMAIN, hold=hold
    ) as instance:
        wait_for_smtp(instance.port, 30, lambda: True)
        yield Target(
            name="postfix",
            port=instance.port,
            description=f"Postfix {postfix_instance.version()}, "
            + ("keeping mail in its hold queue" if hold else "relaying to the sink"),
            cpu_seconds=instance.cpu_seconds,
            log_tail=instance.log_tail,
        )


Starter = Callable[[Path, int, argparse.Namespace], contextlib.AbstractContextManager[Target]]
STARTERS: dict[str, Starter] = {
    "mailmoat": mailmoat_target,
    "postfix": postfix_target,
}


# -- load -----------------------------------------------------------------------------


@dataclass
class LoadResult:
    seconds: float
    clients: int
    accepted: int = 0
    replies: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    connections: int = 0
    relayed: int = 0  # messages the sink received in the window (counted every 0.2 s)
    cpu: dict[str, float] = field(default_factory=dict)  # server, clients, sink, others

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds

    def add(self, part: dict[str, Any]) -> None:
        """Add the JSON result of one load generator process."""
        self.accepted += part["accepted"]
        self.connections += part["connections"]
        self.latencies += part["latencies"]
        for mine, theirs in ((self.replies, part["replies"]), (self.errors, part["errors"])):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_load(target: Target, sink_: Sink, args: argparse.Namespace, workdir: Path) -> LoadResult:
    """--sessions sessions in --clients processes: --warmup s, then --seconds measured."""
    clients: list[subprocess.Popen[str]] = []

    def result_file(i: int) -> Path:
        return workdir / f"{target.name}-client-{i}.json"

    try:
        for i, sessions in enumerate(split(args.sessions, args.clients)):
            command = [PYTHON, str(LOAD), "client", "--port", str(target.port)]
            command += ["--sessions", str(sessions), "--size", str(args.size)]
            command += ["--per-connection", str(args.per_connection), "--domain", DOMAIN]
            command += ["--tag", f"{target.name[0]}{i}", "--result", str(result_file(i))]
            clients.append(
                subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    start_new_session=True,  # Ctrl-C reaches the bench only; it stops them
                )
            )
        for client in clients:
            assert client.stdout is not None
            if client.stdout.readline().strip() != "ready":
                raise RuntimeError("a load generator did not start")
        t_start = time.monotonic() + args.warmup
        t_end = t_start + args.seconds
        for client in clients:
            assert client.stdin is not None
            client.stdin.write(f"{t_start!r} {t_end!r}\n")
            client.stdin.close()

        def sample() -> dict[str, float]:
            return {
                "server": target.cpu_seconds(),
                "clients": sum(tree_cpu_seconds(c.pid) for c in clients),
                "sink": sink_.cpu_seconds(),
                "machine": machine_busy_seconds(),
            }

        time.sleep(max(0.0, t_start - time.monotonic()))
        before, relayed = sample(), sink_.received()
        time.sleep(max(0.0, t_end - time.monotonic()))
        after = sample()
        result = LoadResult(seconds=args.seconds, clients=args.clients)
        result.relayed = sink_.received() - relayed
        result.cpu = {name: after[name] - before[name] for name in before}
        result.cpu["others"] = max(0.0, result.cpu.pop("machine") - sum(result.cpu.values()))
        for i, client in enumerate(clients):
            if client.wait(timeout=60) != 0:
                raise RuntimeError(f"a load generator failed with {client.returncode}")
            result.add(json.loads(result_file(i).read_text()))
        return result
    finally:
        for client in clients:
            stop_process(client, grace=5)


# -- measurements ---------------------------------------------------------------------
# Each takes a started target and its sink and returns what to print. A later
# end-to-end measurement (mail delivered to the sink) goes beside "accept".


def measure_accept(
    target: Target, sink_: Sink, args: argparse.Namespace, workdir: Path
) -> LoadResult:
    return run_load(target, sink_, args, workdir)


Measurement = Callable[[Target, Sink, argparse.Namespace, Path], LoadResult]
MEASUREMENTS: dict[str, Measurement] = {
    "accept": measure_accept,
}


def report(name: str, result: LoadResult) -> None:
    cores = os.cpu_count() or 1
    cpu = result.cpu
    client_load = cpu["clients"] / result.seconds / result.clients  # of one core each
    other = ", ".join(f"{k}: {v}" for k, v in sorted(result.replies.items())) or "none"
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(result.errors.items())) or "none"
    say(
        f"   {name:>8}: {result.rate:,.0f} msg/s accepted, "
        f"p50 {pct(result.latencies, 50) * 1000:.1f} ms, "
        f"p99 {pct(result.latencies, 99) * 1000:.1f} ms "
        f"({result.accepted} accepted; other replies: {other}; errors: {errors}; "
        f"{result.connections} connections; {result.relayed / result.seconds:,.0f} msg/s "
        "relayed to the sink meanwhile)"
    )
    say(
        f"   {'':>8}  CPU over {result.seconds:g} s on {cores} cores: "
        f"server {cpu['server']:.1f} s "
        f"({cpu['server'] * 1000 / max(result.accepted, 1):.2f} ms per message), "
        f"load generator {cpu['clients']:.1f} s "
        f"({client_load:.0%} of a core per client process), "
        f"sink {cpu['sink']:.1f} s, other processes {cpu['others']:.1f} s"
    )
    if client_load > 0.9:
        say(f"   {'':>8}  (a load generator was near 100% of a core: the figure is its own)")


# -- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20, help="concurrent SMTP sessions")
    parser.add_argument("--clients", type=int, default=1, help="load generator processes")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds not measured")
    parser.add_argument("--size", type=int, default=2048, help="bytes per message")
    parser.add_argument(
        "--per-connection", type=int, default=100, help="messages per SMTP connection"
    )
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help="comma-separated, of: mailmoat, postfix"
    )
    parser.add_argument(
        "--postfix-hold",
        action="store_true",
        help="Postfix keeps accepted mail in its hold queue instead of relaying it: the "
        "like-for-like accept figure while mailmoat has no delivery workers",
    )
    parser.add_argument(
        "--smtp-processes",
        type=int,
        default=os.cpu_count() or 1,
        help="mailmoat's MAILMOAT_SMTP_PROCESSES (default: one per core, as Postfix runs"
        " one smtpd per session)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not set(args.targets) <= set(TARGETS) or not args.targets:
        parser.error(f"--targets takes a list of: {', '.join(TARGETS)}")
    if not 1 <= args.clients <= args.sessions:
        parser.error("--clients must be between 1 and --sessions")
    if args.size < 1024 or args.seconds <= 0 or args.warmup < 0 or args.per_connection < 1:
        parser.error("--size ≥ 1024, --seconds > 0, --warmup ≥ 0, --per-connection ≥ 1")
    return args


def run(args: argparse.Namespace, workdir: Path) -> bool:
    """Measure every target and print the figures; False when a target failed."""
    failed = False
    results: dict[str, dict[str, LoadResult]] = {name: {} for name in MEASUREMENTS}
    for name in args.targets:
        try:
            with sink(workdir) as sink_, STARTERS[name](workdir, sink_.port, args) as target:
                say(f"\n{name}: {target.description}, SMTP on {HOST}:{target.port}")
                for measurement, measure in MEASUREMENTS.items():
                    result = measure(target, sink_, args, workdir)
                    results[measurement][name] = result
                    report(name, result)
        except Skipped as exc:
            say(f"\n{name}: skipped, {exc}")
        except RuntimeError as exc:  # the other target still gets measured
            say(f"\n{name}: FAILED, {exc}")
            for note in getattr(exc, "__notes__", []):
                say(note)
            failed = True
    for measurement, by_target in results.items():
        say(f"\n{measurement}: messages accepted per second, from this one run")
        for name, result in by_target.items():
            say(f"   {name:>8}: {result.rate:,.0f} msg/s")
        if "mailmoat" in by_target and "postfix" in by_target:
            ratio = by_target["mailmoat"].rate / max(by_target["postfix"].rate, 1e-9)
            verdict = "target met" if ratio >= 1 else "TARGET MISSED"
            say(f"   mailmoat/Postfix = {ratio:.2f}  (target ≥ 1.00: {verdict})")
        else:
            missing = [t for t in TARGETS if t not in by_target]
            say(f"   no ratio: no figure for {' and '.join(missing)}")
    return not failed


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends the bench as Ctrl-C does, so that every server is stopped."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mailmoat-bench-smtp-"))
    signal.signal(signal.SIGTERM, interrupt)
    say(
        f"mailmoat SMTP benchmark: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"data in {workdir}"
    )
    say(
        f"load: {args.sessions} sessions from {args.clients} client process(es), "
        f"{args.size}-byte messages, {args.per_connection} per connection, "
        f"{args.warmup:g} s warm-up, {args.seconds:g} s measured per target"
    )
    status = 0
    try:
        status = 0 if run(args, workdir) else 1
    except KeyboardInterrupt:
        say("interrupted")
        status = 130
    except Exception as exc:
        say(f"benchmark failed: {type(exc).__name__}: {exc}")
        for note in getattr(exc, "__notes__", []):
            say(note)
        status = 1
    finally:
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
