"""The ``streamlib`` command: ``streamlib run module:app [options]`` (also ``python -m streamlib run``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ._logging import configure_logging
from ._serve import EXIT_FAILED, EXIT_USAGE, configure_app, load_app, resolve, serve
from ._settings import FIELDS, RunSettings, SettingsError, env_name, option_name

log = logging.getLogger("streamlib.runner")

_HELP = {
    "bootstrap_servers": "Kafka servers, host:port[,host:port...]; replaces the app's",
    "state_dir": "directory of the local state stores; replaces the app's state_dir",
    "workers": "worker processes (default: one per CPU core)",
    "instance_id": "this machine's name in the group's static membership (default: the host name)",
    "static_membership": "join as static group members (default: on)",
    "session_timeout_ms": "consumer session timeout in ms (default: the app's, else 10000)",
    "num_standby_replicas": "warm copies of each task's state on other instances (default: the app's)",
    "shutdown_timeout": "seconds a stop may take before the process aborts (default: 30)",
    "restart_backoff": "seconds before a crashed worker starts again, doubling per crash (default: 1)",
    "restart_backoff_max": "longest wait before restarting a worker (default: 30)",
    "log_level": "DEBUG, INFO, WARNING, ERROR or CRITICAL (default: INFO)",
    "log_format": "text or json: one JSON object per line (default: text)",
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="streamlib", description="Run streamlib applications.")
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="run a KafkaApp until SIGTERM/SIGINT",
        description="Run a streamlib.kafka.KafkaApp until SIGTERM or SIGINT, then stop it cleanly. Every "
                    "option can also be set by its STREAMLIB_* environment variable (--state-dir: "
                    "STREAMLIB_STATE_DIR); an option wins over its variable.",
    )
    run.add_argument("app", help="module:attribute naming a KafkaApp, or a function (RunSettings) -> KafkaApp")
    for field in FIELDS:
        help_text = f"{_HELP[field]} [{env_name(field)}]"
        if field == "static_membership":
            run.add_argument(option_name(field), dest=field, action=argparse.BooleanOptionalAction,
                             default=None, help=help_text)
        else:
            run.add_argument(option_name(field), dest=field, default=None, metavar=field.split("_")[-1].upper(),
                             help=help_text)
    run.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``streamlib`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    try:
        settings = RunSettings.load(**{f: getattr(args, f) for f in FIELDS})
    except SettingsError as exc:
        print(f"streamlib: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    worker = args.worker_index
    configure_logging(settings.log_level, settings.log_format, worker)
    workers = settings.resolved_workers()
    try:
        if worker is None and workers > 1:
            resolve(args.app)  # fail here, once, rather than in every worker
            from ._workers import Supervisor

            options = argv[argv.index("run") + 1:]
            options.remove(args.app)
            return asyncio.run(Supervisor(args.app, options, settings, workers).run())
        app = load_app(args.app, settings)
        configure_app(app, settings, worker)
    except SettingsError as exc:
        print(f"streamlib: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        asyncio.run(serve(app, settings, watch_supervisor=worker is not None))
    except Exception:
        log.exception("%r failed", app)
        return EXIT_FAILED
    return 0
