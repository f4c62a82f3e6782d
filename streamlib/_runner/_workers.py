"""``streamlib run module:app --workers N``: N worker processes of one app, supervised.

Each worker is ``python -m streamlib run module:app <same options> --worker-index i``:
a member of the app's consumer group (the group spreads the partitions over
the workers, and over every other process of the app on other machines) with
static membership ``<instance_id>-<i>`` and its own state directory
``<state_dir>/worker-<i>``. The supervisor:

- starts a worker again when it exits while no stop was asked for, after
  ``restart_backoff`` seconds, doubling per consecutive crash up to
  ``restart_backoff_max`` (reset once a worker ran for a minute);
- forwards SIGTERM and SIGINT to every worker (the workers run in their own
  process group, so a terminal's Ctrl-C reaches them once, through it); a second
  signal is forwarded too, which aborts them;
- exits when every worker has exited: 0 when all stopped cleanly;
- is watched by its workers through their stdin: when the supervisor dies, its
  workers stop cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from ._serve import EXIT_DEADLINE, EXIT_FAILED, install_signal_handlers
from ._settings import RunSettings

log = logging.getLogger("streamlib.runner")

#: A worker that ran this long before exiting restarts after the initial backoff again.
STABLE_AFTER = 60.0


class Supervisor:
    def __init__(self, spec: str, options: list[str], settings: RunSettings, workers: int) -> None:
        self.spec = spec
        self.options = options
        self.settings = settings
        self.workers = workers
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.codes: dict[int, int] = {}
        self.signals: list[int] = []
        self.stopping = asyncio.Event()

    def command(self, index: int) -> list[str]:
        return [sys.executable, "-m", "streamlib", "run", self.spec, *self.options, "--worker-index", str(index)]

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        remove = install_signal_handlers(loop, self.on_signal)
        log.info("starting %d workers of %s", self.workers, self.spec,
                 extra={"event": "supervisor_started", "workers": self.workers})
        deadline: asyncio.TimerHandle | None = None
        try:
            keepers = [asyncio.ensure_future(self.keep(i)) for i in range(self.workers)]
            await self.stopping.wait()
            # Workers have shutdown_timeout to stop, then abort themselves; past that (and a margin
            # for their start-up) they are killed.
            deadline = loop.call_later(self.settings.shutdown_timeout + 10.0, self.kill_all)
            await asyncio.gather(*keepers)
        finally:
            remove()
            if deadline is not None:
                deadline.cancel()
        if len(self.signals) > 1:
            return 128 + self.signals[1]
        failed = {i: c for i, c in self.codes.items() if c != 0}
        if failed:
            log.error("workers did not stop cleanly: %s", ", ".join(f"worker {i} exit {c}" for i, c in failed.items()))
            return EXIT_DEADLINE if all(c == EXIT_DEADLINE for c in failed.values()) else EXIT_FAILED
        log.info("all %d workers stopped cleanly", self.workers)
        return 0

    def on_signal(self, sig: int) -> None:
        self.signals.append(sig)
        name = signal.Signals(sig).name
        if len(self.signals) == 1:
            log.info("%s received: stopping %d workers", name, len(self.live()))
            self.stopping.set()
        else:
            log.error("%s again: aborting the workers", name)
        for proc in self.live():
            proc.send_signal(sig)

    def live(self) -> list[asyncio.subprocess.Process]:
        return [p for p in self.procs.values() if p.returncode is None]

    def kill_all(self) -> None:
        for index, proc in self.procs.items():
            if proc.returncode is None:
                log.error("worker %d (pid %d) did not exit after the shutdown timeout: killing it", index, proc.pid)
                proc.kill()

    async def keep(self, index: int) -> None:
        """Run worker ``index`` until the supervisor stops, restarting it when it exits."""
        loop = asyncio.get_running_loop()
        settings = self.settings
        backoff = settings.restart_backoff
        while True:
            started = loop.time()
            kwargs: dict[str, Any] = {"process_group": 0} if os.name == "posix" else {}
            proc = await asyncio.create_subprocess_exec(*self.command(index), stdin=asyncio.subprocess.PIPE, **kwargs)
            self.procs[index] = proc
            log.info("worker %d started (pid %d)", index, proc.pid,
                     extra={"event": "worker_started", "worker_index": index, "worker_pid": proc.pid})
            if self.signals:  # a signal arrived while it was being started
                proc.send_signal(self.signals[-1])
            code = await proc.wait()
            if self.stopping.is_set():
                self.codes[index] = code
                log.info("worker %d (pid %d) exited with code %d", index, proc.pid, code,
                         extra={"event": "worker_exited", "worker_index": index, "worker_pid": proc.pid,
                                "code": code})
                return
            if loop.time() - started >= STABLE_AFTER:
                backoff = settings.restart_backoff
            log.warning("worker %d (pid %d) exited with code %d; starting it again in %.1fs", index, proc.pid,
                        code, backoff, extra={"event": "worker_crashed", "worker_index": index,
                                              "worker_pid": proc.pid, "code": code})
            try:
                await asyncio.wait_for(self.stopping.wait(), backoff)
            except TimeoutError:
                pass
            if self.stopping.is_set():
                self.codes[index] = 0  # nothing of it is running: nothing left to commit
                return
            backoff = min(backoff * 2, settings.restart_backoff_max)
