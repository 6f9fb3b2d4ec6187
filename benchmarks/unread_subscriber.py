"""How much a subscriber that stops reading takes into its connection's buffers, uncounted, before a drop is counted.

A real publisher on loopback serves one subscriber that completes its handshake
and never reads again (no compression, the system's default socket buffers), and
is sent window messages like a monitor's (eight probabilities) at ``--rate`` a
second until it has a drop counted: its queue (``--subscriber-queue``) overflows,
or it is cut off (its connection took nothing for 40 s, or the keepalive gave up
on it) and what was queued for it is counted. What was handed to the connection
by then (all that was published less what is still queued) is lost uncounted if
the subscriber is cut off: ``subscriber_drops`` counts only its queue.

Two subscribers are measured side by side: one as the monitor serves them now
(its socket holds at most ``SUBSCRIBER_UNSENT_BYTES`` unsent), and one as before
(``--subscriber-queue`` 512, the socket uncapped, so Linux grows its buffer to
4 MB).

    .venv/bin/python -m benchmarks.unread_subscriber [--rate 200] [--seconds 60]
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
import random
import socket
import struct
import termios
import time
from dataclasses import dataclass

from ser_stream.cli import OneLineParser
from ser_stream.messages import Message
from ser_stream.publish import SUBSCRIBER_QUEUE, SUBSCRIBER_UNSENT_BYTES, TCP_NOTSENT_LOWAT, Publisher

BEFORE_QUEUE = 512  # --subscriber-queue's default before the socket was capped
LABELS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def window_message(number: int) -> Message:
    """The ``number``th window of a monitor with 100 calls: random probabilities, so they do not all look alike."""
    weights = [random.random() for _ in LABELS]
    return {"type": "window", "stream": f"rtp-{0x9C5536F2 + number % 100:08x}", "utterance": number // 400 + 1,
            "t_start": round(number / 200, 3), "t_end": round(number / 200 + 2, 3),
            "probabilities": {label: round(weight / sum(weights), 4) for label, weight in zip(LABELS, weights)}}


def unsent_bytes(sock: socket.socket) -> int | None:
    """What the monitor's socket holds that the subscriber has not acknowledged (Linux: TIOCOUTQ); None once closed."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0])
    except (OSError, ValueError):  # ValueError: closed, its descriptor -1
        return None


@dataclass(frozen=True)
class Taken:
    """What one subscriber that stopped reading had been sent when the first drop was counted (or the time ran out)."""

    capped: bool  # its socket's unsent bytes capped, as the monitor does now
    rate: float
    seconds: float
    published: int
    message_bytes: float  # the mean JSON text's
    queued: int  # still in its queue: counted in subscriber_drops if it is cut off now
    queue_size: int
    dropped: int
    cut_off: bool  # its drops are its queue, counted as it was cut off
    keepalive_gave_up: bool
    unacknowledged_bytes: int | None  # in the monitor's socket (Linux only)

    @property
    def unread(self) -> int:
        """Handed to the connection and never read: counted nowhere if it is cut off now."""
        return self.published - self.queued

    def __str__(self) -> str:
        held = f"{self.unacknowledged_bytes / 1e6:.2f} MB" if self.unacknowledged_bytes is not None else "?"
        socket_held = "its connection closed" if self.cut_off else f"the monitor's socket holds {held} unacknowledged"
        how = (f"socket capped at {SUBSCRIBER_UNSENT_BYTES // 1024} KiB unsent" if self.capped else "socket uncapped (before)")
        first = "no drop yet" if not self.dropped else "cut off, its queue counted" if self.cut_off else "the first counted drop"
        return (f"{how}, --subscriber-queue {self.queue_size}: {self.published} messages of {self.message_bytes:.0f} bytes published "
                f"at {self.rate:g}/s in {self.seconds:.1f} s ({first}; "
                f"{'the keepalive had given up on it' if self.keepalive_gave_up else 'its connection still open'}); "
                f"{self.unread} of them ({self.unread * self.message_bytes / 1e6:.2f} MB) handed to the connection unread, "
                f"{self.queued} queued; {socket_held}")


async def measure(rate: float, seconds: float, queue_size: int, capped: bool = True) -> Taken:
    publisher = Publisher("127.0.0.1", 0, queue_size=queue_size)
    publisher.hello = {"type": "hello"}
    await publisher.start()
    subscriber_socket = socket.create_connection(("127.0.0.1", publisher.port))
    key = base64.b64encode(os.urandom(16)).decode()
    subscriber_socket.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    while not publisher.subscribers:
        await asyncio.sleep(0.01)
    (subscriber,) = publisher.subscribers
    monitor_socket = subscriber.connection.transport.get_extra_info("socket")
    if not capped and TCP_NOTSENT_LOWAT is not None:  # 0: the system's default (net.ipv4.tcp_notsent_lowat), no cap
        monitor_socket.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, 0)
    published = text_bytes = 0
    began = time.monotonic()
    while publisher.dropped_total == 0 and time.monotonic() - began < seconds:
        message = window_message(published)
        published += 1
        text_bytes += len(json.dumps(message, separators=(",", ":")))
        publisher.publish(message)
        await asyncio.sleep(max(0.0, began + published / rate - time.monotonic()))
    taken = Taken(capped, rate, time.monotonic() - began, published, text_bytes / published, len(subscriber.queue), queue_size,
                  publisher.dropped_total, publisher.cut_off_subscribers > 0, subscriber.connection.state.name != "OPEN",
                  unsent_bytes(monitor_socket))
    subscriber_socket.close()
    await publisher.close(drain_seconds=0.1)
    return taken


async def before_and_now(rate: float, seconds: float, queue_size: int) -> tuple[Taken, Taken]:
    """The two side by side, each with its own publisher on the same loop."""
    before, now = await asyncio.gather(measure(rate, seconds, BEFORE_QUEUE, capped=False), measure(rate, seconds, queue_size))
    return before, now


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.unread_subscriber", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="messages a second (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=60.0, help="give up after this long without a drop (default %(default)s)")
    parser.add_argument("--subscriber-queue", type=int, default=SUBSCRIBER_QUEUE, help="the monitor's --subscriber-queue (default %(default)s)")
    args = parser.parse_args(argv)
    for taken in asyncio.run(before_and_now(args.rate, args.seconds, args.subscriber_queue)):
        print(taken)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
