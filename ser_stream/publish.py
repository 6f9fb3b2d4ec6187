"""WebSocket fan-out: every subscriber has its own bounded queue; nothing upstream awaits a client.

A subscriber that reads slowly (or never) loses its *oldest* queued messages
first — the newest state is what a live view needs — and the count of what it
lost is sent to it as a ``dropped`` message before the next one it does get.
Subscribers may ask for one stream: ``ws://HOST:PORT/?stream=ID``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from ser_stream.messages import Message

logging.getLogger("websockets").setLevel(logging.CRITICAL)


@dataclass(eq=False)
class Subscriber:
    connection: ServerConnection
    stream: str | None
    queue: deque[str]
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: int = 0
    unreported_drops: int = 0


class Publisher:
    """Serves ``hello`` then every published message to any number of subscribers."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, queue_size: int = 512) -> None:
        self.host, self.port, self.queue_size = host, port, queue_size
        self.hello: Message = {}
        self.subscribers: set[Subscriber] = set()
        self.dropped_total = 0
        self.active_streams: dict[str, Message] = {}  # stream_started of each live stream, for late joiners
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ingest: Callable[[ServerConnection], Awaitable[None]] | None = None  # serves /ingest when set
        self.server: Server | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.server = await serve(self._serve, self.host, self.port, max_size=2**16, ping_interval=20)
        self.port = self.server.sockets[0].getsockname()[1] if self.server.sockets else self.port

    async def close(self, drain_seconds: float = 2.0) -> None:
        """Give subscribers up to ``drain_seconds`` to receive what is queued, then close."""
        deadline = asyncio.get_running_loop().time() + drain_seconds
        while any(s.queue for s in self.subscribers) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for subscriber in list(self.subscribers):
            if subscriber.queue:  # still stalled after the drain time: cut it off rather than wait
                subscriber.connection.transport.abort()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def publish(self, message: Message) -> None:
        """Queue ``message`` for every matching subscriber (call on the event loop's thread)."""
        text = json.dumps(message, separators=(",", ":"))
        stream = message.get("stream")
        if message.get("type") == "stream_started":
            self.active_streams[str(stream)] = message
        elif message.get("type") == "stream_ended":
            self.active_streams.pop(str(stream), None)
        for subscriber in self.subscribers:
            if subscriber.stream is not None and stream is not None and stream != subscriber.stream:
                continue
            if len(subscriber.queue) == subscriber.queue.maxlen:
                subscriber.dropped += 1
                subscriber.unreported_drops += 1
                self.dropped_total += 1
            subscriber.queue.append(text)
            subscriber.ready.set()

    def publish_threadsafe(self, message: Message) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.publish, message)

    async def _serve(self, connection: ServerConnection) -> None:
        url = urlsplit(connection.request.path if connection.request else "/")
        if url.path.rstrip("/") == "/ingest" and self.ingest is not None:
            await self.ingest(connection)
            return
        query = parse_qs(url.query)
        stream = query.get("stream", [None])[0]
        subscriber = Subscriber(connection, stream, deque(maxlen=self.queue_size))
        self.subscribers.add(subscriber)
        # Wait on our queue *or* the connection closing, so a client that leaves while
        # nothing is queued does not leave its handler waiting for ever.
        closed = asyncio.ensure_future(connection.wait_closed())
        try:
            await connection.send(json.dumps(self.hello))
            for started in list(self.active_streams.values()):
                if stream is None or started["stream"] == stream:
                    await connection.send(json.dumps(started))
            while True:
                ready = asyncio.ensure_future(subscriber.ready.wait())
                done, _ = await asyncio.wait({ready, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    ready.cancel()
                    break
                subscriber.ready.clear()
                while subscriber.queue:
                    if subscriber.unreported_drops:
                        notice: dict[str, Any] = {"type": "dropped", "count": subscriber.unreported_drops}
                        subscriber.unreported_drops = 0
                        await connection.send(json.dumps(notice))
                    await connection.send(subscriber.queue.popleft())
        except ConnectionClosed:
            pass
        finally:
            closed.cancel()
            self.subscribers.discard(subscriber)
