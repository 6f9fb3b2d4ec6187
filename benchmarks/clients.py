"""Helpers shared by the benchmarks and the tests: free ports, patient and stalled subscribers, strict JSON."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing on loopback is using right now (TCP by default, UDP with ``SOCK_DGRAM``)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MonitorExited(RuntimeError):
    """The monitor process ended before it took a subscriber."""


async def subscriber_when_up(port: int, path: str = "/", seconds: float = 60.0, monitor: subprocess.Popen[bytes] | None = None,
                             **options: Any) -> ClientConnection:
    """A WebSocket subscriber, retrying while the monitor starts; ``options`` go to ``connect``.

    Given the ``monitor`` process, its exit ends the wait at once (``MonitorExited``): a refused option once
    left the caller retrying for the whole wait."""
    for _ in range(int(seconds * 10)):
        if monitor is not None and monitor.poll() is not None:
            raise MonitorExited(f"the monitor exited with status {monitor.returncode} before it listened on port {port}")
        try:
            return await connect(f"ws://127.0.0.1:{port}{path}", **options)
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"no monitor on port {port} after {seconds:.0f} s")


def stalled_client(port: int) -> socket.socket:
    """A raw WebSocket client with a tiny receive buffer that completes the handshake and never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"port {port} closed during the WebSocket handshake")
        response += chunk
    if not response.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"port {port} refused the WebSocket handshake: {response.splitlines()[0]!r}")
    return sock


NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def strict_json(value: Any, **options: Any) -> str:
    """JSON that every parser reads: a latency that is infinite (a clip never answered) or not measured (NaN) is
    written as the string "inf" or "nan"; Python's json would write the bare words Infinity and NaN, which are not
    JSON. ``figures_from_json`` turns them back into floats."""

    def finite(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return "nan" if math.isnan(item) else ("inf" if item > 0 else "-inf")
        if isinstance(item, dict):
            return {key: finite(inner) for key, inner in item.items()}
        if isinstance(item, (list, tuple)):
            return [finite(inner) for inner in item]
        return item

    return json.dumps(finite(value), allow_nan=False, **options)


def figures_from_json(value: Any) -> Any:
    """The figures ``strict_json`` wrote, with "inf", "-inf" and "nan" floats again."""
    if isinstance(value, str):
        return NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {key: figures_from_json(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [figures_from_json(inner) for inner in value]
    return value
