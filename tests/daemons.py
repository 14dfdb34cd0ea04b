"""Real spamd and rspamd daemons on loopback ports, started once per test run.

Both run offline: spamd with ``--local`` (no DNS or network tests), rspamd with
its network modules disabled and its resolver pointed at a closed loopback port.
The tests that use them skip only when the daemon's binary is not installed; a
daemon that is installed but does not start fails them, with its log.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

START_TIMEOUT = 60.0
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binary(name: str) -> str:
    path = shutil.which(name, path=SBIN_PATH)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package: see tests/daemons.py)")
    return path


def unprivileged() -> tuple[str, str] | None:
    """The user and group to drop to when the tests run as root (both daemons insist)."""
    if os.geteuid() != 0:
        return None
    user = pwd.getpwnam("nobody")
    return user.pw_name, grp.getgrgid(user.pw_gid).gr_name


def scratch_dir(prefix: str) -> Path:
    # Not under pytest's tmp_path: its parents are private to the test user, and
    # the daemons run as nobody when the tests run as root.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o777)
    return path


def start(command: list[str], log_path: Path, ready: Callable[[], bool]) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if ready():
                return process
        except OSError:
            pass
        time.sleep(0.2)
    stop(process)
    tail = log_path.read_text(errors="replace")[-4000:]
    pytest.fail(f"{command[0]} did not start (exit {process.returncode}):\n{tail}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a daemon we started, and the workers it forked (its own process group)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError):  # workers that outlived their parent
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def spamd_port() -> Iterator[int]:
    """A SpamAssassin spamd on 127.0.0.1 using only the rules the package ships."""
    spamd = binary("spamd")
    port = free_port()
    home = scratch_dir("mailmoat-spamd-")
    command = [
        spamd,
        f"--listen=127.0.0.1:{port}",
        "--allowed-ips=127.0.0.1",
        "--local",  # no DNS blocklists, no network tests of any kind
        "--nouser-config",
        "--max-children=1",
        "--min-children=1",
        f"--helper-home-dir={home}",
        f"--pidfile={home / 'spamd.pid'}",
        "--syslog=stderr",
        "--cf=use_bayes 0",  # no learning between tests: results stay the same
        "--cf=bayes_auto_learn 0",
    ]
    drop = unprivileged()
    if drop is not None:
        command += [f"--username={drop[0]}", f"--groupname={drop[1]}"]

    def ready() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING SPAMC/1.5\r\n\r\n")
            return b"PONG" in sock.recv(100)

    process = start(command, home / "spamd.log", ready)
    yield port
    stop(process)
    shutil.rmtree(home, ignore_errors=True)


# Modules that would look things up on the network (DNS lists, SPF/DKIM/DMARC,
# fuzzy hashes, remote maps) or need Redis.
RSPAMD_OFF = [
    *("arc", "asn", "dkim", "dkim_signing", "dmarc", "emails", "fuzzy_check", "greylist"),
    *("hfilter", "history_redis", "mid", "mime_types", "multimap", "neural", "phishing"),
    *("ratelimit", "rbl", "replies", "reputation", "rspamd_update", "spf", "surbl"),
    *("url_redirector", "whitelist"),
]

RSPAMD_CONF = """\
.include "$CONFDIR/common.conf"
options {
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}
logging { type = "console"; level = "notice"; }
worker "normal" {
    bind_socket = "127.0.0.1:%(port)d";
    count = 1;
    .include "$CONFDIR/worker-normal.inc"
}
"""

RSPAMD_OPTIONS = """\
# Queries go to a closed loopback port and fail at once: nothing leaves the host.
dns { nameserver = ["127.0.0.1:9"]; timeout = 0.1s; retransmits = 1; }
# The full public suffix list takes rspamd ~15 s to compile at every start.
url_tld = "%(tld)s";
disable_hyperscan = true;
"""


@pytest.fixture(scope="session")
def rspamd_url() -> Iterator[str]:
    """rspamd's normal worker on 127.0.0.1, configured in a scratch directory.

    The stock rules under /etc/rspamd are used; only the top-level file, the
    options and the module switches come from the scratch directory.
    """
    rspamd = binary("rspamd")
    port = free_port()
    root = scratch_dir("mailmoat-rspamd-")
    (root / "local.d").mkdir()
    for name in ("db", "run"):
        (root / name).mkdir()
        (root / name).chmod(0o777)
    (root / "tld.dat").write_text("com\norg\nnet\nexample\ntest\ninvalid\n")
    (root / "rspamd.conf").write_text(RSPAMD_CONF % {"port": port})
    (root / "local.d" / "options.inc").write_text(RSPAMD_OPTIONS % {"tld": root / "tld.dat"})
    for module in RSPAMD_OFF:
        (root / "local.d" / f"{module}.conf").write_text("enabled = false;\n")
    command = [
        rspamd,
        "--no-fork",
        "--config",
        str(root / "rspamd.conf"),
        f"--var=LOCAL_CONFDIR={root}",
        f"--var=DBDIR={root / 'db'}",
        f"--var=RUNDIR={root / 'run'}",
        f"--var=LOGDIR={root}",
    ]
    drop = unprivileged()
    if drop is not None:
        command += ["--user", drop[0], "--group", drop[1]]

    def ready() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
            return b"pong" in sock.recv(1000)

    process = start(command, root / "rspamd.log", ready)
    yield f"http://127.0.0.1:{port}"
    stop(process)
    shutil.rmtree(root, ignore_errors=True)
