"""Runner settings: one typed table, read from command-line options and ``STREAMLIB_*`` variables.

Every field of :class:`RunSettings` has a command-line option (``--state-dir``)
and an environment variable (``STREAMLIB_STATE_DIR``); an option given on the
command line wins over the variable, the variable over the default. Values are
converted and validated by msgspec; a bad value names its source and what is
allowed. A ``STREAMLIB_*`` variable that is neither a setting nor one of the
library's build and test switches is refused (a typo would otherwise be
silently ignored).
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["text", "json"]

ENV_PREFIX = "STREAMLIB_"

#: ``STREAMLIB_*`` variables read elsewhere in the library (native build, tests, caches), not settings.
OTHER_VARIABLES = frozenset(
    {"STREAMLIB_PURE", "STREAMLIB_REQUIRE_NATIVE", "STREAMLIB_ANNOTATE", "STREAMLIB_QUEUE_FAST_PATH",
     "STREAMLIB_CACHE", "STREAMLIB_TEST_TIME_LIMIT"}
)


class SettingsError(ValueError):
    """A setting has a bad value, or a ``STREAMLIB_*`` variable is unknown."""


class RunSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How ``streamlib run`` and :func:`streamlib.run` run a :class:`~streamlib.kafka.KafkaApp`.

    Each field is also a command-line option (``--shutdown-timeout``) and an
    environment variable (``STREAMLIB_SHUTDOWN_TIMEOUT``); see
    ``docs/operations.md``. ``RunSettings.load()`` reads the environment.

    >>> RunSettings.load({"STREAMLIB_WORKERS": "2"}).workers
    2
    """

    #: Kafka servers ("host:port,host:port"); replaces the app's own when set.
    bootstrap_servers: str | None = None
    #: Root of the local state stores; replaces the app's ``state_dir`` when set.
    state_dir: str | None = None
    #: Worker processes of the command (None: one per CPU core).
    workers: Annotated[int, msgspec.Meta(ge=1, le=1024)] | None = None
    #: This machine's name in the consumer group's static membership (None: the host name).
    instance_id: Annotated[str, msgspec.Meta(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")] | None = None
    #: Join the group as a static member (``group_instance_id``): a restart within the session
    #: timeout gets its partitions back without a rebalance.
    static_membership: bool = True
    #: The consumer's session timeout (None: the app's, else aiokafka's 10 s).
    session_timeout_ms: Annotated[int, msgspec.Meta(ge=1000)] | None = None
    #: Warm copies of each task's state kept by other instances (None: the app's ``num_standby_replicas``).
    num_standby_replicas: Annotated[int, msgspec.Meta(ge=0, le=16)] | None = None
    #: Seconds a signalled stop may take (commit, flush, close) before the process aborts.
    shutdown_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    #: Seconds before a crashed worker is started again; doubles per crash up to ``restart_backoff_max``.
    restart_backoff: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    restart_backoff_max: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"

    def __post_init__(self) -> None:
        if self.restart_backoff_max < self.restart_backoff:
            raise SettingsError(
                f"restart_backoff_max ({self.restart_backoff_max}) must be at least restart_backoff "
                f"({self.restart_backoff})"
            )

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **options: Any) -> RunSettings:
        """Settings from ``environ`` (default ``os.environ``) overridden by ``options`` that are not None."""
        environ = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name, value in environ.items():
            if not name.startswith(ENV_PREFIX) or name in OTHER_VARIABLES:
                continue
            field = name[len(ENV_PREFIX):].lower()
            if field not in FIELDS:
                raise SettingsError(_unknown(name))
            raw[field] = value
            sources[field] = f"{name}={value!r}"
        for field, value in options.items():
            if field not in FIELDS:
                raise SettingsError(f"unknown setting {field!r} (settings: {', '.join(FIELDS)})")
            if value is not None:
                raw[field] = value
                sources[field] = f"{option_name(field)} {value!r}" if not isinstance(value, bool) else option_name(field)
        return cls.from_mapping(raw, sources)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> RunSettings:
        """Validate ``raw`` (strings are converted: ``"2"``, ``"true"``, ``"0.5"``)."""
        values = dict(raw)
        if isinstance(values.get("log_level"), str):
            values["log_level"] = values["log_level"].upper()
        if isinstance(values.get("log_format"), str):
            values["log_format"] = values["log_format"].lower()
        for field in ("bootstrap_servers", "state_dir", "instance_id"):
            if values.get(field) == "":
                values[field] = None
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            message = str(exc)
            match = re.search(r"at `\$\.(\w+)`", message)
            what = re.sub(r" - at `\$\.\w+`", "", message)
            if match is None:
                raise SettingsError(f"bad settings: {what}") from None
            bad: str = match.group(1)
            where = (sources or {}).get(bad, bad)
            raise SettingsError(f"bad setting {where}: {what}{_allowed(bad)}") from None

    def validated(self) -> RunSettings:
        """These settings checked as :meth:`load` checks them (a struct built directly is not)."""
        return RunSettings.from_mapping(msgspec.structs.asdict(self))

    def resolved_workers(self) -> int:
        """``workers``, or the number of CPU cores when it is None."""
        return self.workers if self.workers is not None else max(1, os.cpu_count() or 1)

    def resolved_instance_id(self) -> str:
        """``instance_id``, or this host's name."""
        return self.instance_id or re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()) or "streamlib"


FIELDS: tuple[str, ...] = RunSettings.__struct_fields__


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _allowed(field: str | None) -> str:
    if field == "log_level":
        return " (one of DEBUG, INFO, WARNING, ERROR, CRITICAL)"
    if field == "log_format":
        return " (text or json)"
    if field == "static_membership":
        return " (true or false)"
    return ""


def _unknown(name: str) -> str:
    known = [env_name(f) for f in FIELDS] + sorted(OTHER_VARIABLES)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return (f"unknown environment variable {name}{hint} (streamlib settings: "
            f"{', '.join(env_name(f) for f in FIELDS)}); unset it or fix its name")
