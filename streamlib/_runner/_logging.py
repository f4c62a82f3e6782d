"""Logging for the runner: the standard ``logging`` module, as text or one JSON object per line."""

from __future__ import annotations

import datetime
import logging
import os
import sys
from typing import Any

import msgspec

#: Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged too.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``, ``pid``, ``worker``
    (when the process is a worker of ``streamlib run --workers``), ``exception`` (the traceback,
    when there is one) and any ``extra=`` fields."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker
        self._encoder = msgspec.json.Encoder(enc_hook=repr)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process if record.process is not None else os.getpid(),
        }
        if self.worker is not None:
            out["worker"] = self.worker
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        return self._encoder.encode(out).decode()


def configure_logging(level: str, fmt: str, worker: int | None = None) -> None:
    """Route the root logger to stderr at ``level``, as ``fmt`` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)  # also for records a filter demoted after the logger let them through
    if fmt == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        who = "" if worker is None else f" worker-{worker}"
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [%(process)d{who}] %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
