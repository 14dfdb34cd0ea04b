"""SMTP throughput of a real ``mailmoat serve``, and of Postfix doing the same job:
accepting mail, and accepting it and delivering it to a local sink (end to end).

Prints figures, asserts nothing (but exits 1 when an acknowledged message never
reached the sink). Run ``.venv/bin/python bench/smtp.py --help``.

Each target gets the same load, one after the other, from the same run: --sessions
concurrent SMTP sessions (default 20) from --clients load-generator processes
(bench/smtp_load.py), each sending --size byte plain-text messages (default 2048)
to one recipient in bench.test, as fast as the replies come, for --warmup seconds
not measured and then --seconds measured. Then the bench waits until the sink has
every message that was answered 250.

Accept figures, over the measured window: messages accepted (250 to the end of
DATA) per second, p50/p99 latency from MAIL FROM to that reply, other replies and
transport errors, and the CPU time of the server, the load generator, the sink and
everything else on the machine. End-to-end figures, over the whole run: N messages
acknowledged (warm-up included) / time from the first send until the sink had all
N; the delivery lag (last 250 to the last of them at the sink); CPU time from the
first send until then, per delivered message; acknowledged messages missing at the
sink (by Message-ID), duplicates, and messages the sink got that were never
acknowledged.

  mailmoat  ``mailmoat serve`` (API, SMTP and delivery worker) with the built-in
            scanner, SPF/DKIM/DMARC checks off (no DNS) and bench.test provisioned
            through the API with the downstream address [127.0.0.1]:SINK.
  postfix   a private Postfix instance (bench/postfix_instance.py) relaying
            bench.test to [127.0.0.1]:SINK: accept into its queue, then relay.
            Only when /usr/sbin/postfix exists and the bench runs as root.
            --postfix-hold: it keeps the mail in its hold queue, relays nothing.
  sink      (only when asked for) the load sent straight to the sink: what the
            sink alone can take, to check it is not the bottleneck.

SINK is a minimal SMTP server in a process of its own (bench/smtp_load.py) that
accepts and discards and logs the Message-ID of each message; one per target. All
traffic stays on 127.0.0.1 and nothing uses the system's DNS resolver: downstream
addresses are IP literals and mailmoat's resolver points at a closed loopback port.
Every server is stopped at the end, also on error or Ctrl-C.
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
from dataclasses import asdict, dataclass, field
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
TARGETS = ("mailmoat", "postfix")  # the default, and the two compared
EXTRA_TARGETS = ("sink",)


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


def listening_sockets(port: int) -> int:
    """How many sockets listen on 127.0.0.1:port (several with SO_REUSEPORT)."""
    wanted = f"0100007F:{port:04X}"
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[1] == wanted and line.split()[3] == "0A")


def wait_for_listeners(port: int, count: int, seconds: float, alive: Callable[[], bool]) -> None:
    """Until ``count`` processes listen on the port: the kernel hands a connection to
    one of the sockets listening when it arrives, and a session keeps its connection
    for --per-connection messages, so a process that starts late gets no work."""
    deadline = time.monotonic() + seconds
    while listening_sockets(port) < count:
        if time.monotonic() > deadline or not alive():
            raise RuntimeError(
                f"{listening_sockets(port)} of {count} SMTP processes listen on {HOST}:{port} "
                f"after {seconds:g} s"
            )
        time.sleep(0.1)


class Skipped(Exception):
    """A target that cannot run here; the reason is printed, the bench goes on."""


# -- servers ------------------------------------------------------------------------


@dataclass
class Arrivals:
    """What the sink's log says: first arrival of each Message-ID, and the rest."""

    first: dict[str, float] = field(default_factory=dict)  # Message-ID -> time.monotonic()
    duplicates: int = 0  # further copies of a Message-ID already received
    without_id: int = 0  # messages with no Message-ID (none of the bench's)


@dataclass
class Sink:
    process: subprocess.Popen[str]
    port: int
    count_file: Path
    ids_file: Path
    impl: str

    def received(self) -> int:
        """Messages received so far (brought up to date every 0.05 s)."""
        try:
            return int(self.count_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def arrivals(self) -> Arrivals:
        found = Arrivals()
        try:
            text = self.ids_file.read_text(encoding="ascii", errors="replace")
        except OSError:
            return found
        for line in text.splitlines():
            when, _, message_id = line.partition(" ")
            if message_id == "-":
                found.without_id += 1
            elif message_id in found.first:
                found.duplicates += 1
            else:
                found.first[message_id] = float(when)
        return found

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid)


@contextlib.contextmanager
def sink(workdir: Path, impl: str) -> Iterator[Sink]:
    """An SMTP server on a free loopback port that accepts everything and discards it."""
    port = free_port()
    count_file = workdir / f"sink-{port}.count"
    ids_file = workdir / f"sink-{port}.ids"
    command = [PYTHON, str(LOAD), "sink", "--port", str(port), "--impl", impl]
    command += ["--count-file", str(count_file), "--ids-file", str(ids_file)]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the SMTP sink did not start")
        yield Sink(process, port, count_file, ids_file, impl)
    finally:
        stop_process(process)


@dataclass
class Target:
    name: str
    port: int
    description: str
    cpu_seconds: Callable[[], float]  # of all the server's processes so far
    log_tail: Callable[[], str] = field(default=lambda: "")
    delivers: bool = True  # relays what it accepts to the sink
    # CPU so far of parts of the server, by name, where that tells something
    cpu_parts: Callable[[], dict[str, float]] = field(default=lambda: {})


@contextlib.contextmanager
def mailmoat_target(workdir: Path, sink_: Sink, args: argparse.Namespace) -> Iterator[Target]:
    """``mailmoat serve`` on free loopback ports, bench.test provisioned by the API,
    delivering to the sink. With --mailmoat-roles split: three ``serve`` processes,
    ``--role api``, ``--role smtp`` and ``--role worker``, to see each one's CPU."""
    split_roles = args.mailmoat_roles == "split"
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
        # Bounces, if any, go to the sink too (not to the sender domain's MX: no DNS),
        # as Postfix's do; the sink counts them as "not acknowledged".
        "MAILMOAT_DSN_RELAY": f"{HOST}:{sink_.port}",
        "MAILMOAT_DOWNSTREAM_ALLOW_PRIVATE": "true",  # the sink listens on loopback
        "COLUMNS": "200",  # the banner's key on one line
    }
    if args.inline_content_max is not None:
        env["MAILMOAT_INLINE_CONTENT_MAX"] = str(args.inline_content_max)
    processes: dict[str, subprocess.Popen[bytes]] = {}  # by role

    def start(role: str) -> subprocess.Popen[bytes]:
        command = [str(MAILMOAT), "serve"]
        if args.mailmoat_cprofile and role in ("all", "worker"):  # not the SMTP processes
            profile = str(Path(args.mailmoat_cprofile).resolve())
            command = [PYTHON, "-m", "cProfile", "-o", profile, "-m", "mailmoat", "serve"]
        if role != "all":
            command += ["--role", role]
        with log_path.open("ab") as log:
            processes[role] = subprocess.Popen(
                command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C on the bench does not hit it mid-cleanup
            )
        return processes[role]

    def alive() -> bool:
        return all(p.poll() is None for p in processes.values())

    def log_tail(lines: int = 30) -> str:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    try:
        first = start("api" if split_roles else "all")
        base_url = f"http://{HOST}:{api_port}"
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=base_url, timeout=10) as client:
            while True:
                if first.poll() is not None:
                    raise RuntimeError(f"mailmoat exited with {first.returncode}")
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
            provision(client, {"X-API-Key": key.group(0)}, sink_.port)
        if split_roles:
            start("smtp")
            start("worker")
        wait_for_smtp(smtp_port, 30, alive)
        wait_for_listeners(smtp_port, args.smtp_processes, 60, alive)

        def cpu_parts() -> dict[str, float]:
            if not split_roles:
                main = tree_cpu_seconds(first.pid, descendants=False)
                return {
                    "serve (API+SMTP+delivery)": main,
                    "extra SMTP": tree_cpu_seconds(first.pid) - main,
                }
            return {role: tree_cpu_seconds(p.pid) for role, p in processes.items()}

        yield Target(
            name="mailmoat",
            port=smtp_port,
            description=(
                "mailmoat serve --role api, --role smtp and --role worker"
                if split_roles
                else "mailmoat serve (API, SMTP, delivery)"
            )
            + ", built-in scanner, auth checks off, SQLite"
            + (
                ""
                if args.inline_content_max is None
                else f", MAILMOAT_INLINE_CONTENT_MAX={args.inline_content_max}"
            ),
            cpu_seconds=lambda: sum(tree_cpu_seconds(p.pid) for p in processes.values()),
            cpu_parts=cpu_parts,
            log_tail=log_tail,
        )
    except (Skipped, RuntimeError) as exc:
        if isinstance(exc, RuntimeError):
            exc.add_note(f"last lines of the mailmoat log:\n{log_tail()}")
        raise
    finally:
        for process in reversed(processes.values()):
            stop_process(process)


def provision(client: httpx.Client, headers: dict[str, str], sink_port: int) -> None:
    """bench.test for customer ``default``, delivered to the sink, and its users."""
    answer = client.post(
        f"{PREFIX}/domains",
        json={"domain": DOMAIN, "subscriptionHandle": "default"},
        headers=headers,
    )
    if answer.status_code not in (200, 201):
        raise RuntimeError(
            f"provisioning {DOMAIN} answered {answer.status_code}: {answer.text[:300]}"
        )
    # Its one downstream server is the sink, an IP literal (no DNS lookup).
    downstream = {"priority": 10, "weight": 10, "port": sink_port, "target": HOST}
    answer = client.put(
        f"{PREFIX}/domains/{DOMAIN}/downstream-address",
        json={"records": [downstream]},
        headers=headers,
    )
    if answer.status_code not in (200, 201) or answer.json().get("records") != [downstream]:
        raise RuntimeError(
            f"setting the downstream address of {DOMAIN} answered "
            f"{answer.status_code}: {answer.text[:300]}"
        )
    # The steady state: the recipients are known users, as after the first mail to
    # each (creating a user on first arrival is a write of its own).
    for address in RECIPIENTS:
        answer = client.put(
            f"{PREFIX}/users",
            params={"email_address": address, "admin": "false"},
            headers=headers,
        )
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"adding user {address} answered {answer.status_code}")


@contextlib.contextmanager
def postfix_target(workdir: Path, sink_: Sink, args: argparse.Namespace) -> Iterator[Target]:
    """A private Postfix instance relaying bench.test to the sink (or holding it)."""
    hold: bool = args.postfix_hold
    reason = postfix_instance.available()
    if reason is not None:
        raise Skipped(reason)
    workdir.chmod(0o755)  # Postfix's services run as user postfix and need to get in
    with postfix_instance.postfix_instance(
        workdir / "postfix", free_port(), sink_.port, DOMAIN, hold=hold
    ) as instance:
        wait_for_smtp(instance.port, 30, lambda: True)
        yield Target(
            name="postfix",
            port=instance.port,
            description=f"Postfix {postfix_instance.version()}, "
            + ("keeping mail in its hold queue" if hold else "relaying to the sink"),
            cpu_seconds=instance.cpu_seconds,
            log_tail=instance.log_tail,
            delivers=not hold,
        )


@contextlib.contextmanager
def sink_target(workdir: Path, sink_: Sink, args: argparse.Namespace) -> Iterator[Target]:
    """The sink itself as the server: what it can take when nothing else runs."""
    yield Target(
        name="sink",
        port=sink_.port,
        description=f"the sink alone ({sink_.impl}), as its own destination",
        cpu_seconds=lambda: 0.0,  # counted as the sink's
    )


Starter = Callable[[Path, Sink, argparse.Namespace], contextlib.AbstractContextManager[Target]]
STARTERS: dict[str, Starter] = {
    "mailmoat": mailmoat_target,
    "postfix": postfix_target,
    "sink": sink_target,
}


# -- load -----------------------------------------------------------------------------


@dataclass
class Delivery:
    """Whether, and when, the messages answered 250 reached the sink."""

    acknowledged: int  # messages answered 250 over the whole run
    delivered: int  # of those, at the sink
    missing: list[str]  # of those, never at the sink: their Message-IDs
    duplicates: int  # further copies the sink received of a message it already had
    unacknowledged: int  # at the sink but never answered 250 (bounces, timed-out sends)
    all_in: float | None  # time.monotonic() when the last acknowledged one arrived
    waited: float  # seconds the bench waited after the load generators ended
    gave_up: bool  # stopped waiting: --drain-timeout seconds without a new arrival


@dataclass
class LoadResult:
    seconds: float
    clients: int
    accepted: int = 0  # in the measured window
    replies: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    connections: int = 0
    relayed: int = 0  # messages the sink received in the window (counted every 0.05 s)
    cpu: dict[str, float] = field(default_factory=dict)  # server, clients, sink, others
    cpu_parts: dict[str, float] = field(default_factory=dict)  # of the server, by part
    # The whole run, from the first send (warm-up included):
    acknowledged: list[str] = field(default_factory=list)  # Message-IDs answered 250
    first_send: float = float("inf")
    last_ack: float = float("-inf")
    delivery: Delivery | None = None  # None: the target does not deliver
    run_cpu: dict[str, float] = field(default_factory=dict)  # until all were at the sink
    run_cpu_parts: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds

    @property
    def end_to_end_seconds(self) -> float | None:
        """From the first send until the sink had every acknowledged message it got."""
        if self.delivery is None or self.delivery.all_in is None:
            return None
        return self.delivery.all_in - self.first_send

    @property
    def end_to_end_rate(self) -> float | None:
        """Messages acknowledged and delivered per second, first send to last arrival."""
        seconds = self.end_to_end_seconds
        if seconds is None or self.delivery is None:
            return None
        return self.delivery.delivered / seconds

    @property
    def lag(self) -> float | None:
        """From the last 250 until the last acknowledged message reached the sink."""
        if self.delivery is None or self.delivery.all_in is None:
            return None
        return self.delivery.all_in - self.last_ack

    def add(self, part: dict[str, Any]) -> None:
        """Add the JSON result of one load generator process."""
        self.accepted += part["accepted"]
        self.connections += part["connections"]
        self.latencies += part["latencies"]
        self.acknowledged += part["acknowledged"]
        if part["first_send"] is not None:
            self.first_send = min(self.first_send, part["first_send"])
        if part["last_ack"] is not None:
            self.last_ack = max(self.last_ack, part["last_ack"])
        for mine, theirs in ((self.replies, part["replies"]), (self.errors, part["errors"])):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count

    def summary(self) -> dict[str, Any]:
        """The figures, as JSON for --json."""
        delivery = asdict(self.delivery) if self.delivery else None
        if delivery is not None:
            delivery["missing_count"] = len(delivery["missing"])
            delivery["missing"] = delivery["missing"][:100]
            delivery.pop("all_in")
        return {
            "accepted_per_second": self.rate,
            "end_to_end_per_second": self.end_to_end_rate,
            "end_to_end_seconds": self.end_to_end_seconds,
            "delivery_lag_seconds": self.lag,
            "p50_ms": pct(self.latencies, 50) * 1000,
            "p99_ms": pct(self.latencies, 99) * 1000,
            "window_seconds": self.seconds,
            "accepted_in_window": self.accepted,
            "acknowledged": len(self.acknowledged),
            "other_replies": self.replies,
            "errors": self.errors,
            "connections": self.connections,
            "relayed_in_window": self.relayed,
            "cpu_window_seconds": self.cpu,
            "cpu_run_seconds": self.run_cpu,
            "server_cpu_parts_window_seconds": self.cpu_parts,
            "server_cpu_parts_run_seconds": self.run_cpu_parts,
            "server_cpu_ms_per_accepted": per_message(self.cpu.get("server"), self.accepted),
            "server_cpu_ms_per_delivered": self.cpu_per_delivered("server"),
            "delivery": delivery,
        }

    def cpu_per_delivered(self, who: str) -> float | None:
        """CPU milliseconds of ``who`` per delivered message, over the whole run."""
        if self.delivery is None or who not in self.run_cpu:
            return None
        return per_message(self.run_cpu[who], self.delivery.delivered)


def per_message(seconds: float | None, messages: int) -> float | None:
    return None if seconds is None or messages == 0 else seconds * 1000 / messages


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def wait_for_delivery(sink_: Sink, acknowledged: list[str], quiet_limit: float) -> Delivery:
    """Wait until the sink has every acknowledged message, or gets nothing new for
    ``quiet_limit`` seconds; then check each acknowledged Message-ID is there."""
    wanted = set(acknowledged)
    started = last_change = time.monotonic()
    seen = -1
    gave_up = False
    while True:
        count = sink_.received()
        now = time.monotonic()
        if count != seen:
            seen, last_change = count, now
            if count >= len(wanted) and wanted <= sink_.arrivals().first.keys():
                break
        elif now - last_change >= quiet_limit:
            gave_up = True
            break
        time.sleep(0.05)
    waited = time.monotonic() - started
    arrivals = sink_.arrivals()
    missing = [m for m in acknowledged if m not in arrivals.first]
    times = [arrivals.first[m] for m in acknowledged if m in arrivals.first]
    delivered = len(acknowledged) - len(missing)
    return Delivery(
        acknowledged=len(acknowledged),
        delivered=delivered,
        missing=missing,
        duplicates=arrivals.duplicates,
        unacknowledged=len(arrivals.first) - delivered + arrivals.without_id,
        all_in=max(times, default=None),
        waited=waited,
        gave_up=gave_up,
    )


def run_load(target: Target, sink_: Sink, args: argparse.Namespace, workdir: Path) -> LoadResult:
    """--sessions sessions in --clients processes: --warmup s, then --seconds measured;
    then, for a target that delivers, wait until the sink has all that was accepted."""
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

        def sample() -> dict[str, float]:
            return {
                "server": target.cpu_seconds(),
                "clients": sum(tree_cpu_seconds(c.pid) for c in clients),
                "sink": sink_.cpu_seconds(),
                "machine": machine_busy_seconds(),
            }

        def difference(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
            cpu = {name: after[name] - before[name] for name in before}
            cpu["others"] = max(0.0, cpu.pop("machine") - sum(cpu.values()))
            return cpu

        def parts(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
            return {name: after[name] - before.get(name, 0.0) for name in after}

        run_before, run_parts_before = sample(), target.cpu_parts()
        t_start = time.monotonic() + args.warmup
        t_end = t_start + args.seconds
        for client in clients:
            assert client.stdin is not None
            client.stdin.write(f"{t_start!r} {t_end!r}\n")
            client.stdin.close()

        time.sleep(max(0.0, t_start - time.monotonic()))
        before, relayed, parts_before = sample(), sink_.received(), target.cpu_parts()
        time.sleep(max(0.0, t_end - time.monotonic()))
        after, parts_after = sample(), target.cpu_parts()
        result = LoadResult(seconds=args.seconds, clients=args.clients)
        result.relayed = sink_.received() - relayed
        result.cpu = difference(after, before)
        result.cpu_parts = parts(parts_after, parts_before)
        client_cpu = 0.0
        for i, client in enumerate(clients):
            if client.wait(timeout=60) != 0:
                raise RuntimeError(f"a load generator failed with {client.returncode}")
            part = json.loads(result_file(i).read_text())
            result.add(part)
            client_cpu += part["cpu_seconds"]
        if target.delivers:
            result.delivery = wait_for_delivery(sink_, result.acknowledged, args.drain_timeout)
            run_after, run_parts_after = sample(), target.cpu_parts()
            run_after["clients"] = run_before["clients"] + client_cpu  # they have ended
            result.run_cpu = difference(run_after, run_before)
            result.run_cpu_parts = parts(run_parts_after, run_parts_before)
        return result
    finally:
        for client in clients:
            stop_process(client, grace=5)


# -- measurements ---------------------------------------------------------------------
# Each takes a started target and its sink and returns a LoadResult; FIGURES says
# what the summary shows of it, side by side for every target.


def measure_accept_and_deliver(
    target: Target, sink_: Sink, args: argparse.Namespace, workdir: Path
) -> LoadResult:
    return run_load(target, sink_, args, workdir)


Measurement = Callable[[Target, Sink, argparse.Namespace, Path], LoadResult]
MEASUREMENTS: dict[str, Measurement] = {
    "accept and deliver": measure_accept_and_deliver,
}


@dataclass(frozen=True)
class Figure:
    label: str
    value: Callable[[LoadResult], float | None]
    fmt: str  # for one value
    ratio: bool = False  # print mailmoat/Postfix
    target: bool = False  # mailmoat/Postfix ≥ 1 is the target
    needs_all: bool = False  # means little if acknowledged messages are missing


FIGURES: list[Figure] = [
    Figure("accepted, msg/s (measured window)", lambda r: r.rate, ",.0f", True, True),
    Figure(
        "end to end, msg/s (first send → all at the sink)",
        lambda r: r.end_to_end_rate,
        ",.0f",
        ratio=True,
        target=True,
        needs_all=True,
    ),
    Figure("delivery lag, s (last 250 → all at the sink)", lambda r: r.lag, ".2f", needs_all=True),
    Figure("p50 accept latency, ms", lambda r: pct(r.latencies, 50) * 1000, ".1f"),
    Figure("p99 accept latency, ms", lambda r: pct(r.latencies, 99) * 1000, ".1f"),
    Figure(
        "server CPU per accepted msg, ms (window)",
        lambda r: per_message(r.cpu["server"], r.accepted),
        ".2f",
        True,
    ),
    Figure(
        "server CPU per delivered msg, ms (whole run)",
        lambda r: r.cpu_per_delivered("server"),
        ".2f",
        True,
    ),
    Figure("sink CPU per delivered msg, ms", lambda r: r.cpu_per_delivered("sink"), ".2f"),
    Figure(
        "other processes' CPU, % of the machine (window)",
        lambda r: r.cpu["others"] / r.seconds / (os.cpu_count() or 1) * 100,
        ".0f",
    ),
    Figure("messages acknowledged (whole run)", lambda r: len(r.acknowledged), ",d"),
    Figure(
        "  of which MISSING at the sink",
        lambda r: len(r.delivery.missing) if r.delivery else None,
        ",d",
    ),
]


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
    if result.cpu_parts:
        say(f"   {'':>8}  server CPU over the window by process: {show_parts(result.cpu_parts)}")
    delivery = result.delivery
    if delivery is None:
        say(f"   {'':>8}  end to end: none, this target does not deliver to the sink")
        return
    seconds = result.end_to_end_seconds
    if seconds is not None and result.end_to_end_rate is not None and result.lag is not None:
        say(
            f"   {'':>8}  end to end: {delivery.delivered:,} of {delivery.acknowledged:,} "
            f"acknowledged messages at the sink {seconds:.1f} s after the first send: "
            f"{result.end_to_end_rate:,.0f} msg/s; delivery lag {result.lag:.2f} s "
            f"(sink: {delivery.duplicates} duplicates, {delivery.unacknowledged} never "
            "acknowledged)"
        )
        run = result.run_cpu
        say(
            f"   {'':>8}  CPU from the first send until then: server {run['server']:.1f} s "
            f"({run['server'] * 1000 / max(delivery.delivered, 1):.2f} ms per delivered "
            f"message), load generator {run['clients']:.1f} s, sink {run['sink']:.1f} s "
            f"({run['sink'] * 1000 / max(delivery.delivered, 1):.2f} ms per message), "
            f"other processes {run['others']:.1f} s"
        )
        if result.run_cpu_parts:
            say(f"   {'':>8}  server CPU until then by process: {show_parts(result.run_cpu_parts)}")
    if delivery.missing:
        shown = ", ".join(f"<{m}>" for m in delivery.missing[:5])
        say(
            f"   !!! {name}: {len(delivery.missing):,} of {delivery.acknowledged:,} "
            "ACKNOWLEDGED MESSAGES NEVER REACHED THE SINK (the bench waited "
            f"{delivery.waited:.0f} s after the load, until nothing new had arrived for "
            f"--drain-timeout seconds): {shown}" + (" …" if len(delivery.missing) > 5 else "")
        )


def show_parts(parts: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in parts.items())


def summarize(results: dict[str, LoadResult]) -> None:
    """One table: every figure for every target, and mailmoat/Postfix."""
    names = list(results)
    both = "mailmoat" in results and "postfix" in results
    width = max(len(f.label) for f in FIGURES) + 2
    header = f"{'':<{width}}" + "".join(f"{n:>12}" for n in names)
    if both:
        header += "   mailmoat/Postfix"
    say(header)
    for figure in FIGURES:
        values = [figure.value(results[n]) for n in names]
        line = f"{figure.label:<{width}}" + "".join(
            f"{'—' if v is None or v != v else format(v, figure.fmt):>12}" for v in values
        )
        if both and figure.ratio:
            mine, theirs = figure.value(results["mailmoat"]), figure.value(results["postfix"])
            if mine is not None and theirs:
                line += f"   {mine / theirs:>8.2f}"
                if figure.target:
                    line += "  (target ≥ 1.00: " + ("met)" if mine >= theirs else "MISSED)")
            else:
                line += f"   {'—':>8}"
        if figure.needs_all and any(r.delivery and r.delivery.missing for r in results.values()):
            line += "  (MESSAGES MISSING: only those delivered are counted)"
        say(line)
    if not both:
        missing = [t for t in TARGETS if t not in results]
        say(f"no ratio: no figure for {' and '.join(missing)}")


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
        "--targets",
        default=",".join(TARGETS),
        help="comma-separated, of: mailmoat, postfix, sink (the sink alone)",
    )
    parser.add_argument(
        "--postfix-hold",
        action="store_true",
        help="Postfix keeps accepted mail in its hold queue instead of relaying it: its "
        "accept figure without the cost of relaying (no end-to-end figure then)",
    )
    parser.add_argument(
        "--smtp-processes",
        type=int,
        default=os.cpu_count() or 1,
        help="mailmoat's MAILMOAT_SMTP_PROCESSES (default: one per core, as Postfix runs"
        " one smtpd per session)",
    )
    parser.add_argument(
        "--inline-content-max",
        type=int,
        default=None,
        help="mailmoat's MAILMOAT_INLINE_CONTENT_MAX (default: mailmoat's, 128 KiB); 0 keeps"
        " every message in a spool file, to compare the two ways of keeping mail",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="after the load, stop waiting for delivery when the sink has got nothing new "
        "for this many seconds (then acknowledged messages not there are reported missing)",
    )
    parser.add_argument(
        "--sink",
        choices=("fast", "aiosmtpd"),
        default="fast",
        help="the sink's SMTP server: a minimal asyncio one (default) or aiosmtpd",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    parser.add_argument(
        "--mailmoat-roles",
        choices=("one", "split"),
        default="one",
        help="one: a single `mailmoat serve` (API, SMTP, delivery; the default, as "
        "deployed on one node); split: `serve --role api`, `--role smtp` and `--role "
        "worker` as separate processes, to see the CPU of each role",
    )
    parser.add_argument(
        "--mailmoat-cprofile",
        metavar="FILE",
        help="run mailmoat's serving process (API, SMTP, delivery; not the extra SMTP "
        "processes), or with --mailmoat-roles split its worker, under cProfile and write "
        "the profile to FILE: slows it down, for finding where the time goes",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not set(args.targets) <= set(TARGETS + EXTRA_TARGETS) or not args.targets:
        parser.error(f"--targets takes a list of: {', '.join(TARGETS + EXTRA_TARGETS)}")
    if not 1 <= args.clients <= args.sessions:
        parser.error("--clients must be between 1 and --sessions")
    if args.size < 1024 or args.seconds <= 0 or args.warmup < 0 or args.per_connection < 1:
        parser.error("--size ≥ 1024, --seconds > 0, --warmup ≥ 0, --per-connection ≥ 1")
    if args.drain_timeout <= 0:
        parser.error("--drain-timeout > 0")
    return args


def run(args: argparse.Namespace, workdir: Path) -> bool:
    """Measure every target and print the figures; False when a target failed or an
    acknowledged message never reached the sink."""
    ok = True
    results: dict[str, dict[str, LoadResult]] = {name: {} for name in MEASUREMENTS}
    for name in args.targets:
        try:
            with (
                sink(workdir, args.sink) as sink_,
                STARTERS[name](workdir, sink_, args) as target,
            ):
                say(f"\n{name}: {target.description}, SMTP on {HOST}:{target.port}")
                for measurement, measure in MEASUREMENTS.items():
                    result = measure(target, sink_, args, workdir)
                    results[measurement][name] = result
                    report(name, result)
                    if result.delivery is not None and result.delivery.missing:
                        ok = False
        except Skipped as exc:
            say(f"\n{name}: skipped, {exc}")
        except RuntimeError as exc:  # the other target still gets measured
            say(f"\n{name}: FAILED, {exc}")
            for note in getattr(exc, "__notes__", []):
                say(note)
            ok = False
    for measurement, by_target in results.items():
        say(
            f"\n{measurement}: from this one run, same load ({args.sessions} sessions, "
            f"{args.size}-byte messages, {args.warmup:g} s warm-up + {args.seconds:g} s)"
        )
        summarize(by_target)
    if args.json:
        figures = {
            measurement: {name: result.summary() for name, result in by_target.items()}
            for measurement, by_target in results.items()
        }
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        Path(args.json).write_text(json.dumps({"args": settings, "results": figures}, indent=1))
        say(f"figures written to {args.json}")
    missing = [
        f"{name}: {len(r.delivery.missing)}"
        for by_target in results.values()
        for name, r in by_target.items()
        if r.delivery is not None and r.delivery.missing
    ]
    if missing:
        say(f"\n!!! ACKNOWLEDGED MESSAGES MISSING AT THE SINK: {', '.join(missing)}")
    return ok


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends the bench as Ctrl-C does, so that every server is stopped."""
    raise KeyboardInterrupt


def mount_of(path: Path) -> tuple[str, str]:
    """The file system type and source (device) of the mount holding ``path``."""
    best = ("", "", "")
    resolved = str(path.resolve())
    with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            point = fields[4].replace("\\040", " ")
            rest = fields[fields.index("-") + 1 :]
            inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best[0]):
                best = (point, rest[0], rest[1])
    return best[1], best[2]


def file_system_warning(workdir: Path) -> str | None:
    """A warning when the work directory is on ext4 without a journal. There, the
    kernel avoids reusing an inode freed in the last one to five minutes, and finds
    one by a linear scan: with many files deleted recently (by Postfix's queue,
    another run's clean-up, a package install) creating a file costs up to a
    millisecond of CPU, so both targets' figures depend on what ran before."""
    try:
        fs_type, source = mount_of(workdir)
    except (OSError, ValueError, IndexError):
        return None
    if fs_type != "ext4" or not source.startswith("/dev/"):
        return None
    device = source.removeprefix("/dev/").replace("/", "!")
    journals = Path("/proc/fs/jbd2")
    if journals.is_dir() and any(j.name.startswith(f"{device}-") for j in journals.iterdir()):
        return None
    return (
        f"warning: {workdir.parent} is on ext4 without a journal ({source}): creating files "
        "there gets slow after many deletions, and the figures depend on what ran in the "
        "last minutes; set TMPDIR to a journaled file system (see bench/README.md)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mailmoat-bench-smtp-"))
    signal.signal(signal.SIGTERM, interrupt)
    say(
        f"mailmoat SMTP benchmark: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"data in {workdir}"
    )
    warning = file_system_warning(workdir)
    if warning:
        say(warning)
    say(
        f"load: {args.sessions} sessions from {args.clients} client process(es), "
        f"{args.size}-byte messages, {args.per_connection} per connection, "
        f"{args.warmup:g} s warm-up, {args.seconds:g} s measured per target, then waiting "
        f"for delivery to the sink ({args.sink})"
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
