"""One HTTP port for operations: ``/metrics``, ``/health``, ``/ready``, ``/state/{store}/{key}``.

A small HTTP/1.1 server on ``asyncio.start_server`` (standard library only):
each connection sends one GET request and gets one response, then closes.
``/metrics`` is ``prometheus_client.generate_latest`` over the registry (the
optional ``streamlib[prometheus]`` extra); the other routes answer JSON.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import msgspec

from .registry import MetricsRegistry

log = logging.getLogger("streamlib.metrics")

#: (status, JSON body, extra headers) for a ``/state/{store}/{key}`` request.
StateAnswer = tuple[int, Any, dict[str, str]]
StateHandler = Callable[[str, str, dict[str, str]], StateAnswer]

_REASONS = {200: "OK", 307: "Temporary Redirect", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 500: "Internal Server Error", 503: "Service Unavailable"}
_MAX_REQUEST = 16 * 1024


class MetricsServer:
    """Serves a registry's metrics, health, readiness and (optionally) state queries on one port.

    ``ready()`` returns ``(ready, details)``: ``/ready`` answers 200 or 503 with
    the details. ``state(store, key, query)`` answers ``/state/{store}/{key}``.
    ``port=0`` picks a free port; :attr:`port` is the one bound after :meth:`start`.

    >>> server = MetricsServer(registry, port=9100)
    >>> await server.start()         # GET http://localhost:9100/metrics
    >>> await server.stop()
    """

    def __init__(
        self,
        registry: MetricsRegistry,
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        ready: Callable[[], tuple[bool, dict[str, Any]]] | None = None,
        state: StateHandler | None = None,
    ) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"metrics port must be an int from 0 to 65535 (0: any free port), got {port!r}")
        self.registry = registry
        self.host = host
        self.port = port
        self.ready = ready
        self.state = state
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind and listen; :attr:`port` is then the bound port."""
        if self._server is not None:
            return
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as error:
            raise OSError(
                error.errno, f"cannot serve metrics on {self.host}:{self.port}: {error.strerror or error} "
                "(choose another metrics port, or 0 for any free one)"
            ) from error
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("serving /metrics, /health, /ready and /state on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- requests -------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return
            if len(head) > _MAX_REQUEST:
                await self._send(writer, 400, {"error": "request too large"})
                return
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            if len(parts) != 3:
                await self._send(writer, 400, {"error": f"bad request line {line!r}"})
                return
            method, target, _version = parts
            if method not in ("GET", "HEAD"):
                await self._send(writer, 405, {"error": f"{method} is not supported: use GET"})
                return
            await self._route(writer, target)
        except Exception:  # noqa: BLE001 - one bad request never stops the server
            log.exception("answering a metrics/state request failed")
            try:
                await self._send(writer, 500, {"error": "internal error, see the server's log"})
            except Exception:  # noqa: BLE001
                pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except Exception:  # noqa: BLE001 - the peer may be gone
                pass

    async def _route(self, writer: asyncio.StreamWriter, target: str) -> None:
        url = urlsplit(target)
        path = url.path
        if path == "/metrics":
            from .prometheus import generate

            body, content_type = generate(self.registry)
            await self._write(writer, 200, body, content_type, {})
        elif path == "/health":
            await self._send(writer, 200, {"status": "ok"})
        elif path == "/ready":
            ok, details = self.ready() if self.ready is not None else (True, {})
            await self._send(writer, 200 if ok else 503, {"ready": ok, **details})
        elif path.startswith("/state/"):
            rest = path[len("/state/"):].split("/", 1)
            if len(rest) != 2 or not rest[0] or not rest[1]:
                await self._send(writer, 400, {"error": "use /state/{store}/{key}"})
                return
            if self.state is None:
                await self._send(writer, 404, {"error": "this server has no queryable state"})
                return
            store, key = unquote(rest[0]), unquote(rest[1])
            status, body, headers = self.state(store, key, dict(parse_qsl(url.query)))
            await self._send(writer, status, body, headers)
        else:
            await self._send(writer, 404, {"error": f"no route {path!r}: /metrics, /health, /ready, "
                                                    "/state/{store}/{key}"})

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: Any,
                    headers: dict[str, str] | None = None) -> None:
        await self._write(writer, status, msgspec.json.encode(body) + b"\n", "application/json", headers or {})

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str,
                     headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}", f"Content-Type: {content_type}",
                 f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()


