"""A private, throw-away Postfix instance that relays one domain to a loopback sink.

Used by ``bench/smtp.py`` as the reference MTA. The instance lives entirely in a
directory of its own (configuration, queue, data, log), so the system's Postfix
(/etc/postfix, /var/spool/postfix) is neither read for settings nor touched. It
listens on 127.0.0.1 only, looks nothing up in DNS, and every transport points at
``[127.0.0.1]:SINK``: nothing it accepts can leave the machine.

Needs root (as Postfix itself does) and the ``postfix`` user and ``postdrop`` group
of a packaged Postfix.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

POSTFIX = Path("/usr/sbin/postfix")
POSTCONF = Path("/usr/sbin/postconf")
HOST = "127.0.0.1"

# master.cf.proto of Postfix 3.x without chroot (a private instance has no chroot
# jail set up) and without the pipe transports. Columns: service type private
# unpriv chroot wakeup maxproc command.
MASTER_CF = """\
{host}:{port} inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
proxywrite unix  - - n -  1 proxymap
smtp       unix  - - n -  - smtp
relay      unix  - - n -  - smtp
showq      unix  n - n -  - showq
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-bench
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
myhostname = postfix.bench.localdomain
mydomain = bench.localdomain
myorigin = $myhostname
mydestination =
inet_interfaces = {host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {domain}
smtpd_banner = $myhostname ESMTP
smtpd_peername_lookup = no
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = {hold}permit_mynetworks, reject_unauth_destination
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
relayhost = [{host}]:{sink}
relay_transport = relay:[{host}]:{sink}
default_transport = smtp:[{host}]:{sink}
local_transport = error:5.1.1 local delivery is off in this bench instance
virtual_transport = error:5.1.1 virtual delivery is off in this bench instance
alias_maps =
alias_database =
local_recipient_maps =
notify_classes =
biff = no
append_dot_mydomain = no
smtputf8_enable = no
"""


def _process_table() -> tuple[dict[int, int], dict[int, int]]:
    """Parent and CPU ticks (own user+system time and that of its reaped children)
    of every process, from /proc."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return parents, ticks


def tree_cpu_seconds(root_pid: int, *, descendants: bool = True) -> float:
    """CPU time of a process, its reaped children and (unless ``descendants`` is
    False) its live descendants (/proc)."""
    parents, ticks = _process_table()
    if root_pid not in ticks:
        return 0.0
    total = ticks[root_pid]
    stack = [root_pid] if descendants else []
    while stack:
        parent = stack.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid != root_pid:
                total += ticks[pid]
                stack.append(pid)
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class PostfixInstance:
    root: Path
    port: int
    sink_port: int
    domain: str
    hold: bool = False  # keep accepted mail in the hold queue instead of relaying it

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def queue_dir(self) -> Path:
        return self.root / "spool"

    @property
    def log_path(self) -> Path:
        return self.root / "maillog"

    def write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        values = {
            "root": self.root,
            "host": HOST,
            "port": self.port,
            "sink": self.sink_port,
            "domain": self.domain,
            # HOLD: the whole message goes to the hold queue, which qmgr never reads.
            "hold": f"check_recipient_access inline:{{{self.domain}=HOLD}}, " if self.hold else "",
        }
        (self.config_dir / "main.cf").write_text(MAIN_CF.format(**values))
        (self.config_dir / "master.cf").write_text(MASTER_CF.format(**values))

    def postfix(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
        return subprocess.run(
            [str(POSTFIX), "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )

    def start(self) -> None:
        # mkdtemp makes 0700 directories; the postfix user must reach its queue.
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.queue_dir.mkdir(mode=0o755, exist_ok=True)
        self.write_config()
        for step in ("check", "start"):
            done = self.postfix(step)
            if done.returncode != 0:
                output = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
                raise RuntimeError(
                    f"postfix {step} failed ({done.returncode}):\n{output}\n{self.log_tail()}"
                )

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def cpu_seconds(self) -> float:
        """CPU time of the master and all its services, ended ones included."""
        pid = self.master_pid()
        return tree_cpu_seconds(pid) if pid else 0.0

    def queued(self) -> int:
        """Messages in the queue (incoming, active, deferred, hold), not yet relayed."""
        count = 0
        for name in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(self.queue_dir / name):
                count += len(files)
        return count

    def stop(self) -> None:
        pid = self.master_pid()
        if pid is None or not _alive(pid):
            return
        self.postfix("stop", timeout=30)  # waits up to 5 s for the master to go
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            self.postfix("abort", timeout=30)
            time.sleep(1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not running any more.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def available() -> str | None:
    """Why a private Postfix cannot run here, or None when it can."""
    if not POSTFIX.exists():
        return f"{POSTFIX} is not installed"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root"
    return None


def version() -> str:
    done = subprocess.run(
        [str(POSTCONF), "-h", "-d", "mail_version"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "?"


@contextmanager
def postfix_instance(
    root: Path, port: int, sink_port: int, domain: str, *, hold: bool = False
) -> Iterator[PostfixInstance]:
    """A started instance; stopped on leaving, also on errors."""
    instance = PostfixInstance(root, port, sink_port, domain, hold)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
