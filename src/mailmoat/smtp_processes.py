"""Extra SMTP processes sharing the listening port (SO_REUSEPORT).

One Python process uses one core; with ``MAILMOAT_SMTP_PROCESSES=N`` the serving
process starts N-1 more processes on the same port and the kernel spreads
connections over all of them. When the parent delivers mail too (role ``all``),
so does each of them, starting with the mail it accepted itself. They are restarted when they die,
stopped with the parent, and stop on their own when their parent disappears.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from contextlib import suppress

from mailmoat import metrics
from mailmoat.config import Role, Settings

log = logging.getLogger(__name__)
RESTART_DELAY = 1.0
PARENT_VARIABLE = "MAILMOAT_SMTP_PARENT_PID"
ORPHAN_GRACE = 15.0
"""Seconds an orphaned SMTP process gets to shut down before it exits regardless."""


class SmtpChildren:
    def __init__(self, settings: Settings, count: int) -> None:
        self.environment = os.environ | settings.child_environment(
            role=Role.ALL if settings.role is Role.ALL else Role.SMTP,
            smtp_processes=1,
            smtp_child=True,
        )
        self.environment[PARENT_VARIABLE] = str(os.getpid())
        self.count = count
        self._processes: list[subprocess.Popen[bytes]] = []
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "mailmoat", "serve"],
            env=self.environment,
            stdout=subprocess.DEVNULL,  # the banner; logs go to stderr
        )

    async def start(self) -> None:
        self._processes = [self._spawn() for _ in range(self.count)]
        self._watch = asyncio.create_task(self._keep_running())

    async def _keep_running(self) -> None:
        while not self._stopping:
            await asyncio.sleep(RESTART_DELAY)
            for index, process in enumerate(self._processes):
                if process.poll() is not None and not self._stopping:
                    log.warning(
                        "SMTP process %d exited (%s); restarting", process.pid, process.returncode
                    )
                    metrics.process_gone(process.pid)
                    self._processes[index] = self._spawn()

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with suppress(asyncio.CancelledError):
                await self._watch
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                await asyncio.to_thread(process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)


async def exit_with_parent(stop: asyncio.Event) -> None:
    """In a child: set ``stop`` once the process that started it is gone.

    The parent's pid comes from the environment, not from ``getppid()`` at this
    point: the parent may already have died while the child was starting.
    """
    parent = int(os.environ.get(PARENT_VARIABLE) or os.getppid())
    while not stop.is_set():
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            log.warning("parent process %d is gone; stopping", parent)
            stop.set()
            # Nobody else will stop this process: make sure it ends. Mail not yet
            # acknowledged by then is retried by its sender.
            asyncio.get_running_loop().call_later(ORPHAN_GRACE, os._exit, 1)
