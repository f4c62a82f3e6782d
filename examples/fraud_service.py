"""A fraud-alert microservice: login events in over HTTP, pattern alerts out as they happen.

Start it with one command::

    python examples/fraud_service.py --port 8080

then send events and watch alerts::

    curl -N localhost:8080/alerts &                        # server-sent events, one per alert
    curl -d '{"user": "ann", "kind": "fail"}' localhost:8080/events
    curl -d '[{"user": "ann", "kind": "fail"}, {"user": "ann", "kind": "fail"},
              {"user": "ann", "kind": "ok"}]' localhost:8080/events
    curl -d '{"user": "bob", "kind": "reset"}' localhost:8080/events   # no login within 10 min: alert

Each event (``{"user": ..., "kind": "fail" | "ok" | "reset"}``) is offered to a
``Source.queue`` with ``offer_nowait``; two patterns run on it, per user, in
processing time (each event stamped by the run's clock when it arrives):

* ``brute_force``: 3 failed logins followed by a successful one, within 1 minute;
* ``reset_without_login``: a password reset not followed by a successful login
  within 10 minutes. It fires when the 10 minutes are up, with no new event.

Alerts are printed as JSON lines and pushed to every ``GET /alerts`` client.
The HTTP server is the standard library's asyncio streams (no dependency).
``--failures-window`` and ``--reset-window`` (seconds) change the windows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from streamlib import Keep, Sink, Source
from streamlib.cep import Match, Pattern, skip_past_last_event
from streamlib.testing import VirtualClock

Event = dict[str, Any]


def is_fail(e: Event) -> bool:
    return e["kind"] == "fail"


def is_ok(e: Event) -> bool:
    return e["kind"] == "ok"


def is_reset(e: Event) -> bool:
    return e["kind"] == "reset"


def patterns(failures_window: float, reset_window: float) -> tuple[Pattern[Event], Pattern[Event]]:
    brute_force = (
        Pattern.begin("fail", skip=skip_past_last_event())
        .where(is_fail)
        .times(3)
        .followed_by("success")
        .where(is_ok)
        .within(timedelta(seconds=failures_window))
    )
    reset_without_login = (
        Pattern.begin("reset")
        .where(is_reset)
        .not_followed_by("login")
        .where(is_ok)
        .within(timedelta(seconds=reset_window))
    )
    return brute_force, reset_without_login


class FraudService:
    """The two pattern streams, the alert fan-out and the HTTP front."""

    def __init__(self, failures_window: float = 60, reset_window: float = 600, clock: VirtualClock | None = None):
        self.brute_force, self.reset = patterns(failures_window, reset_window)
        self.clock = clock
        self.listeners: set[asyncio.Queue[dict[str, Any]]] = set()
        self.alerts: list[dict[str, Any]] = []
        self.offers: list[Callable[[Event], bool]] = []
        self.completes: list[Callable[[], None]] = []
        self.done: list[asyncio.Future[Any]] = []
        self.server: asyncio.Server | None = None
        self.streams: set[asyncio.Task[Any]] = set()

    def _alert(self, name: str) -> Callable[[Match[str, Event]], None]:
        def publish(m: Match[str, Event]) -> None:
            alert = {"alert": name, "user": m.key, "events": {k: [e["kind"] for e in v] for k, v in m.events.items()}}
            self.alerts.append(alert)
            print(json.dumps(alert), flush=True)
            for q in self.listeners:
                q.put_nowait(alert)

        return publish

    async def start(self, host: str = "127.0.0.1", port: int = 8080) -> int:
        """Start both streams and the HTTP server; return the port it listens on."""
        for name, pattern in (("brute_force", self.brute_force), ("reset_without_login", self.reset)):
            queue, done = (
                Source.queue(10_000)
                .key_by(lambda e: e["user"])
                .match(pattern, time="processing")
                .to_mat(Sink.foreach(self._alert(name)), Keep.both)
                .run(clock=self.clock)
            )
            self.offers.append(queue.offer_nowait)
            self.completes.append(queue.complete)
            self.done.append(done)
        self.server = await asyncio.start_server(self._handle, host, port)
        return int(self.server.sockets[0].getsockname()[1])

    def offer(self, event: Event) -> None:
        if not isinstance(event, dict) or not isinstance(event.get("user"), str) or event.get("kind") not in (
            "fail", "ok", "reset",
        ):  # fmt: skip
            raise ValueError(f'an event is {{"user": str, "kind": "fail" | "ok" | "reset"}}, got {event!r:.200}')
        for offer in self.offers:
            if not offer({"user": event["user"], "kind": event["kind"]}):
                raise OverflowError("the service is overloaded: the event queue is full, retry later")

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self.streams):  # alert streams never end by themselves
                task.cancel()
            await asyncio.gather(*self.streams, return_exceptions=True)
            await self.server.wait_closed()
        for complete in self.completes:
            complete()
        await asyncio.gather(*self.done)

    # -- HTTP ------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = (await reader.readline()).decode("latin-1").split()
            headers: dict[str, str] = {}
            while (line := (await reader.readline()).decode("latin-1").strip()):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if len(request) < 2:
                return await _respond(writer, 400, {"error": "bad request line"})
            method, path = request[0], request[1]
            if method == "POST" and path == "/events":
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                try:
                    data = json.loads(body)
                    events = data if isinstance(data, list) else [data]
                    for e in events:
                        self.offer(e)
                except (ValueError, OverflowError) as error:
                    return await _respond(writer, 400, {"error": str(error)})
                return await _respond(writer, 202, {"accepted": len(events)})
            if method == "GET" and path == "/alerts":
                return await self._stream_alerts(writer)
            await _respond(writer, 404, {"error": "POST /events or GET /alerts"})
        finally:
            writer.close()

    async def _stream_alerts(self, writer: asyncio.StreamWriter) -> None:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.listeners.add(q)
        task = asyncio.current_task()
        assert task is not None
        self.streams.add(task)
        try:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n")
            await writer.drain()
            while True:
                alert = await q.get()
                writer.write(b"data: " + json.dumps(alert).encode() + b"\n\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.listeners.discard(q)
            self.streams.discard(task)


async def _respond(writer: asyncio.StreamWriter, status: int, body: dict[str, Any]) -> None:
    reason = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found"}[status]
    data = json.dumps(body).encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n".encode() + data
    )
    await writer.drain()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--failures-window", type=float, default=60.0, help="seconds (default 60)")
    ap.add_argument("--reset-window", type=float, default=600.0, help="seconds (default 600)")
    args = ap.parse_args()
    service = FraudService(args.failures_window, args.reset_window)
    port = await service.start(args.host, args.port)
    print(f"listening on http://{args.host}:{port} (POST /events, GET /alerts)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await service.stop()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
