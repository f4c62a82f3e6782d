"""Running job scripts (``tests/kafka/_jobs``) as subprocesses that tests kill and restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
JOBS = Path(__file__).resolve().parent / "_jobs"


class Job:
    """One run of a job script; ``status`` is the last JSON line it printed."""

    def __init__(self, script: str, *args: str, log_dir: Path) -> None:
        self.script = JOBS / script
        self.args = args
        self.log_dir = log_dir
        self.proc: asyncio.subprocess.Process | None = None
        self.status: dict[str, Any] = {}
        self.lines: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None
        self.runs = 0

    async def start(self) -> Job:
        self.runs += 1
        self.status = {}
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        err = open(self.log_dir / f"{self.script.stem}-{id(self)}-{self.runs}.err", "wb")  # noqa: SIM115
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(self.script), *self.args, stdout=asyncio.subprocess.PIPE, stderr=err, env=env
        )
        err.close()
        self._reader = asyncio.ensure_future(self._read(self.proc))
        return self

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            try:
                self.status = json.loads(line)
            except ValueError:
                continue
            self.lines.append(self.status)

    async def wait_for(self, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until ``predicate(status)`` holds; fails if the job exits or the time runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.status and predicate(self.status):
                return self.status
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise AssertionError(f"{self.script.name} exited with {self.proc.returncode}: {self.stderr_tail()}")
            if loop.time() > deadline:
                raise AssertionError(f"{self.script.name}: condition not met in {timeout}s; status {self.status}; "
                                     f"{self.stderr_tail()}")
            await asyncio.sleep(0.05)

    async def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self._finish()

    def pause(self) -> None:
        """SIGSTOP: the process stops dead (no heartbeats, no I/O) until :meth:`resume`."""
        assert self.proc is not None and self.proc.returncode is None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    async def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful stop) and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            raise
        finally:
            await self._finish()
        return self.proc.returncode if self.proc.returncode is not None else -1

    async def _finish(self) -> None:
        assert self.proc is not None
        await self.proc.wait()
        if self._reader is not None:
            await asyncio.wait([self._reader])

    def stderr(self) -> str:
        """Everything the current run wrote to stderr (its log) so far."""
        path = self.log_dir / f"{self.script.stem}-{id(self)}-{self.runs}.err"
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def stderr_tail(self, lines: int = 40) -> str:
        return "\n".join(self.stderr().splitlines()[-lines:])
