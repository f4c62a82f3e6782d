"""Running ``python -m streamlib run`` as a subprocess, reading its JSON log lines."""

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


class Runner:
    """One ``streamlib run`` process (with ``--log-format json``); ``events()`` parses its log."""

    def __init__(self, spec: str, *options: str, env: dict[str, str], log_path: Path) -> None:
        self.spec = spec
        self.options = options
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Runner:
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        with open(self.log_path, "ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "streamlib", "run", self.spec, "--log-format", "json", "--log-level", "INFO",
                *self.options, cwd=JOBS, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=err,
            )
        return self

    def events(self) -> list[dict[str, Any]]:
        out = []
        if not self.log_path.exists():
            return out
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def wait_for(self, predicate: Any, timeout: float = 60.0) -> Any:
        """Wait until ``predicate(events)`` returns something truthy (returned); fails if the process exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = predicate(self.events())
            if found:
                return found
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise AssertionError(f"streamlib run exited with {self.proc.returncode}:\n{self.tail()}")
            assert loop.time() < deadline, f"condition not met in {timeout}s:\n{self.tail()}"
            await asyncio.sleep(0.1)

    def signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"streamlib run did not exit within {timeout}s:\n{self.tail()}") from None

    async def close(self) -> None:
        """Kill whatever is left (the process group: the workers too)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        for event in self.events():
            pid = event.get("worker_pid")
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def assignments(events: list[dict[str, Any]]) -> dict[int, set[str]]:
    """The partitions each process (by pid) holds after the events so far."""
    held: dict[int, set[str]] = {}
    for e in events:
        if e.get("event") == "partitions_assigned":
            held.setdefault(e["pid"], set()).update(e["partitions"])
        elif e.get("event") == "partitions_revoked":
            held.setdefault(e["pid"], set()).difference_update(e["partitions"])
    return held
