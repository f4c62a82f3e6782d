"""Runner settings: options and STREAMLIB_* variables, validation, how they change an app; the JSON log format."""

from __future__ import annotations

import json
import logging
import pathlib
import re
import sys

import pytest

from streamlib import RunSettings
from streamlib._runner import SettingsError, main
from streamlib._runner._logging import JsonFormatter
from streamlib._runner._serve import configure_app, load_app, resolve
from streamlib._runner._settings import FIELDS, OTHER_VARIABLES, env_name, option_name
from streamlib.kafka import ConsumerSettings, KafkaApp, ProducerSettings

ROOT = pathlib.Path(__file__).resolve().parent.parent


def make_app(state_dir: str | None = "/var/lib/app", **props: object) -> KafkaApp:
    return KafkaApp("orders-app", consumer=ConsumerSettings("old:9092", properties=props),
                    producer=ProducerSettings("old:9092"), topics="orders", topology=lambda p: None,  # type: ignore[arg-type,return-value]
                    state_dir=state_dir)


def test_defaults_without_variables() -> None:
    s = RunSettings.load({})
    assert s == RunSettings()
    assert (s.log_level, s.log_format, s.shutdown_timeout, s.static_membership) == ("INFO", "text", 30.0, True)
    assert s.resolved_workers() >= 1


def test_variables_are_converted_to_their_types() -> None:
    s = RunSettings.load({
        "STREAMLIB_BOOTSTRAP_SERVERS": "k1:9092,k2:9092", "STREAMLIB_STATE_DIR": "/data", "STREAMLIB_WORKERS": "3",
        "STREAMLIB_STATIC_MEMBERSHIP": "false", "STREAMLIB_SHUTDOWN_TIMEOUT": "12.5",
        "STREAMLIB_SESSION_TIMEOUT_MS": "6000", "STREAMLIB_LOG_LEVEL": "debug", "STREAMLIB_LOG_FORMAT": "JSON",
        "STREAMLIB_NUM_STANDBY_REPLICAS": "1", "PATH": "/bin", "KAFKA_WHATEVER": "x",
    })
    assert s.bootstrap_servers == "k1:9092,k2:9092" and s.state_dir == "/data"
    assert s.workers == 3 and s.resolved_workers() == 3
    assert s.static_membership is False and s.shutdown_timeout == 12.5 and s.session_timeout_ms == 6000
    assert (s.log_level, s.log_format) == ("DEBUG", "json")
    assert s.num_standby_replicas == 1


def test_options_win_over_variables_and_none_leaves_the_variable() -> None:
    env = {"STREAMLIB_WORKERS": "3", "STREAMLIB_LOG_LEVEL": "ERROR"}
    s = RunSettings.load(env, workers="2", log_level=None)
    assert (s.workers, s.log_level) == (2, "ERROR")


def test_library_switches_are_not_settings_and_are_accepted() -> None:
    assert RunSettings.load({name: "1" for name in OTHER_VARIABLES}) == RunSettings()


@pytest.mark.parametrize("name,suggestion", [("STREAMLIB_WORKER", "STREAMLIB_WORKERS"),
                                             ("STREAMLIB_LOGLEVEL", "STREAMLIB_LOG_LEVEL"),
                                             ("STREAMLIB_NONSENSE", None)])
def test_unknown_streamlib_variables_are_refused(name: str, suggestion: str | None) -> None:
    with pytest.raises(SettingsError, match=f"unknown environment variable {name}") as info:
        RunSettings.load({name: "2"})
    if suggestion:
        assert f"did you mean {suggestion}?" in str(info.value)
    assert "STREAMLIB_BOOTSTRAP_SERVERS" in str(info.value)


@pytest.mark.parametrize("env,options,message", [
    ({"STREAMLIB_WORKERS": "0"}, {}, r"STREAMLIB_WORKERS='0': Expected `int` >= 1"),
    ({"STREAMLIB_WORKERS": "two"}, {}, r"STREAMLIB_WORKERS='two': Expected `int"),
    ({}, {"shutdown_timeout": "-1"}, r"--shutdown-timeout '-1': Expected `float` > 0"),
    ({"STREAMLIB_LOG_LEVEL": "loud"}, {}, r"STREAMLIB_LOG_LEVEL='loud'.*one of DEBUG, INFO"),
    ({}, {"log_format": "xml"}, r"--log-format 'xml'.*text or json"),
    ({"STREAMLIB_STATIC_MEMBERSHIP": "maybe"}, {}, r"STREAMLIB_STATIC_MEMBERSHIP='maybe'.*true or false"),
    ({"STREAMLIB_INSTANCE_ID": "a b"}, {}, r"STREAMLIB_INSTANCE_ID='a b'"),
    ({"STREAMLIB_SESSION_TIMEOUT_MS": "10"}, {}, r"Expected `int` >= 1000"),
    ({"STREAMLIB_NUM_STANDBY_REPLICAS": "-1"}, {}, r"STREAMLIB_NUM_STANDBY_REPLICAS='-1': Expected `int` >= 0"),
    ({}, {"restart_backoff": "5", "restart_backoff_max": "1"}, r"restart_backoff_max \(1.0\) must be at least"),
])
def test_bad_values_name_their_source_and_what_is_allowed(env: dict[str, str], options: dict[str, str],
                                                          message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        RunSettings.load(env, **options)


def test_settings_built_directly_are_checked_when_run() -> None:
    with pytest.raises(SettingsError, match="Expected `int` >= 1"):
        RunSettings(workers=0).validated()
    assert RunSettings(workers=2).validated().workers == 2


def test_configure_app_applies_servers_state_dir_and_membership() -> None:
    app = make_app()
    configure_app(app, RunSettings(bootstrap_servers="k1:9092, k2:9092", instance_id="host-a",
                                   session_timeout_ms=6000), worker=None)
    assert app.consumer.bootstrap_servers == ["k1:9092", "k2:9092"] == app.producer.bootstrap_servers
    assert app.state_dir == "/var/lib/app"
    assert app.consumer.consumer_kwargs()["group_instance_id"] == "host-a"
    assert app.consumer.consumer_kwargs()["session_timeout_ms"] == 6000
    assert app.consumer.consumer_kwargs()["heartbeat_interval_ms"] == 2000


def test_each_worker_gets_its_own_state_dir_and_instance_id() -> None:
    apps = [make_app(), make_app()]
    for i, app in enumerate(apps):
        configure_app(app, RunSettings(state_dir="/data", instance_id="host-a"), worker=i)
    assert [a.state_dir for a in apps] == ["/data/worker-0", "/data/worker-1"]
    assert [a.consumer.properties["group_instance_id"] for a in apps] == ["host-a-0", "host-a-1"]
    memory = make_app(state_dir=None)
    configure_app(memory, RunSettings(), worker=1)
    assert memory.state_dir is None


def test_without_static_membership_no_instance_id_is_left() -> None:
    app = make_app(group_instance_id="fixed", heartbeat_interval_ms=500)
    configure_app(app, RunSettings(static_membership=False, session_timeout_ms=9000), worker=0)
    assert "group_instance_id" not in app.consumer.properties
    assert app.consumer.properties["heartbeat_interval_ms"] == 500  # the app's own is kept


def test_standby_replicas_setting_replaces_the_apps_only_when_given() -> None:
    app = KafkaApp("orders-app", consumer=ConsumerSettings("k:9092"), producer=ProducerSettings("k:9092"),
                   topics="orders", topology=lambda p: None, num_standby_replicas=2)  # type: ignore[arg-type,return-value]
    configure_app(app, RunSettings(), worker=None)
    assert app.num_standby_replicas == 2
    configure_app(app, RunSettings.load({"STREAMLIB_NUM_STANDBY_REPLICAS": "1"}), worker=None)
    assert app.num_standby_replicas == 1
    configure_app(app, RunSettings(num_standby_replicas=0), worker=None)
    assert app.num_standby_replicas == 0
    own_assignor = make_app(partition_assignment_strategy=("roundrobin",))
    with pytest.raises(SettingsError, match="num_standby_replicas needs the app's own task assignor"):
        configure_app(own_assignor, RunSettings(num_standby_replicas=1), worker=None)
    configure_app(own_assignor, RunSettings(num_standby_replicas=0), worker=None)
    assert own_assignor.num_standby_replicas == 0


def test_resolve_names_what_is_missing(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "svc_mod.py").write_text(
        "from streamlib.kafka import ConsumerSettings, KafkaApp, ProducerSettings\n"
        "def make(settings):\n"
        "    return KafkaApp('a', consumer=ConsumerSettings(settings.bootstrap_servers or 'x:1'),\n"
        "                    producer=ProducerSettings('x:1'), topics='t', topology=lambda p: p)\n"
        "def broken(settings):\n"
        "    return 42\n"
        "number = 7\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SettingsError, match="module:attribute"):
        resolve("svc_mod")
    with pytest.raises(SettingsError, match="cannot import module 'no_such_mod'"):
        resolve("no_such_mod:app")
    with pytest.raises(SettingsError, match="has no attribute 'nope'"):
        resolve("svc_mod:nope")
    with pytest.raises(SettingsError, match="must be a streamlib.kafka.KafkaApp or a function"):
        resolve("svc_mod:number")
    with pytest.raises(SettingsError, match="returned 42"):
        load_app("svc_mod:broken", RunSettings())
    app = load_app("svc_mod:make", RunSettings(bootstrap_servers="k:9092"))
    assert app.consumer.bootstrap_servers == "k:9092"


def test_command_refuses_bad_settings_with_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STREAMLIB_WROKERS", "2")
    assert main(["run", "svc:app"]) == 2
    assert "unknown environment variable STREAMLIB_WROKERS; did you mean STREAMLIB_WORKERS?" in capsys.readouterr().err
    monkeypatch.delenv("STREAMLIB_WROKERS")
    assert main(["run", "svc:app", "--workers", "0"]) == 2
    assert "bad setting --workers '0'" in capsys.readouterr().err
    assert main(["run", "no_such_module_here:app", "--workers", "1"]) == 2
    assert "cannot import module" in capsys.readouterr().err


def test_json_formatter_writes_one_object_per_record() -> None:
    formatter = JsonFormatter(worker=3)
    record = logging.LogRecord("streamlib.kafka", logging.INFO, __file__, 1, "assigned %s", ("t-0",), None)
    record.partitions = ["t-0"]
    out = json.loads(formatter.format(record))
    assert out["message"] == "assigned t-0" and out["level"] == "INFO" and out["logger"] == "streamlib.kafka"
    assert out["worker"] == 3 and out["partitions"] == ["t-0"] and isinstance(out["pid"], int)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", out["time"])
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    out = json.loads(formatter.format(record))
    assert "ValueError: boom" in out["exception"]


def test_docs_table_lists_every_setting() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(--[a-z-]+)`[^|]*\| `(STREAMLIB_[A-Z_]+)` \|", text, re.M)}
    assert rows == {option_name(f): env_name(f) for f in FIELDS}
