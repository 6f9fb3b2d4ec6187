"""WebSocket media-stream ingest: call audio forked by a contact-centre platform.

The framing is Twilio Media Streams': JSON text messages ``connected``,
``start`` (``start.streamSid``, ``start.mediaFormat``), ``media``
(``media.payload``: base64 G.711 μ-law, 8 kHz mono) and ``stop``. Each
``streamSid`` becomes one monitor stream. A bad message gets one ``error``
line back on the same connection and is skipped; the call goes on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ser_stream.errors import SerStreamError, StreamRefused
from ser_stream.g711 import alaw_decode, mulaw_decode
from ser_stream.sources import Sink

DECODERS = {"audio/x-mulaw": mulaw_decode, "audio/x-alaw": alaw_decode}
# Twilio sends one call per connection; a connection that opens more is refused the extras, so one
# client cannot hold the monitor's whole --max-streams.
STREAMS_PER_CONNECTION = 1


class IngestError(SerStreamError):
    """One ingest message that cannot be used; the connection stays open."""


class MonitorStopping(IngestError):
    """Audio for a stream the stopping monitor has closed; the connection is closed after saying so."""


def parse_message(text: str | bytes) -> dict[str, Any]:
    """Validate one ingest frame; ``IngestError`` says what is wrong with it."""
    if isinstance(text, bytes):
        raise IngestError("binary frame: ingest messages are JSON text")
    try:
        message = json.loads(text)
    except json.JSONDecodeError as error:
        raise IngestError(f"not JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(message, dict) or not isinstance(message.get("event"), str):
        raise IngestError("message has no 'event' field")
    event = message["event"]
    if event == "start":
        start = message.get("start")
        if not isinstance(start, dict) or not isinstance(start.get("streamSid") or message.get("streamSid"), str):
            raise IngestError("start message lacks start.streamSid")
        media_format = start.get("mediaFormat", {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1})
        if not isinstance(media_format, dict) or media_format.get("encoding") not in DECODERS:
            raise IngestError(f"unsupported media format {media_format!r}: audio/x-mulaw or audio/x-alaw")
        if media_format.get("sampleRate", 8000) != 8000 or media_format.get("channels", 1) != 1:
            raise IngestError(f"unsupported media format {media_format!r}: 8000 Hz mono only")
    elif event == "media":
        media = message.get("media")
        if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
            raise IngestError("media message lacks media.payload")
        if not isinstance(message.get("streamSid"), str):
            raise IngestError("media message lacks streamSid")
    elif event == "stop":
        if not isinstance(message.get("streamSid"), str):
            raise IngestError("stop message lacks streamSid")
    elif event != "connected":
        raise IngestError(f"unknown event {event!r}")
    return message


class MediaIngest:
    """Turns ingest connections into streams via ``open_stream(stream_id, sample_rate) -> Sink``."""

    def __init__(self, open_stream: Callable[[str, int], Sink]) -> None:
        self.open_stream = open_stream
        self.errors = 0

    async def handle(self, connection: ServerConnection) -> None:
        sinks: dict[str, tuple[Sink, Callable[[bytes], Any]]] = {}  # the connection's open calls
        try:
            async for text in connection:
                try:
                    await self._handle_message(parse_message(text), sinks)
                except IngestError as error:
                    self.errors += 1
                    await connection.send(json.dumps({"type": "error", "message": str(error)}))
                    if isinstance(error, MonitorStopping):
                        await connection.close(1001, "the monitor is stopping")
                        return
        except ConnectionClosed:
            pass
        finally:
            for sink, _ in sinks.values():  # a call that vanished without 'stop' still ends cleanly
                sink.finished = True

    async def _handle_message(self, message: dict[str, Any], sinks: dict[str, tuple[Sink, Callable[[bytes], Any]]]) -> None:
        event = message["event"]
        if event == "start":
            stream_id = message["start"].get("streamSid") or message["streamSid"]
            if stream_id in sinks:
                raise IngestError(f"stream {stream_id} started twice")
            if len(sinks) >= STREAMS_PER_CONNECTION:
                raise IngestError(f"stream {stream_id} refused: this connection already carries {', '.join(sinks)}; one call per connection")
            encoding = message["start"].get("mediaFormat", {}).get("encoding", "audio/x-mulaw")
            try:
                sinks[stream_id] = (self.open_stream(stream_id, 8000), DECODERS[encoding])
            except StreamRefused as error:  # a limit reached, or the monitor stopping
                raise IngestError(str(error)) from None
        elif event == "media":
            stream_id = message["streamSid"]
            if stream_id not in sinks:
                raise IngestError(f"media for stream {stream_id} before its start")
            try:
                payload = base64.b64decode(message["media"]["payload"], validate=True)
            except (binascii.Error, ValueError):
                raise IngestError(f"stream {stream_id}: media payload is not valid base64") from None
            sink, decode = sinks[stream_id]
            samples = decode(payload)
            while sink.ring.free() < samples.size and not sink.finished:  # wait for the worker: TCP backpressure
                await asyncio.sleep(0.005)
            if sink.finished:  # the worker closed the stream: the monitor is stopping
                raise MonitorStopping(f"stream {stream_id}: the monitor is stopping; audio from here on is not analysed")
            sink.ring.write(samples)
        elif event == "stop":
            stream_id = message["streamSid"]
            if stream_id not in sinks:
                raise IngestError(f"stop for unknown stream {stream_id}")
            sink, _ = sinks.pop(stream_id)
            sink.finished = True
