"""examples/fraud_service.py: driven through its HTTP endpoint, in process (virtual clock) and as a command."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import selectors
import subprocess
import sys
import urllib.request
from typing import Any

from streamlib.testing import VirtualClock

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

from fraud_service import FraudService  # noqa: E402


async def _post(port: int, events: Any) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps(events).encode()
    writer.write(f"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 202"), response
    return json.loads(payload)  # type: ignore[no-any-return]


async def _next_alert(reader: asyncio.StreamReader) -> dict[str, Any]:
    while True:
        line = await asyncio.wait_for(reader.readline(), 30)
        if line.startswith(b"data: "):
            return json.loads(line[6:])  # type: ignore[no-any-return]


async def test_alerts_stream_out_as_they_happen_and_absence_fires_on_the_clock() -> None:
    clock = VirtualClock()
    service = FraudService(clock=clock)
    port = await service.start(port=0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /alerts HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    while service.listeners == set():
        await asyncio.sleep(0)  # the handler registers the stream on its next turn

    assert await _post(port, [{"user": "ann", "kind": "fail"}] * 2) == {"accepted": 2}
    await _post(port, {"user": "bob", "kind": "reset"})
    await _post(port, {"user": "cy", "kind": "reset"})
    await _post(port, [{"user": "ann", "kind": "fail"}, {"user": "ann", "kind": "ok"}])
    alert = await _next_alert(reader)
    assert alert == {"alert": "brute_force", "user": "ann", "events": {"fail": ["fail"] * 3, "success": ["ok"]}}

    await clock.advance(300)
    await _post(port, {"user": "cy", "kind": "ok"})  # cy logs in within 10 minutes: no alert for cy
    await clock.advance(301)  # 601 s after bob's reset, and no event since
    alert = await _next_alert(reader)
    assert alert == {"alert": "reset_without_login", "user": "bob", "events": {"reset": ["reset"]}}
    writer.close()
    await service.stop()
    assert [a["user"] for a in service.alerts] == ["ann", "bob"]


def test_bad_events_get_a_clear_error() -> None:
    async def go() -> None:
        service = FraudService(clock=VirtualClock())
        port = await service.start(port=0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps({"user": "ann", "kind": "logout"}).encode()
        writer.write(f"POST /events HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        response = await reader.read()
        writer.close()
        assert response.startswith(b"HTTP/1.1 400")
        assert b'\\"kind\\": \\"fail\\" | \\"ok\\" | \\"reset\\"' in response
        await service.stop()

    asyncio.run(go())


def _readline(proc: subprocess.Popen[str], sel: selectors.BaseSelector) -> str:
    if not sel.select(timeout=60):
        proc.kill()
        raise AssertionError("the service printed nothing for 60 s")
    assert proc.stdout is not None
    return proc.stdout.readline()


def test_the_service_starts_with_one_command_and_alerts_over_http() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "fraud_service.py"), "--port", "0", "--reset-window", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        first = _readline(proc, sel)
        assert first.startswith("listening on http://"), first
        url = first.split()[2]

        def post(events: Any) -> None:
            req = urllib.request.Request(url + "/events", data=json.dumps(events).encode(), method="POST")
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 202

        post([{"user": "eve", "kind": "fail"}] * 3 + [{"user": "eve", "kind": "ok"}])
        assert json.loads(_readline(proc, sel))["alert"] == "brute_force"
        post({"user": "dan", "kind": "reset"})
        assert json.loads(_readline(proc, sel)) == {
            "alert": "reset_without_login", "user": "dan", "events": {"reset": ["reset"]},
        }  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=30)
