"""WebSocket fan-out: every subscriber has its own bounded queue; nothing upstream awaits a client.

A subscriber that reads slowly (or never) loses its *oldest* queued messages
first — the newest state is what a live view needs — and the count of what it
lost is sent to it as a ``dropped`` message before the next one it does get.
Its socket holds little it has not sent (``SUBSCRIBER_UNSENT_BYTES``): what one
that stops reading misses overflows its queue, counted, not the kernel's buffer.
One that answers no keepalive ping (see ``Keepalive``) is cut off, and what was
still queued for it is counted with the drops; so is one that closes abnormally
(its own keepalive giving up on the monitor: 1011), not one that leaves (1000, 1001, or a close without a code).
Subscribers may ask for one stream: ``ws://HOST:PORT/?stream=ID``, and, when
the monitor records (``--record``), for every utterance since one they saw:
``?since=SEQ``; with ``&live=0``, only those (no live messages: the connection
is closed after ``caught_up``, and it is no subscriber of the live ones).

Access control happens here too: a bearer token (``Authorization: Bearer T``
or ``?token=T`` for browsers, compared in constant time; a wrong or missing
one closes the connection with 1008, policy violation), an allow-list of the
host names the monitor is reached by (against DNS rebinding) and one of browser
origins (others get HTTP 403 before the upgrade), and a limit on ingest
connections, concurrent and per second (HTTP 429), charged only to clients with
the token. Twilio can send neither header nor query: an ingest client without
the token is held, uncharged, until its ``start`` frame names it in
``start.customParameters.token`` (``<Parameter name="token" .../>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import ipaddress
import json
import logging
import math
import re
import resource
import socket
import sqlite3
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, unquote_plus, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from ser_stream.errors import one_line, shown
from ser_stream.messages import CaughtUp, Dropped, Message, notice
from ser_stream.record import CatchUpConnections, last_stored_seq, read_since
from ser_stream.web import http_answer

logging.getLogger("websockets").setLevel(logging.CRITICAL)

LARGEST_SEQ = 2**63 - 1  # seqs are SQLite row ids; a larger ?since= overflows the catch-up's query

# Messages queued per subscriber before its oldest are dropped (--subscriber-queue): 40 s at 200 messages a second (100
# calls speaking), as long as the keepalive lets a paused subscriber live: its pause must end within 20 s of the first ping
# after it began, 20 to 40 s by where it falls (docs/protocol.md, "Slow subscribers"). The texts are shared between
# subscribers: a stalled one costs a pointer per message, and keeps the last 8192 texts alive (~2.3 MB of windows).
SUBSCRIBER_QUEUE = 8192
# What a subscriber's socket may hold that it has not yet sent (TCP_NOTSENT_LOWAT). Uncapped, Linux grows a socket's send
# buffer to 4 MB: a subscriber that stopped reading took ~17,000 messages into it, lost uncounted once it was cut off,
# before its queue dropped (and counted) the first. Capped, its connection takes ~0.25 MB unread, with websockets' own
# 32 KiB (its write_limit) and the client's receive buffer; what it misses beyond is dropped from its queue, counted.
SUBSCRIBER_UNSENT_BYTES = 128 * 1024
# Python lacks the name on some builds; 25 is Linux's value. Where the system has no such option, nothing is capped.
TCP_NOTSENT_LOWAT: int | None = getattr(socket, "TCP_NOTSENT_LOWAT", 25 if sys.platform.startswith("linux") else None)
# How a subscriber that chose to leave closes: 1000 (a client done), 1001 (a page
# reloaded or left), none (a browser's close() without a code). Any other (1011: its own keepalive gave up on the monitor,
# 1002, ...) ends it abnormally: it is cut off, and what was queued for it is lost and counted, as when the monitor cuts it off.
LEAVING_CODES = frozenset({CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD})
# What makes asyncio's accept loop give up on a waiting connection, report it to the loop's exception handler (a
# traceback by default) and try again a second later: no descriptor left (the process's limit, or the system's), no memory.
ACCEPT_SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True)
class AccessConfig:
    """Who may connect; the defaults suit a monitor bound to 127.0.0.1."""

    token: str | None = None
    allowed_origins: tuple[str, ...] = ()  # besides the page's own origin; clients without Origin are not browsers
    allowed_hosts: tuple[str, ...] = ()  # names the monitor is reached by besides loopback's, --ws's and the origins' (--allow-host)
    tls: ssl.SSLContext | None = None
    max_ingest_connections: int = 200
    ingest_connections_per_second: float = 20.0
    max_message_bytes: int = 2**16  # a Twilio media frame is ~0.5 kB
    # Ingest clients that sent no token in their request, held until their 'start' names it (Twilio's only way):
    # at most this many at once (beyond: HTTP 429), each for at most this long before it is refused.
    pending_ingest_connections: int = 16
    start_token_seconds: float = 5.0


@dataclass(frozen=True)
class Keepalive:
    """How long a connection may answer nothing before it is cut off: websockets' timings (shorter in the tests).

    Every ``ping_seconds`` each connection is pinged; one that has not answered ``pong_seconds`` later is closed with
    1011 (keepalive ping timeout) and dropped ``close_seconds`` after that unless it answers the close. A ping waits
    behind what the connection has not yet taken, so a subscriber that reads nothing can fill the buffers before its
    ping goes out and would then never be cut off: a send to a subscriber that waits ``stalled_seconds`` drops it too.
    """

    ping_seconds: float = 20.0
    pong_seconds: float = 20.0
    close_seconds: float = 10.0

    @property
    def stalled_seconds(self) -> float:
        return self.ping_seconds + self.pong_seconds


class SubscriberStalled(Exception):
    """A subscriber's connection took nothing for ``Keepalive.stalled_seconds``: it has been dropped."""


class IngestHandler(Protocol):
    """Serves one /ingest connection; ``first_frame`` is a frame read from it already (the ``start`` that named the token)."""

    def __call__(self, connection: ServerConnection, first_frame: str | None = None, /) -> Awaitable[None]: ...


class RateLimit:
    """Token bucket: ``rate`` per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens = rate, burst, burst
        self.updated = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def request_token(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return next((unquote_plus(value) for name, value in query_pairs(request.path) if name == "token"), None)


def query_pairs(target: str) -> list[tuple[str, str]]:
    """A request target's query as (name, value) pairs in order, names form-decoded, values as sent."""
    return [(unquote_plus(name), value) for name, _, value in (pair.partition("=") for pair in target.partition("?")[2].split("&") if pair)]


HOST_HEADER = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:/@\[\]]+)(?::[0-9]{1,5})?")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
EVERY_ADDRESS = ("", "0.0.0.0", "::")  # a --ws host that listens on all of this machine's addresses
NO_INGEST = "no call audio is taken here: /ingest is served by a monitor started with --ingest\n"


def host_name(text: str) -> str | None:
    """The name or address of a ``Host`` header or an origin's host, lower-case, without port, brackets or final
    dot (``[::1]:8765`` → ``::1``); None for anything else."""
    address = text.strip()
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    try:  # an address as given to --ws or --allow-host: bare IPv6 has colons the Host pattern reads as a port
        return ipaddress.ip_address(address).compressed
    except ValueError:
        pass
    match = HOST_HEADER.fullmatch(text.strip())
    return match.group(1).strip("[]").rstrip(".").lower() if match else None


def token_matches(presented: str | None, expected: str) -> bool:
    if presented is None:
        return False
    # surrogatepass: a start's JSON "\ud800", or an environment's undecodable byte, has no UTF-8 of its own
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class FirstFrame:
    """A frame read from an ingest client that sent no token in its request, before it is admitted."""

    event: str | None  # None: not an ingest frame (not JSON, no event)
    token: str | None = None  # a start's ``start.customParameters.token``, when a string
    start: str | None = None  # that start as JSON without the token, for the call: it can never log or publish it


def first_frame(text: str | bytes) -> FirstFrame:
    """What an ingest client's frame says before it is admitted: its event and, for a ``start``, the token it names."""
    try:
        frame = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):  # not JSON, a number of over 4300 digits, nesting too deep
        return FirstFrame(None)
    if not isinstance(frame, dict) or not isinstance(event := frame.get("event"), str):
        return FirstFrame(None)
    details = frame.get("start") if event == "start" else None
    parameters = details.get("customParameters") if isinstance(details, dict) else None
    token = parameters.pop("token", None) if isinstance(parameters, dict) else None
    return FirstFrame(event, token, json.dumps(frame)) if isinstance(token, str) else FirstFrame(event)


def counting_connection(failed: dict[str, int]) -> type[ServerConnection]:
    """A connection class that counts, by cause, opening handshakes that fail.

    websockets aborts those quietly (and its log is silenced here): a client
    that closes before sending its request, sends a malformed one, or takes
    longer than the open timeout. Deliberate refusals (403, 429) are counted
    in ``Publisher.refused`` instead.
    """

    class CountedConnection(ServerConnection):
        async def handshake(self, *args: Any, **kwargs: Any) -> None:
            try:
                await super().handshake(*args, **kwargs)
            except asyncio.CancelledError:  # the open timeout, or the server closing
                failed["cancelled"] = failed.get("cancelled", 0) + 1
                raise
            error = self.protocol.handshake_exc
            if error is not None:
                cause = error.__cause__ or error  # e.g. EOFError under InvalidMessage: closed before a request
                failed[type(cause).__name__] = failed.get(type(cause).__name__, 0) + 1

    return CountedConnection


def warn_on_stderr(line: str) -> None:
    """Where a publisher's warnings go when no monitor takes them."""
    print(f"ser-stream: warning: {line}", file=sys.stderr, flush=True)


def accept_shortage(error: OSError) -> str:
    """The warning for connections the listener cannot accept: what ran out, what to do, and where they are counted."""
    if error.errno == errno.EMFILE:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        cause = f"the monitor has as many files and connections open as its limit allows, {limit}: raise it (ulimit -n, systemd's LimitNOFILE=)"
    elif error.errno == errno.ENFILE:
        cause = "the system has as many files open as it allows (fs.file-max)"
    else:
        cause = "the system has no memory left for them"
    return (f"connections are not being accepted ({error.strerror or errno.errorcode.get(error.errno or 0, 'no resources')}): {cause}; "
            "they wait, tried again each second, each second counted in failed_accepts")


def since_seq(text: str) -> int | None:
    """``?since=`` as an utterance seq, or None: ASCII digits only (``str.isdigit`` also takes '²'), 0 to ``LARGEST_SEQ``."""
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(LARGEST_SEQ)):  # before int(), which refuses strings of over 4300 digits
        return None
    seq = int(digits)
    return seq if seq <= LARGEST_SEQ else None


def clipped(text: str) -> str:
    """A value for a close reason: escaped, and cut to 40 bytes (a close frame holds at most 123)."""
    value = shown(text)
    if len(value.encode()) > 40:
        value = value.encode()[:37].decode(errors="ignore") + "…"
    return value


def since_refusal(text: str) -> str:
    """The close reason for a bad ``?since=``, naming the value."""
    return f"?since={clipped(text)}: not an utterance seq (a whole number, 0 to 2**63-1)"


SUBSCRIBER_PARAMETERS = ("stream", "since", "live", "token")


@dataclass(frozen=True)
class Subscription:
    """What a subscriber's query asks for, or why it is refused (``refusal``, the close reason)."""

    stream: str | None = None
    since: int | None = None
    live: bool = True  # False (``?live=0``): the stored utterances since ``since`` only, then the connection is closed
    refusal: str | None = None


def subscription(target: str) -> Subscription:
    """A request target's ``?stream=ID&since=SEQ&live=0&token=T`` → what to send. ``stream`` is form-decoded (``+`` is a space, as
    URLSearchParams writes it); ``since`` and ``live`` are percent-decoded only, so ``+5`` is named as sent, not as `` 5``.
    A parameter given twice, or one no subscriber has (a misspelt ``streams`` once got every stream), is refused."""
    pairs = query_pairs(target)
    names = [name for name, _ in pairs]
    unknown = next((name for name in names if name not in SUBSCRIBER_PARAMETERS), None)
    if unknown is not None:
        return Subscription(refusal=f"?{clipped(unknown)}= is not a subscriber's parameter: give stream, since, live or token")
    repeated = next((name for name in SUBSCRIBER_PARAMETERS if names.count(name) > 1), None)
    if repeated is not None:  # the first was taken, and a subscriber never learned the other was not
        return Subscription(refusal=f"?{repeated}= given {names.count(repeated)} times: give it once")
    values = dict(pairs)
    stream = unquote_plus(values.get("stream", "")) or None  # `?stream=` names no stream: every stream, as before
    live = percent_decoded(values.get("live", "1"))  # as since is: %30 is 0
    if live not in ("0", "1"):
        return Subscription(refusal=f"?live={clipped(live)}: give 0 (stored utterances only) or 1 (then live messages)")
    if live == "0" and "since" not in values:  # it would get hello and be closed: nothing asked for
        return Subscription(refusal="?live=0 needs ?since=SEQ: it asks for the stored utterances after SEQ only")
    if "since" not in values:
        return Subscription(stream)
    since_text = percent_decoded(values["since"])
    since = since_seq(since_text)
    return Subscription(stream, since, live == "1") if since is not None else Subscription(refusal=since_refusal(since_text))


def percent_decoded(text: str) -> str:
    """A query value percent-decoded only (``+`` kept); one whose bytes are not UTF-8 as sent (``%FF``), so that a
    refusal names what the client sent, not a replacement character."""
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        return text


def endpoint(target: str) -> str | None:
    """The WebSocket a request's path names: ``/`` (subscribers) or ``/ingest`` (call audio; ``/ingest/`` too);
    None for any other path (``//`` was once served as ``/``)."""
    return {"/": "/", "/ingest": "/ingest", "/ingest/": "/ingest"}.get(target.partition("?")[0])  # urlsplit reads "//x" as a host


def cap_unsent_bytes(connection: ServerConnection) -> None:
    """Keep what a subscriber's socket holds unsent to ``SUBSCRIBER_UNSENT_BYTES``, so that a subscriber that stops
    reading fills its queue, where drops are counted, not the kernel's buffer; where the system cannot, nothing."""
    sock = connection.transport.get_extra_info("socket")  # the TCP socket under TLS too
    if TCP_NOTSENT_LOWAT is None or sock is None:
        return
    with contextlib.suppress(OSError):  # a kernel older than the option (Linux 3.12)
        sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, SUBSCRIBER_UNSENT_BYTES)


async def ignore_what_is_sent(connection: ServerConnection) -> None:
    """Read and drop what a subscriber sends (application pings, 'subscribe' messages) until its connection closes.

    Unread, 16 frames filled websockets' receive queue; it then stopped reading the connection, so the
    subscriber's pongs and close frame went unseen and it was cut off 40 s later (1011, keepalive ping timeout).
    """
    try:
        async for _ in connection:
            pass
    except ConnectionClosed:
        pass


@dataclass(eq=False)
class Subscriber:
    connection: ServerConnection
    stream: str | None
    queue: deque[str]
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    unreported_drops: int = 0


class Publisher:
    """Serves ``hello`` then every published message to any number of subscribers."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, queue_size: int = SUBSCRIBER_QUEUE, access: AccessConfig | None = None,
                 keepalive: Keepalive | None = None) -> None:
        self.host, self.port, self.queue_size = host, port, queue_size
        self.access = access or AccessConfig()
        self.keepalive = keepalive or Keepalive()
        self.record_path: Path | None = None  # the --record database, for ?since= catch-up
        self._catch_up_connections: CatchUpConnections | None = None  # the few every catch-up reads through, page by page
        self.refused = {"token": 0, "origin": 0, "ingest_limit": 0, "host": 0}
        # DNS rebinding makes Host and Origin the attacker's (and equal): only names the operator gave are served.
        names = (*LOOPBACK_NAMES, host, *self.access.allowed_hosts, *(urlsplit(origin).netloc for origin in self.access.allowed_origins))
        self.served_hosts = frozenset(name for name in map(host_name, names) if name)
        self.failed_handshakes: dict[str, int] = {}  # by cause; see counting_connection
        self.failed_catch_ups = 0  # ?since= answered with an error because the --record database could not be read
        # Seconds in which connections waited and none could be accepted, no descriptor or memory left (ACCEPT_SHORTAGES):
        # asyncio tries again a second after each failure, up to 100 times a round, and sometimes a few rounds a second.
        self.failed_accepts = 0
        self._failed_accept_counted_at = -math.inf  # loop time: failures within a second of it are not counted again
        self.warn: Callable[[str], None] = warn_on_stderr  # the monitor's worker.warn: to subscribers and the log
        self._shortages_said: set[int] = set()  # errnos of failed accepts already warned of: one line each, the rest counted
        self._earlier_exception_handler: Any = None  # the loop's before start(), for everything but failed accepts
        self.ingest_connections = 0
        self.pending_ingest: set[ServerConnection] = set()  # tokenless ingest clients until their start names the token
        self._ingest_rate = RateLimit(self.access.ingest_connections_per_second, 2 * self.access.ingest_connections_per_second)
        self.page: Callable[[ServerConnection, Request], Response | None] | None = None  # plain HTTP requests, when set
        # GET /healthz, for a service manager or an orchestrator: (healthy, report); 503 with the report when not healthy
        self.health: Callable[[], tuple[bool, dict[str, Any]]] | None = None
        # GET /metrics, for a Prometheus scraper: the Accept header → (body, content type); the token applies
        self.metrics: Callable[[str | None], tuple[bytes, str]] | None = None
        self._metrics_failure_said = False
        self.hello: Message = {}
        self.subscribers: set[Subscriber] = set()
        self.connections: set[ServerConnection] = set()  # every open one, subscribers and ingest clients alike
        self._handlers: set[asyncio.Task[Any]] = set()  # their handler tasks, for close() to cancel any that hang
        self.cancelled_handlers = 0  # handlers close() cancelled because they had not returned in time
        self.dropped_total = 0
        self.cut_off_subscribers = 0  # subscribers whose connection ended other than by their leaving (LEAVING_CODES), before close() drained
        self.closing = False  # close() has begun: what subscribers cut off from then still had queued, it returns too
        self.closing_connections = False  # close()'s drain is over: it cuts off or closes every connection, and counts those
        self.queued_when_cut_off_closing = 0  # what subscribers cut off during close()'s drain still had queued
        self.active_streams: dict[str, Message] = {}  # stream_started of each live stream, for late joiners
        self.last_seq = 0  # of the utterances published: a ?since= catch-up replays stored ones up to it, the queue has the rest
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ingest: IngestHandler | None = None  # serves /ingest when set
        self.server: Server | None = None
        self._loop_thread = 0

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if self.record_path is not None:  # stored before this run: the catch-up's to replay, like those published since
            self.last_seq = max(self.last_seq, await asyncio.to_thread(last_stored_seq, self.record_path, self.catch_up_connections()))
        self.server = await serve(
            self._serve, self.host, self.port, max_size=self.access.max_message_bytes,
            ping_interval=self.keepalive.ping_seconds, ping_timeout=self.keepalive.pong_seconds, close_timeout=self.keepalive.close_seconds,
            process_request=self._check_request, ssl=self.access.tls, create_connection=counting_connection(self.failed_handshakes),
        )
        self.port = self.server.sockets[0].getsockname()[1] if self.server.sockets else self.port
        self._earlier_exception_handler = self.loop.get_exception_handler()
        self.loop.set_exception_handler(self._loop_exception)

    def catch_up_connections(self) -> CatchUpConnections:
        """The --record database's read-only connections, shared by every catch-up (opened as they are first needed)."""
        assert self.record_path is not None
        if self._catch_up_connections is None:
            self._catch_up_connections = CatchUpConnections(self.record_path)
        return self._catch_up_connections

    def counters(self) -> dict[str, int]:
        """For the status message: subscribers, their drops, those cut off, refused connections, failed handshakes,
        and ``?since=`` catch-ups the --record database could not serve (with --record)."""
        return {
            "subscribers": len(self.subscribers),
            "subscriber_drops": self.dropped_total,
            "subscribers_cut_off": self.cut_off_subscribers,
            **{f"refused_{reason}": count for reason, count in self.refused.items()},
            "failed_handshakes": sum(self.failed_handshakes.values()),
            "failed_accepts": self.failed_accepts,
            **({"failed_catch_ups": self.failed_catch_ups} if self.record_path is not None else {}),
        }

    async def close(self, drain_seconds: float = 2.0, close_seconds: float = 1.0, handler_seconds: float = 2.0) -> int:
        """Give subscribers up to ``drain_seconds`` to receive what is queued, then close; return how many messages
        subscribers cut off meanwhile (still stalled after the drain, or gone during it without closing their
        connection) still had queued (counted in ``dropped_total``: there is no one left to tell).

        Each connection gets ``close_seconds`` to answer the closing handshake
        (1001, going away); one that does not (a client that has stopped
        reading) is cut off, so a stalled subscriber cannot hold the monitor's
        exit for websockets' default 10 s. A handler still running
        ``handler_seconds`` after that (stuck on something other than its
        connection, e.g. ingest waiting for the worker) is cancelled and counted
        in ``cancelled_handlers``: close() never hangs.
        """
        self.closing = True
        await asyncio.sleep(0)  # let messages other threads handed over just now reach the queues
        deadline = asyncio.get_running_loop().time() + drain_seconds
        while any(s.queue for s in self.subscribers) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        # one cut off during the drain (its network gone, the keepalive) was counted as it went: its handler had left
        self.closing_connections = True
        stalled_queued = 0
        for subscriber in list(self.subscribers):
            if subscriber.queue:  # still stalled after the drain time: cut it off rather than wait
                stalled_queued += len(subscriber.queue)
                subscriber.queue.clear()
                subscriber.connection.transport.abort()
        self.dropped_total += stalled_queued
        cut_off_queued = stalled_queued + self.queued_when_cut_off_closing
        if self.server is None:
            return cut_off_queued
        self.server.close()  # stop listening; 1001 to every open connection
        try:
            await asyncio.wait_for(self.server.wait_closed(), close_seconds)
        except TimeoutError:
            for connection in list(self.connections):
                connection.transport.abort()
            try:
                await asyncio.wait_for(self.server.wait_closed(), handler_seconds)  # wait_closed() is shielded
            except TimeoutError:
                stuck = [task for task in self._handlers if not task.done()]
                self.cancelled_handlers += len(stuck)
                for task in stuck:
                    task.cancel()
                if stuck:  # (the last ones may have returned just as the time ran out)
                    await asyncio.wait(stuck, timeout=close_seconds)  # their clean-up; one that ignores cancelling is left
        if self._catch_up_connections is not None:  # a page still being read on a pool thread closes its own as it ends
            self._catch_up_connections.close()
        if self.loop is not None and self.loop.get_exception_handler() == self._loop_exception:
            self.loop.set_exception_handler(self._earlier_exception_handler)
        return cut_off_queued

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """A connection the listener could not accept for want of a descriptor or memory is counted, and said in one
        warning line per cause: asyncio logged a traceback for each, once a second while it lasted (thousands of lines
        under `ulimit -n 512`). Anything else goes to the handler the loop had."""
        error, listener = context.get("exception"), context.get("socket")
        listening = {sock.fileno() for sock in self.server.sockets} if self.server is not None else set()
        if isinstance(error, OSError) and error.errno in ACCEPT_SHORTAGES and listener is not None and listener.fileno() in listening:
            if loop.time() - self._failed_accept_counted_at >= 1.0:
                self.failed_accepts += 1
                self._failed_accept_counted_at = loop.time()
            if error.errno not in self._shortages_said:
                self._shortages_said.add(error.errno)
                self.warn(accept_shortage(error))
            return
        if self._earlier_exception_handler is not None:
            self._earlier_exception_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    def counted_now(self, message: Message) -> Message:
        """A status with the subscribers connected now (on the event loop's thread); any other message as it is.
        Built on the worker's thread and handed on through the outbox, a status reached a subscriber that connected
        meanwhile saying one subscriber fewer than there were: counted as it is queued, each one counts itself."""
        if message.get("type") == "status" and "subscribers" in message:
            return {**message, "subscribers": len(self.subscribers)}
        return message

    def publish(self, message: Message) -> None:
        """Queue ``message`` for every matching subscriber (call on the event loop's thread)."""
        message = self.counted_now(message)
        text = json.dumps(message, separators=(",", ":"))
        stream = message.get("stream")
        if message.get("type") == "stream_started":
            self.active_streams[str(stream)] = message
        elif message.get("type") == "utterance" and isinstance(seq := message.get("seq"), int):
            self.last_seq = max(self.last_seq, seq)
        elif message.get("type") == "stream_ended":
            self.active_streams.pop(str(stream), None)
        for subscriber in self.subscribers:
            if subscriber.stream is not None and stream is not None and stream != subscriber.stream:
                continue
            if len(subscriber.queue) == subscriber.queue.maxlen:
                subscriber.unreported_drops += 1
                self.dropped_total += 1
            subscriber.queue.append(text)
            subscriber.ready.set()

    def publish_threadsafe(self, message: Message) -> None:
        """From any thread; on the loop's own thread (the final flush at shutdown) it queues at once."""
        if self.loop is None or self.loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self.publish(message)
        else:
            self.loop.call_soon_threadsafe(self.publish, message)

    def serves_host(self, header: str) -> bool:
        """Whether a request's ``Host`` is one this monitor is reached by: a name it was given, a loopback address, or,
        listening on every address, any address (an address cannot be rebound to another machine; a name can)."""
        name = host_name(header)
        if name is None:
            return False
        if name in self.served_hosts:
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        return address.is_loopback or self.host in EVERY_ADDRESS

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Before the upgrade: malformed headers, the Host allow-list, plain HTTP (the page), origin allow-list, ingest limits."""
        for header in ("Host", "Origin", "Authorization"):  # read below as one value each
            if len(request.headers.get_all(header)) > 1:
                return self._malformed(connection, f"two {header} headers: send one\n")
        host = request.headers.get("Host")
        if host is None:
            return self._malformed(connection, "no Host header: HTTP/1.1 requires one\n")
        if not self.serves_host(host):
            self.refused["host"] += 1
            name = host_name(host)
            advice = f"; to reach it by that name, add --allow-host {name}" if name is not None else ""
            return connection.respond(HTTPStatus.FORBIDDEN, f"host {name or host!r} is not one this monitor serves{advice}\n")
        if request.method != "GET":  # a POST or PUT was answered with the page, as if it had been read
            refusal = connection.respond(HTTPStatus.METHOD_NOT_ALLOWED, f"{shown(request.method[:20])} is not served here: the page and the WebSockets take GET\n")
            refusal.headers["Allow"] = "GET"
            return refusal
        if "upgrade" not in ", ".join(request.headers.get_all("Connection")).lower():
            resource = request.path.split("?", 1)[0]
            if resource == "/healthz" and self.health is not None:  # no token: it says how, not what
                healthy, report = self.health()
                answer = connection.respond(HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE, json.dumps(report) + "\n")
                del answer.headers["Content-Type"]  # respond() made it text/plain
                answer.headers["Content-Type"] = "application/json"
                answer.headers["Cache-Control"] = "no-store"
                return answer
            if resource == "/metrics" and self.metrics is not None:
                return self._metrics(connection, request)
            if endpoint(request.path) == "/ingest":  # `curl /ingest` once got the page's 404, "the page and its WebSocket are at /"
                return self._ingest_without_upgrade(connection, request)
            if self.page is not None:
                return self.page(connection, request)
            return connection.respond(HTTPStatus.UPGRADE_REQUIRED, "this is a WebSocket endpoint\n")
        path = endpoint(request.path)
        if path == "/ingest" and self.ingest is None:  # a platform would stream a call into a subscriber, unheard
            return connection.respond(HTTPStatus.NOT_FOUND, NO_INGEST)
        if path is None:
            where = "/ and /ingest" if self.ingest is not None else "/"
            return connection.respond(HTTPStatus.NOT_FOUND, f"not found: WebSockets are at {where}\n")
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self.access.allowed_origins and not self._same_origin(origin, request):
            self.refused["origin"] += 1
            return connection.respond(HTTPStatus.FORBIDDEN, f"origin {origin} is not allowed (--allow-origin)\n")
        # Only a client with the token is charged to the ingest limit: tokenless attempts are refused after the
        # upgrade (1008, refused_token) and must not use up the limit that keeps the real platform's calls coming.
        # One that sent no token at all may name it in its start (Twilio cannot send it otherwise): it is held, with
        # at most pending_ingest_connections others, and charged only once its start has named the token.
        if path == "/ingest" and self._authorised(request):
            if self.ingest_connections >= self.access.max_ingest_connections or not self._ingest_rate.allow():
                self.refused["ingest_limit"] += 1
                return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "too many ingest connections; retry later\n")
        elif path == "/ingest" and request_token(request) is None:
            # one whose handshake failed after this check never reaches its handler: its transport is closed by then
            self.pending_ingest = {held for held in self.pending_ingest if not held.transport.is_closing()}
            if len(self.pending_ingest) >= self.access.pending_ingest_connections:
                self.refused["ingest_limit"] += 1
                return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "too many ingest connections waiting to send their start; retry later\n")
            self.pending_ingest.add(connection)
        return None

    def _metrics(self, connection: ServerConnection, request: Request) -> Response:
        """GET /metrics: the figures for a scraper; with --token, only for one that sends it (they say how busy it is)."""
        assert self.metrics is not None
        if not self._authorised(request):
            self.refused["token"] += 1
            refusal = connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token: send Authorization: Bearer TOKEN\n")
            refusal.headers["WWW-Authenticate"] = "Bearer"
            return refusal
        try:
            body, content_type = self.metrics(request.headers.get("Accept"))
        except Exception as error:  # noqa: BLE001 - a scraper gets the reason, and the log says it once (websockets' logs nothing)
            reason = f"GET /metrics failed ({type(error).__name__}: {one_line(error)}): please report it"
            if not self._metrics_failure_said:
                self._metrics_failure_said = True
                self.warn(reason)
            return connection.respond(HTTPStatus.INTERNAL_SERVER_ERROR, reason + "\n")
        return http_answer(HTTPStatus.OK, [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")], body)

    def _ingest_without_upgrade(self, connection: ServerConnection, request: Request) -> Response:
        """A plain HTTP request to /ingest: 426 saying how to connect where calls are taken, 404 saying why where not."""
        if self.ingest is None:
            return connection.respond(HTTPStatus.NOT_FOUND, NO_INGEST)
        scheme = "wss" if self.access.tls is not None else "ws"
        host = request.headers["Host"].strip()  # one this monitor serves, checked above: a name or address, and a port
        answer = connection.respond(
            HTTPStatus.UPGRADE_REQUIRED,
            f"/ingest takes call audio over WebSocket (Twilio Media Streams framing): connect with {scheme}://{host}/ingest\n",
        )
        answer.headers["Upgrade"] = "websocket"  # RFC 9110: a 426 names the protocol, and Connection lists "upgrade"
        del answer.headers["Connection"]  # respond() made it "close"
        answer.headers["Connection"] = "upgrade, close"
        return answer

    def _malformed(self, connection: ServerConnection, reason: str) -> Response:
        """400 for a request that never becomes a connection; counted with the other failed handshakes."""
        self.failed_handshakes["malformed request"] = self.failed_handshakes.get("malformed request", 0) + 1
        return connection.respond(HTTPStatus.BAD_REQUEST, reason)

    def _authorised(self, request: Request) -> bool:
        return self.access.token is None or token_matches(request_token(request), self.access.token)

    def _same_origin(self, origin: str, request: Request) -> bool:
        scheme = "https" if self.access.tls is not None else "http"
        return origin == f"{scheme}://{request.headers.get('Host', '')}"

    async def _serve(self, connection: ServerConnection) -> None:
        self.connections.add(connection)
        handler = asyncio.current_task()
        assert handler is not None  # websockets runs each handler as a task
        self._handlers.add(handler)
        try:
            await self._serve_open(connection)
        finally:
            self.connections.discard(connection)
            self._handlers.discard(handler)

    async def _serve_open(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        start: str | None = None  # the start that named the token, for a client that sent none in its request
        if connection in self.pending_ingest:
            try:
                start = await self._start_naming_the_token(connection)
            finally:
                self.pending_ingest.discard(connection)
            if start is None:
                return
        elif not self._authorised(request):
            self.refused["token"] += 1
            await connection.close(CloseCode.POLICY_VIOLATION, "missing or wrong token")
            return
        if endpoint(request.path) == "/ingest" and self.ingest is not None:
            self.ingest_connections += 1
            try:
                # called as before when there is no start: an ingest handler may take the connection alone
                await (self.ingest(connection) if start is None else self.ingest(connection, start))
            finally:
                self.ingest_connections -= 1
            return
        asked = subscription(request.path)
        if asked.refusal is not None:
            await connection.close(CloseCode.POLICY_VIOLATION, asked.refusal)
            return
        stream, since = asked.stream, asked.since
        cap_unsent_bytes(connection)  # a subscriber's only: an ingest client's replies are few
        subscriber = Subscriber(connection, stream, deque(maxlen=self.queue_size))
        # live messages queue from here on; a ?live=0 connection (the page's catch-up after drops) gets none: queued
        # only to go unread once it has its caught_up, they overflowed its queue into drops no one was told of
        if asked.live:
            self.subscribers.add(subscriber)
        # What was published before that is sent from the publisher's state: the streams live then, and, with ?since=,
        # stored utterances up to the last published. Everything later comes from the queue, in the order published.
        live_after = self.last_seq
        announced = [started for started in self.active_streams.values() if stream is None or started["stream"] == stream]
        # Wait on our queue *or* the connection closing, so a client that leaves while
        # nothing is queued does not leave its handler waiting for ever.
        closed = asyncio.ensure_future(ignore_what_is_sent(connection))
        try:
            # With --record, hello says up to which seq the database holds what came before: a client that has yet to
            # see an utterance resumes from there after a reconnect (the page lost what was stored while it was away).
            hello = self.hello if self.record_path is None else {**self.hello, "last_seq": live_after}
            await self._send(subscriber, json.dumps(hello))
            for started in announced:
                await self._send(subscriber, json.dumps(started))
            if since is not None:
                await self._catch_up(subscriber, since, live_after, asked.live)
            if not asked.live:
                await connection.close()  # 1000: all it asked for is sent
                return
            while True:
                ready = asyncio.ensure_future(subscriber.ready.wait())
                done, _ = await asyncio.wait({ready, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    ready.cancel()
                    break
                subscriber.ready.clear()
                while subscriber.queue:
                    if subscriber.unreported_drops:
                        dropped: Dropped = {"type": "dropped", "count": subscriber.unreported_drops}
                        subscriber.unreported_drops = 0
                        await self._send(subscriber, json.dumps(dropped))
                    await self._send(subscriber, subscriber.queue.popleft())
        except (ConnectionClosed, SubscriberStalled):
            pass
        finally:
            closed.cancel()
            if asked.live:  # one that asked for no live messages has none queued to lose: it is not counted as cut off
                self.subscribers.discard(subscriber)
                self._count_if_cut_off(subscriber)

    async def _send(self, subscriber: Subscriber, text: str) -> None:
        """Send one message to a subscriber; one whose connection takes nothing for the keepalive's time is dropped."""
        try:
            async with asyncio.timeout(self.keepalive.stalled_seconds):
                await subscriber.connection.send(text)
        except TimeoutError:
            subscriber.connection.transport.abort()  # a close frame would wait behind all it has not read
            await subscriber.connection.wait_closed()
            raise SubscriberStalled from None

    def _count_if_cut_off(self, subscriber: Subscriber) -> None:
        """A subscriber gone other than by leaving (the keepalive cut it off, a send to it stalled, its network went,
        its own keepalive gave up: any close of its but 1000, 1001 or one without a code) is counted, and so is what
        was still queued for it: those messages are lost, as a shutdown's are. One that closed its connection normally
        chose to stop receiving; close() counts those it cuts off once its drain is over (one cut off during the drain
        went uncounted: close() looked only at those still there)."""
        protocol = subscriber.connection.protocol
        left = protocol.close_rcvd is not None and protocol.close_rcvd_then_sent and protocol.close_rcvd.code in LEAVING_CODES
        if self.closing_connections or left:
            return
        self.cut_off_subscribers += 1
        self.dropped_total += len(subscriber.queue)
        if self.closing:  # after the last status line: close() returns it for the shutdown's warning
            self.queued_when_cut_off_closing += len(subscriber.queue)

    async def _start_naming_the_token(self, connection: ServerConnection) -> str | None:
        """For an ingest client that sent no token in its request: its ``start`` (without the token) once it names the
        token in ``start.customParameters.token`` within ``start_token_seconds``, ``connected`` frames skipped, and the
        ingest limit has room; None, the connection refused and counted, for anything else; None, uncounted, for a client
        that closes the connection while held (or the monitor stopping)."""
        deadline = asyncio.get_running_loop().time() + self.access.start_token_seconds
        frame = FirstFrame("connected")
        try:
            while frame.event == "connected":
                frame = first_frame(await asyncio.wait_for(connection.recv(), max(0.0, deadline - asyncio.get_running_loop().time())))
        except TimeoutError:
            frame = FirstFrame(None)
        except ConnectionClosed:  # the monitor stopping, or the client hanging up before a frame (a load balancer's
            return None  # probe opening /ingest): no refusal, so counted nowhere (it used to be counted in refused_token)
        assert self.access.token is not None  # only a monitor with a token holds clients for one
        if frame.event != "start" or frame.start is None or not token_matches(frame.token, self.access.token):
            self.refused["token"] += 1
            await connection.close(CloseCode.POLICY_VIOLATION, "missing or wrong token")
            return None
        if self.ingest_connections >= self.access.max_ingest_connections or not self._ingest_rate.allow():
            self.refused["ingest_limit"] += 1  # past the upgrade: no 429, but the close code that says "retry later"
            await connection.close(CloseCode.TRY_AGAIN_LATER, "too many ingest connections; retry later")
            return None
        return frame.start

    async def _catch_up(self, subscriber: Subscriber, since: int, live_after: int, live: bool = True) -> None:
        """Send stored utterances with ``since < seq <= live_after``: those published before the subscriber's queue began.
        Later ones come from the queue, in order. (Replayed from the database too, one came before its stream's
        stream_started, its windows were skipped by stream and utterance id, those of a stream restarted under its id
        with them, and the queue's overflow was counted as lost although replayed.)

        Like a monitor without ``--record``, a database that cannot be read is one ``error`` line; live messages follow
        unless the subscriber asked for none (``live``).
        """
        if self.record_path is None:
            await self._send(subscriber, json.dumps(notice("error", "?since= needs a monitor started with --record")))
            return
        last = 0
        pages = read_since(self.record_path, since, subscriber.stream, until=live_after, connections=self.catch_up_connections())
        try:
            while (page := await asyncio.to_thread(next, pages, None)) is not None:
                for _, text in page:
                    await self._send(subscriber, text)
                last = page[-1][0]
        except sqlite3.Error as error:
            self.failed_catch_ups += 1
            reason = " ".join(str(error).split())
            message = f"?since={since}: cannot read the --record database ({reason})" + ("; live messages follow" if live else "")
            await self._send(subscriber, json.dumps(notice("error", message)))
            return
        finally:  # were the subscriber to leave mid-way (one still running on a pool thread, cancelled at shutdown, ends
            with contextlib.suppress(ValueError):  # when it returns, and gives its connection back)
                pages.close()
        caught_up: CaughtUp = {"type": "caught_up", "since": since, "last": last}
        await self._send(subscriber, json.dumps(caught_up))
