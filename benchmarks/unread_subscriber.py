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
4 MB). With ``--through-relay`` the second is served as the monitor does now but
through a plain TCP relay, a reverse proxy at its simplest: its buffers toward
the subscriber, which the system grows as it grew the monitor's, take what the
monitor's socket no longer holds (``--relay-send-buffer`` caps them).

    .venv/bin/python -m benchmarks.unread_subscriber [--rate 200] [--seconds 60] [--through-relay [--relay-send-buffer BYTES]]
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

from ser_stream import EMOTIONS
from ser_stream.cli import OneLineParser, positive_number, positive_seconds, whole_number
from ser_stream.messages import Message
from ser_stream.publish import SUBSCRIBER_QUEUE, SUBSCRIBER_UNSENT_BYTES, TCP_NOTSENT_LOWAT, Publisher

BEFORE_QUEUE = 512  # --subscriber-queue's default before the socket was capped


def window_message(number: int) -> Message:
    """The ``number``th window of a monitor with 100 calls: random probabilities, so they do not all look alike."""
    weights = [random.random() for _ in EMOTIONS]
    return {"type": "window", "stream": f"rtp-{0x9C5536F2 + number % 100:08x}", "utterance": number // 400 + 1,
            "t_start": round(number / 200, 3), "t_end": round(number / 200 + 2, 3),
            "probabilities": {label: round(weight / sum(weights), 4) for label, weight in zip(EMOTIONS, weights)}}


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
    relayed: bool = False  # through a TCP relay
    relay_send_buffer: int | None = None  # the relay's SO_SNDBUF toward the subscriber; None: the system's

    @property
    def unread(self) -> int:
        """Handed to the connection and never read: counted nowhere if it is cut off now."""
        return self.published - self.queued

    def __str__(self) -> str:
        held = f"{self.unacknowledged_bytes / 1e6:.2f} MB" if self.unacknowledged_bytes is not None else "?"
        socket_held = "its connection closed" if self.cut_off else f"the monitor's socket holds {held} unacknowledged"
        how = (f"socket capped at {SUBSCRIBER_UNSENT_BYTES // 1024} KiB unsent" if self.capped else "socket uncapped (before)")
        if self.relayed:
            buffers = "the system's buffers" if self.relay_send_buffer is None else f"a {self.relay_send_buffer}-byte send buffer"
            how = f"through a TCP relay with {buffers}, {how}"
        first = "cut off, its queue counted" if self.cut_off else "the first counted drop" if self.dropped else "no drop yet"
        return (f"{how}, --subscriber-queue {self.queue_size}: {self.published} messages of {self.message_bytes:.0f} bytes published "
                f"at {self.rate:g}/s in {self.seconds:.1f} s ({first}; "
                f"{'the keepalive had given up on it' if self.keepalive_gave_up else 'its connection still open'}); "
                f"{self.unread} of them ({self.unread * self.message_bytes / 1e6:.2f} MB) handed to the connection unread, "
                f"{self.queued} queued; {socket_held}")


async def relay_to(port: int, send_buffer: int | None) -> asyncio.Server:
    """A TCP relay to ``port`` on loopback, as a reverse proxy relays a WebSocket: it reads on while it can write on.
    ``send_buffer``: SO_SNDBUF on its listening socket, which each socket it accepts (toward a subscriber) inherits."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def relay_one(subscriber_reader: asyncio.StreamReader, subscriber_writer: asyncio.StreamWriter) -> None:
        monitor_reader, monitor_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pipe(subscriber_reader, monitor_writer), pipe(monitor_reader, subscriber_writer))

    listening = socket.create_server(("127.0.0.1", 0))
    if send_buffer is not None:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    return await asyncio.start_server(relay_one, sock=listening)


async def measure(rate: float, seconds: float, queue_size: int, capped: bool = True, relayed: bool = False,
                  relay_send_buffer: int | None = None) -> Taken:
    publisher = Publisher("127.0.0.1", 0, queue_size=queue_size)
    publisher.hello = {"type": "hello"}
    await publisher.start()
    relay = await relay_to(publisher.port, relay_send_buffer) if relayed else None
    subscriber_socket = socket.create_connection(("127.0.0.1", relay.sockets[0].getsockname()[1] if relay else publisher.port))
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
    # until a drop is counted, or it is cut off (a relay can have taken all, leaving nothing queued to count), or time is up
    while publisher.dropped_total == 0 and subscriber in publisher.subscribers and time.monotonic() - began < seconds:
        message = window_message(published)
        published += 1
        text_bytes += len(json.dumps(message, separators=(",", ":")))
        publisher.publish(message)
        await asyncio.sleep(max(0.0, began + published / rate - time.monotonic()))
    taken = Taken(capped, rate, time.monotonic() - began, published, text_bytes / published, len(subscriber.queue), queue_size,
                  publisher.dropped_total, publisher.cut_off_subscribers > 0, subscriber.connection.state.name != "OPEN",
                  unsent_bytes(monitor_socket), relayed, relay_send_buffer)
    subscriber_socket.close()
    if relay is not None:
        relay.close()
    await publisher.close(drain_seconds=0.1)
    return taken


async def before_and_now(rate: float, seconds: float, queue_size: int) -> tuple[Taken, Taken]:
    """The two side by side, each with its own publisher on the same loop."""
    before, now = await asyncio.gather(measure(rate, seconds, BEFORE_QUEUE, capped=False), measure(rate, seconds, queue_size))
    return before, now


async def direct_and_relayed(rate: float, seconds: float, queue_size: int, relay_send_buffer: int | None) -> tuple[Taken, Taken]:
    """The monitor as it is, a subscriber connected to it and one through a relay, side by side."""
    direct, relayed = await asyncio.gather(measure(rate, seconds, queue_size),
                                           measure(rate, seconds, queue_size, relayed=True, relay_send_buffer=relay_send_buffer))
    return direct, relayed


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.unread_subscriber", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=positive_number("messages a second", "messages a second"), default=200.0, help="messages a second (default %(default)s)")
    parser.add_argument("--seconds", type=positive_seconds, default=60.0, help="give up after this long without a drop (default %(default)s)")
    parser.add_argument("--subscriber-queue", type=whole_number(1), default=SUBSCRIBER_QUEUE, help="the monitor's --subscriber-queue (default %(default)s)")
    parser.add_argument("--through-relay", action="store_true",
                        help="measure a subscriber through a plain TCP relay (a reverse proxy) beside one connected directly, instead of the monitor as it was")
    parser.add_argument("--relay-send-buffer", type=whole_number(1), metavar="BYTES",
                        help="with --through-relay: the relay's send buffer toward the subscriber (SO_SNDBUF; default: the system's, which Linux grows to 4 MB)")
    args = parser.parse_args(argv)
    if args.relay_send_buffer is not None and not args.through_relay:
        parser.error("--relay-send-buffer needs --through-relay")
    measured = (direct_and_relayed(args.rate, args.seconds, args.subscriber_queue, args.relay_send_buffer) if args.through_relay
                else before_and_now(args.rate, args.seconds, args.subscriber_queue))
    for taken in asyncio.run(measured):
        print(taken)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
