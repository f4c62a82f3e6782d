"""A real single-node Apache Kafka broker (KRaft mode) run as a child JVM.

Mechanism:

* Jars. The broker's jars come from Maven Central: a small pom (``_kafka/pom.xml``)
  names ``org.apache.kafka:kafka_2.13`` plus a logging backend, and
  ``mvn dependency:copy-dependencies`` copies the runtime closure into
  ``${STREAMLIB_CACHE:-~/.cache/streamlib}/kafka-<version>/lib``. A marker file is
  written only after a complete download, so an interrupted one is redone, and a
  file lock keeps two processes from downloading at once. Once the marker exists,
  Maven is never called again.
* Start. Each broker gets a fresh temporary directory with its ``server.properties``,
  its data (``log.dirs``) and its log file, and two free ports on 127.0.0.1 (client
  and controller). The storage is formatted with ``kafka.tools.StorageTool``, then
  ``kafka.Kafka`` runs with combined ``broker,controller`` roles. The broker is ready
  once its log says ``Kafka Server started`` and a metadata request over the client
  port lists it.
* Lifetime. ``stop()`` sends SIGTERM (graceful) and SIGKILL after a timeout,
  ``kill()`` sends SIGKILL, ``start()`` after either resumes the same broker (same
  ports, same data) and ``close()`` also deletes its directory. The JVM runs in its
  own process group, is closed by an ``atexit`` hook, and on Linux gets
  ``PR_SET_PDEATHSIG`` so it is killed even when the Python process dies abruptly.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["DEFAULT_VERSION", "KafkaBroker", "KafkaBrokerError", "cache_dir", "ensure_jars", "find_java"]

DEFAULT_VERSION = "3.9.2"
"""Newest Apache Kafka 3.9.x release on Maven Central."""

JDK_HINT = "install a Java 17+ JDK (Debian/Ubuntu: apt-get install openjdk-17-jdk-headless)"
MAVEN_HINT = "install Maven (Debian/Ubuntu: apt-get install maven)"

_RESOURCES = Path(__file__).with_name("_kafka")
_READY_LINE = "Kafka Server started"
_MARKER = "download-complete"
_JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto", "-Djava.awt.headless=true")
_T = TypeVar("_T")


class KafkaBrokerError(RuntimeError):
    """The broker could not be prepared, started or used."""


def cache_dir() -> Path:
    """Where downloaded broker jars live: ``$STREAMLIB_CACHE`` or ``~/.cache/streamlib``."""
    root = os.environ.get("STREAMLIB_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "streamlib"


def _check_version(version: str) -> None:
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise KafkaBrokerError(f"invalid Kafka version {version!r}; expected e.g. {DEFAULT_VERSION!r}")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (blocks until it is free)."""
    import fcntl

    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_jars(version: str = DEFAULT_VERSION, root: Path | None = None) -> Path:
    """Return the directory holding the broker's jars, downloading them once with Maven."""
    _check_version(version)
    home = (root or cache_dir()) / f"kafka-{version}"
    lib, marker = home / "lib", home / _MARKER
    if marker.is_file():
        return lib
    home.mkdir(parents=True, exist_ok=True)
    with _file_lock(home / ".lock"):
        if marker.is_file():  # another process finished the download meanwhile
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaBrokerError(
                f"Maven ('mvn') is needed once to download the Kafka {version} jars "
                f"into {lib}: {MAVEN_HINT}, and {JDK_HINT}"
            )
        shutil.rmtree(lib, ignore_errors=True)
        pom = home / "pom.xml"
        pom.write_text((_RESOURCES / "pom.xml").read_text().replace("@KAFKA_VERSION@", version))
        cmd = [mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(pom), "dependency:copy-dependencies",
               "-DincludeScope=runtime", f"-DoutputDirectory={lib}"]
        try:
            proc = subprocess.run(cmd, cwd=home, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=1800, preexec_fn=_parent_death_hook())
        except subprocess.TimeoutExpired as exc:
            raise KafkaBrokerError(f"downloading Kafka {version} jars timed out: {' '.join(cmd)}") from exc
        jar = lib / f"kafka_2.13-{version}.jar"
        if proc.returncode != 0 or not jar.is_file():
            output = "\n".join((proc.stdout + proc.stderr).splitlines()[-50:])
            raise KafkaBrokerError(
                f"downloading the Kafka {version} jars failed (exit {proc.returncode}): "
                f"{' '.join(cmd)}\n{output}"
            )
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(f"kafka {version}\n{len(list(lib.glob('*.jar')))} jars\n")
        os.replace(tmp, marker)
    return lib


_java_checked: dict[str, str] = {}


def find_java() -> str:
    """Return the ``java`` executable (``$JAVA_HOME/bin/java`` or on PATH), checking it is 11+."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home, "bin", "java") if java_home else None
    java = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
    if java is None:
        raise KafkaBrokerError(f"Java ('java') was not found: {JDK_HINT}, and {MAVEN_HINT}")
    if java not in _java_checked:
        out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
        found = re.search(r'version "(\d+)(?:\.(\d+))?', out)
        major = int(found.group(1)) if found else 0
        if major == 1 and found and found.group(2):  # "1.8.0_x" style
            major = int(found.group(2))
        if major < 11:
            raise KafkaBrokerError(f"Kafka needs Java 11 or newer, {java} is: {out.strip()!r}; {JDK_HINT}")
        _java_checked[java] = out
    return java


def _free_ports(count: int) -> list[int]:
    """Pick ``count`` distinct free TCP ports on 127.0.0.1."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _run_async(factory: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    async def main() -> _T:
        return await factory()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-broker-io") as pool:
        return pool.submit(asyncio.run, main()).result()


def _parent_death_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child get SIGKILL when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)

    def hook() -> None:
        prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so the JVM is
# spawned from the main thread or from one long-lived daemon thread, never from a
# short-lived worker thread.
_spawn_queue: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
_spawn_thread: threading.Thread | None = None
_spawn_lock = threading.Lock()


def _spawner() -> None:
    while True:
        fut, spawn = _spawn_queue.get()
        try:
            fut.set_result(spawn())
        except BaseException as exc:  # handed to the caller
            fut.set_exception(exc)


def _popen_long_lived(cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` from a thread that lives as long as the process."""
    global _spawn_thread
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(cmd, **kwargs)
    with _spawn_lock:
        if _spawn_thread is None:
            _spawn_thread = threading.Thread(target=_spawner, name="kafka-broker-spawner", daemon=True)
            _spawn_thread.start()
    fut: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
    _spawn_queue.put((fut, lambda: subprocess.Popen(cmd, **kwargs)))
    return fut.result()


_live: set[KafkaBroker] = set()


@atexit.register
def _close_all() -> None:
    for broker in list(_live):
        with contextlib.suppress(Exception):
            broker.close(timeout=10.0)


class KafkaBroker:
    """A single-node Kafka broker on 127.0.0.1, owned by this Python process.

    ``with KafkaBroker() as broker:`` starts it and closes it (stops it and deletes
    its data) on exit. A broker keeps its ports and data for its whole life:
    ``restart()``, or ``start()`` after ``stop()``/``kill()``, resumes it.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        version: str = DEFAULT_VERSION,
        properties: Mapping[str, object] | None = None,
        start_timeout: float = 120.0,
        heap: str = "512m",
        jars_root: Path | None = None,
    ) -> None:
        """``port``: client port (default: a free one); ``properties``: extra server settings."""
        _check_version(version)
        self.version = version
        self.start_timeout = start_timeout
        self._port = port
        self._controller_port: int | None = None
        self._extra = {k: str(v) for k, v in (properties or {}).items()}
        self._heap = heap
        self._jars_root = jars_root
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()

    # -- properties -------------------------------------------------------------

    @property
    def port(self) -> int:
        """The client (PLAINTEXT) port; fixed once the broker first started."""
        if self._port is None:
            raise KafkaBrokerError("the broker has not been started yet")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        """Address for Kafka clients, e.g. ``"127.0.0.1:40123"``."""
        return f"127.0.0.1:{self.port}"

    @property
    def directory(self) -> Path:
        """The broker's own directory (config, data, log)."""
        if self._dir is None:
            raise KafkaBrokerError("the broker has not been started yet")
        return self._dir

    @property
    def log_path(self) -> Path:
        """The broker's log file (JVM stdout and stderr)."""
        return self.directory / "broker.log"

    @property
    def data_dir(self) -> Path:
        """The broker's ``log.dirs``: topic partitions and metadata."""
        return self.directory / "data"

    @property
    def running(self) -> bool:
        """Whether the broker's JVM is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running JVM, or None."""
        return self._proc.pid if self.running and self._proc else None

    # -- lifecycle --------------------------------------------------------------

    def __enter__(self) -> KafkaBroker:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> KafkaBroker:
        """Start the broker (or resume a stopped one) and wait until it serves clients."""
        with self._lock:
            if self.running:
                return self
            java = find_java()  # first: Maven needs Java too
            lib = ensure_jars(self.version, self._jars_root)
            classpath = str(lib / "*")
            if self._dir is None:
                self._prepare(java, classpath)
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            cmd = [java, f"-Xmx{self._heap}", *_JVM_FLAGS,
                   f"-Dlog4j.configuration=file:{self.directory / 'log4j.properties'}",
                   "-cp", classpath, "kafka.Kafka", str(self.directory / "server.properties")]
            with open(self.log_path, "ab") as log:
                self._proc = _popen_long_lived(
                    cmd, cwd=self.directory, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_parent_death_hook(),
                )
            _live.add(self)
            try:
                self._wait_ready(offset)
            except BaseException:
                self.kill()
                raise
            return self

    def _prepare(self, java: str, classpath: str) -> None:
        """Create the directory, pick ports, write the config and format the storage."""
        if self._port is not None and not _port_is_free(self._port):
            raise KafkaBrokerError(f"port {self._port} on 127.0.0.1 is already in use")
        ports = _free_ports(2)
        if self._port is None:
            self._port = ports[0]
        self._controller_port = ports[1] if ports[1] != self._port else ports[0]
        directory = Path(tempfile.mkdtemp(prefix="streamlib-kafka-"))
        self._dir = directory
        (directory / "log4j.properties").write_text((_RESOURCES / "log4j.properties").read_text())
        (directory / "server.properties").write_text(
            "".join(f"{k}={v}\n" for k, v in self.server_properties().items())
        )
        try:
            cluster_id = self._storage_tool(java, classpath, "random-uuid").strip().splitlines()[-1]
            self._storage_tool(java, classpath, "format", "-t", cluster_id,
                               "-c", str(directory / "server.properties"))
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            self._dir = None
            raise

    def _storage_tool(self, java: str, classpath: str, *args: str) -> str:
        """Run ``kafka.tools.StorageTool`` and return its output."""
        cmd = [java, *_JVM_FLAGS, f"-Dlog4j.configuration=file:{self.directory / 'log4j.properties'}",
               "-cp", classpath, "kafka.tools.StorageTool", *args]
        proc = subprocess.run(cmd, cwd=self.directory, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=120, preexec_fn=_parent_death_hook())
        if proc.returncode != 0:
            output = "\n".join((proc.stdout + proc.stderr).splitlines()[-50:])
            raise KafkaBrokerError(
                f"kafka.tools.StorageTool {args[0]} failed (exit {proc.returncode}):\n{output}"
            )
        return proc.stdout

    def server_properties(self) -> dict[str, str]:
        """The ``server.properties`` this broker runs with."""
        port, cport = self.port, self._controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{cport}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            # After a kill the controller refuses the broker's new registration until the
            # old session expires (default 9 s); a short session makes that wait ~3 s.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "10000",
            "transaction.remove.expired.transaction.cleanup.interval.ms": "60000",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            # Records are kept whatever their timestamps: tests and examples write records with
            # fixed event times years in the past, which the default 7-day retention (and the
            # time-based segment roll) would delete within minutes, moving the log start past
            # offsets a consumer has yet to read.
            "log.retention.ms": "-1",
            "log.roll.ms": str(2**62),
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": "16777216",
        }
        props.update(self._extra)
        return props

    def _wait_ready(self, offset: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        logged = False
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise KafkaBrokerError(
                    f"Kafka broker exited with code {self._proc.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if not logged:
                with open(self.log_path, "rb") as fh:
                    fh.seek(offset)
                    logged = _READY_LINE in fh.read().decode(errors="replace")
            if logged:
                try:
                    _run_async(self._probe)
                    return
                except Exception as exc:  # noqa: BLE001 - retried until the deadline
                    last_error = exc
            time.sleep(0.1)
        raise KafkaBrokerError(
            f"Kafka broker not ready after {self.start_timeout:.0f}s "
            f"(log line seen: {logged}, last probe error: {last_error!r}); "
            f"last lines of {self.log_path}:\n{self.log_tail()}"
        )

    async def _probe(self) -> None:
        """Send a metadata request and check that this broker is listed."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=5000)
        try:
            await admin.start()
            brokers = (await admin.describe_cluster())["brokers"]
        finally:
            await admin.close()
        if not brokers:
            raise KafkaBrokerError("metadata response lists no broker")

    def log_tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines of the broker log."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - 256 * 1024))
                return "\n".join(fh.read().decode(errors="replace").splitlines()[-lines:])
        except (OSError, KafkaBrokerError):
            return "(no broker log)"

    def stop(self, timeout: float = 30.0) -> None:
        """Stop gracefully (SIGTERM); SIGKILL if still alive after ``timeout`` seconds."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    proc.wait()
            self._proc = None

    def kill(self) -> None:
        """Kill the JVM at once (SIGKILL, like ``kill -9``); data survives for ``start()``."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                self._signal_group(signal.SIGKILL)
            proc.wait()
            self._proc = None

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)

    def restart(self, timeout: float = 30.0) -> KafkaBroker:
        """Stop (if running) and start again on the same ports with the same data."""
        self.stop(timeout)
        return self.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the broker and delete its directory (config, data and log)."""
        with self._lock:
            try:
                self.stop(timeout)
            finally:
                _live.discard(self)
                if self._dir is not None:
                    shutil.rmtree(self._dir, ignore_errors=True)
                    self._dir = None

    # -- helpers ----------------------------------------------------------------

    async def acreate_topic(
        self,
        name: str,
        partitions: int = 1,
        config: Mapping[str, object] | None = None,
        *,
        exist_ok: bool = False,
        timeout: float = 30.0,
    ) -> None:
        """Create a topic and wait until every partition has a leader."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import for_code

        topic = NewTopic(name, partitions, 1, topic_configs={k: str(v) for k, v in (config or {}).items()})
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers,
                                    request_timeout_ms=int(timeout * 1000))
        try:
            await admin.start()
            response = await admin.create_topics([topic], timeout_ms=int(timeout * 1000))
            for _topic, code, *rest in response.topic_errors:
                if code != 0 and not (exist_ok and code == 36):  # 36: TOPIC_ALREADY_EXISTS
                    message = rest[0] if rest and rest[0] else ""
                    error = for_code(code).__name__
                    raise KafkaBrokerError(f"creating topic {name!r} failed: {error} {message}")
            deadline = time.monotonic() + timeout
            while True:
                (meta,) = await admin.describe_topics([name])
                parts = meta["partitions"]
                if meta["error_code"] == 0 and parts and all(p["leader"] >= 0 for p in parts):
                    return
                if time.monotonic() > deadline:
                    raise KafkaBrokerError(f"topic {name!r} has no leader after {timeout}s: {meta}")
                await asyncio.sleep(0.05)
        finally:
            await admin.close()

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        config: Mapping[str, object] | None = None,
        *,
        exist_ok: bool = False,
        timeout: float = 30.0,
    ) -> None:
        """Sync form of :meth:`acreate_topic` (also safe inside a running event loop)."""
        _run_async(lambda: self.acreate_topic(name, partitions, config, exist_ok=exist_ok, timeout=timeout))

    def __repr__(self) -> str:
        where = self.bootstrap_servers if self._port is not None else "unstarted"
        return f"<KafkaBroker {self.version} {where} {'running' if self.running else 'stopped'}>"
