"""Running one KafkaApp in this process until a signal stops it: :func:`run` and :func:`serve`.

The first SIGTERM or SIGINT asks the app to stop (``AppControl.stop()``): the
consumer stops fetching, each partition's sub-stream finishes what it read,
commits it (under exactly-once: commits its open transaction; under
at-least-once: flushes the producer, then commits the offsets), its producer and
store are closed, the consumer leaves. Then the process exits 0. If that takes
longer than ``shutdown_timeout`` seconds, or a second signal arrives, the
process aborts at once (exit 124, or 128 + the signal's number): nothing more
is committed, and under exactly-once the open transactions are aborted by the
broker, so the next run starts from the last commit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._runtime.task_places import waiting_tasks
from ._logging import configure_logging
from ._settings import RunSettings, SettingsError

if TYPE_CHECKING:
    from ..kafka import KafkaApp

log = logging.getLogger("streamlib.runner")

#: Exit code when a stop does not finish within ``shutdown_timeout`` (that of the ``timeout`` command).
EXIT_DEADLINE = 124
#: Exit code when the app failed.
EXIT_FAILED = 1
#: Exit code for bad settings or an app that cannot be loaded.
EXIT_USAGE = 2

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run(app: KafkaApp, settings: RunSettings | None = None) -> None:
    """Run ``app`` in this process until SIGTERM or SIGINT, then stop it cleanly and return.

    ``settings`` default to :meth:`RunSettings.load` (the ``STREAMLIB_*``
    environment variables). The first signal stops the app: fetching stops, what
    was read is processed and committed, producers are flushed, stores closed.
    A second signal, or a stop slower than ``settings.shutdown_timeout``, ends
    the process at once with a non-zero exit code. An app that fails raises its
    error here. Logging is configured from the settings unless the root logger
    already has handlers. One process: ``workers`` is read by the
    ``streamlib run`` command only.

    >>> streamlib.run(app)   # blocks; Ctrl-C or SIGTERM stops it cleanly
    """
    settings = (settings if settings is not None else RunSettings.load()).validated()
    if not logging.getLogger().handlers:
        configure_logging(settings.log_level, settings.log_format)
    configure_app(app, settings, worker=None)
    asyncio.run(serve(app, settings))


def load_app(spec: str, settings: RunSettings) -> KafkaApp:
    """The app named by ``module:attribute``: a KafkaApp, or a function of the settings returning one."""
    from ..kafka import KafkaApp

    obj = resolve(spec)
    if isinstance(obj, KafkaApp):
        return obj
    app = obj(settings)
    if not isinstance(app, KafkaApp):
        raise SettingsError(f"{spec} returned {app!r}; it must return a streamlib.kafka.KafkaApp")
    return app


def resolve(spec: str) -> Any:
    """Import ``module:attribute``; a clear error when either is missing or it is not an app."""
    from ..kafka import KafkaApp

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SettingsError(f"the app must be given as module:attribute (e.g. myservice:app), got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules of the current directory
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise SettingsError(f"cannot import module {module_name!r} of {spec!r}: {exc}") from exc
        raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SettingsError(f"module {module_name!r} has no attribute {attr!r} (from {spec!r})") from None
    if not isinstance(obj, KafkaApp) and not callable(obj):
        raise SettingsError(
            f"{spec} is {obj!r}: it must be a streamlib.kafka.KafkaApp or a function (RunSettings) -> KafkaApp"
        )
    return obj


def configure_app(app: KafkaApp, settings: RunSettings, worker: int | None) -> None:
    """Apply the settings to ``app`` (in place) before it runs, as worker ``worker`` (None: the only one).

    ``bootstrap_servers`` replaces the consumer's and producer's servers;
    ``state_dir`` the app's; a worker keeps its stores in ``<state_dir>/worker-<i>``.
    With ``static_membership`` the consumer gets ``group_instance_id``
    ``<instance_id>`` (``<instance_id>-<i>`` for worker ``i``); without it any
    ``group_instance_id`` of the app is removed (the workers would share it).
    ``num_standby_replicas``, when set, replaces the app's.
    """
    from ..kafka import KafkaApp

    if not isinstance(app, KafkaApp):
        raise TypeError(f"streamlib.run needs a streamlib.kafka.KafkaApp, got {app!r}")
    consumer, producer = app.consumer, app.producer
    if settings.bootstrap_servers:
        servers = [s.strip() for s in settings.bootstrap_servers.split(",") if s.strip()]
        if not servers:
            raise SettingsError(f"bootstrap_servers {settings.bootstrap_servers!r} names no server")
        consumer = dataclasses.replace(consumer, bootstrap_servers=servers)
        producer = dataclasses.replace(producer, bootstrap_servers=servers)
    if settings.state_dir is not None:
        app.state_dir = settings.state_dir
    if worker is not None and app.state_dir is not None:
        app.state_dir = os.path.join(app.state_dir, f"worker-{worker}")
    props = dict(consumer.properties)
    if settings.static_membership:
        instance = settings.resolved_instance_id()
        props["group_instance_id"] = instance if worker is None else f"{instance}-{worker}"
    else:
        props.pop("group_instance_id", None)
    if settings.session_timeout_ms is not None:
        props["session_timeout_ms"] = settings.session_timeout_ms
        if "heartbeat_interval_ms" not in consumer.properties:
            props["heartbeat_interval_ms"] = min(3000, settings.session_timeout_ms // 3)
    app.consumer = dataclasses.replace(consumer, properties=props)
    app.producer = producer
    if settings.num_standby_replicas is not None:
        if settings.num_standby_replicas and "partition_assignment_strategy" in props:
            raise SettingsError(
                "num_standby_replicas needs the app's own task assignor to place the standbys, but the app's "
                "consumer sets partition_assignment_strategy: remove it, or set num_standby_replicas to 0"
            )
        app.num_standby_replicas = settings.num_standby_replicas


def _abort(code: int, message: str, *args: Any) -> None:
    log.error(message, *args)
    logging.shutdown()
    os._exit(code)


class _Stopper:
    """The first stop request stops the app with a deadline; a second one aborts."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: Callable[[], None], timeout: float) -> None:
        self.loop = loop
        self.stop = stop
        self.timeout = timeout
        self.requested_at: float | None = None
        self.deadline: asyncio.TimerHandle | None = None

    def on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self.requested_at is not None:
            _abort(128 + sig, "%s again: aborting without committing (the next run resumes from the last "
                   "commit)", name)
            return
        self.request(f"{name} received")

    def on_parent_gone(self) -> None:
        if self.requested_at is None:
            self.request("the supervising process is gone")

    def request(self, why: str) -> None:
        self.requested_at = time.monotonic()
        log.info("%s: stopping: fetching stops, what was read is processed and committed, producers are "
                 "flushed and stores closed (deadline %.1fs; a second signal aborts)", why, self.timeout)
        self.deadline = self.loop.call_later(self.timeout, self._expired)
        self.stop()

    def _expired(self) -> None:
        _abort(EXIT_DEADLINE, "the stop did not finish within %.1fs (shutdown_timeout): aborting without "
               "committing the rest; still waiting: %s", self.timeout, waiting_tasks(self.loop))

    def close(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()


def install_signal_handlers(loop: asyncio.AbstractEventLoop, handler: Callable[[int], None]) -> Callable[[], None]:
    """Call ``handler(signum)`` on the loop for SIGTERM and SIGINT; returns the function that removes them."""
    installed: list[int] = []
    previous: dict[int, Any] = {}
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, handler, int(sig))
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # no add_signal_handler (Windows): plain handlers
            previous[sig] = signal.signal(sig, lambda s, _f: loop.call_soon_threadsafe(handler, s))

    def remove() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)
        for sig, old in previous.items():
            signal.signal(sig, old)

    return remove


def _watch_stdin(loop: asyncio.AbstractEventLoop, gone: Callable[[], None]) -> Callable[[], None]:
    """A worker's stdin is a pipe from its supervisor: end of file means the supervisor died.

    Returns the function that stops watching (no thread is left blocked on stdin at exit)."""
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            gone()

    try:
        loop.add_reader(fd, readable)
    except (NotImplementedError, OSError, ValueError):  # no reader for pipes here (Windows): no watch
        return lambda: None

    def unwatch() -> None:
        loop.remove_reader(fd)

    return unwatch


async def serve(app: KafkaApp, settings: RunSettings, *, watch_supervisor: bool = False) -> None:
    """Run ``app`` on this event loop until a stop signal, then stop it cleanly (see the module doc)."""
    loop = asyncio.get_running_loop()
    props = app.consumer.properties
    log.info("starting %r: group %s%s, state in %s", app, app.application_id,
             f", group_instance_id {props['group_instance_id']}" if "group_instance_id" in props else "",
             app.state_dir or "memory")
    control = app.run()
    stopper = _Stopper(loop, control.stop, settings.shutdown_timeout)
    remove = install_signal_handlers(loop, stopper.on_signal)
    unwatch = _watch_stdin(loop, stopper.on_parent_gone) if watch_supervisor else (lambda: None)
    try:
        await control.wait_stopped()
    finally:
        remove()
        unwatch()
        stopper.close()
    if stopper.requested_at is not None:
        log.info("stopped cleanly in %.2fs (%d records processed, %d checkpoints committed)",
                 time.monotonic() - stopper.requested_at, control.metrics.records, control.metrics.commits)
