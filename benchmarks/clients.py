"""Client helpers shared by the benchmarks and the tests: free ports, patient and stalled subscribers."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing on loopback is using right now (TCP by default, UDP with ``SOCK_DGRAM``)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def subscriber_when_up(port: int, path: str = "/", seconds: float = 60.0, **options: Any) -> ClientConnection:
    """A WebSocket subscriber, retrying while the monitor starts; ``options`` go to ``connect``."""
    for _ in range(int(seconds * 10)):
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
