"""Who may connect: tokens, browser origins, ingest limits, TLS, and listening beyond loopback."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys

import pytest
import trustme
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from ser_stream.errors import SerStreamError
from ser_stream.monitor import MonitorOptions, check_listening
from ser_stream.publish import AccessConfig, Publisher, token_matches
from ser_stream.sources import SourceSpec

POLICY_VIOLATION = 1008


async def started(access: AccessConfig) -> Publisher:
    publisher = Publisher("127.0.0.1", 0, access=access)
    publisher.hello = {"type": "hello", "version": 1}
    await publisher.start()
    return publisher


async def first_message(url: str, **kwargs) -> dict:
    async with connect(url, **kwargs) as ws:
        return json.loads(await asyncio.wait_for(ws.recv(), 5))


def test_a_token_is_required_and_a_wrong_one_is_refused_as_a_policy_violation():
    async def scenario():
        publisher = await started(AccessConfig(token="s3cret-token"))
        url = f"ws://127.0.0.1:{publisher.port}/"
        refused = []
        for attempt in (url, url + "?token=wrong", url + "?token=s3cret-tokeN"):
            with pytest.raises(ConnectionClosedError) as closed:
                await first_message(attempt)
            refused.append(closed.value.rcvd.code)
        with pytest.raises(ConnectionClosedError) as closed:
            await first_message(url + "ingest")
        refused.append(closed.value.rcvd.code)
        by_header = await first_message(url, additional_headers={"Authorization": "Bearer s3cret-token"})
        by_query = await first_message(url + "?token=s3cret-token")
        counted = publisher.refused["token"]
        await publisher.close()
        return refused, by_header, by_query, counted

    refused, by_header, by_query, counted = asyncio.run(scenario())
    assert refused == [POLICY_VIOLATION] * 4  # subscribers and ingest clients alike
    assert by_header["type"] == by_query["type"] == "hello"
    assert counted == 4


def test_failed_opening_handshakes_are_counted_by_cause_and_reach_the_status_counters():
    async def scenario():
        publisher = await started(AccessConfig())
        for request in (b"", b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", b"\x16\x03\x01 TLS to a plain port\r\n\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", publisher.port)
            writer.write(request)  # nothing, an upgrade without a key, not HTTP at all
            await writer.drain()
            writer.write_eof()
            await reader.read()  # the server's answer, if any, then its close
            writer.close()
        hello = await first_message(f"ws://127.0.0.1:{publisher.port}/")
        await asyncio.sleep(0.1)
        counters, by_cause = publisher.counters(), dict(publisher.failed_handshakes)
        await publisher.close()
        return hello, counters, by_cause

    hello, counters, by_cause = asyncio.run(scenario())
    assert hello["type"] == "hello"  # a good client after three bad ones
    assert counters["failed_handshakes"] == 3 and counters["subscribers"] == 0
    assert by_cause == {"EOFError": 1, "InvalidHeader": 1, "ValueError": 1}, by_cause
    assert counters["refused_token"] == counters["refused_origin"] == counters["refused_ingest_limit"] == 0


def test_token_comparison_is_exact():
    assert token_matches("abc", "abc")
    assert not token_matches("abcd", "abc") and not token_matches("", "abc") and not token_matches(None, "abc")


def test_browser_origins_outside_the_allow_list_are_refused_before_the_upgrade():
    async def scenario():
        publisher = await started(AccessConfig(allowed_origins=("https://wallboard.example",)))
        url = f"ws://127.0.0.1:{publisher.port}/"
        with pytest.raises(InvalidStatus) as refused:
            await first_message(url, origin="https://evil.example")
        allowed = await first_message(url, origin="https://wallboard.example")
        same_origin = await first_message(url, origin=f"http://127.0.0.1:{publisher.port}")  # the monitor's own page
        no_origin = await first_message(url)  # not a browser
        await publisher.close()
        return refused.value.response.status_code, allowed, same_origin, no_origin

    status, *hellos = asyncio.run(scenario())
    assert status == 403
    assert all(hello["type"] == "hello" for hello in hellos)


def test_ingest_connections_beyond_the_limit_get_429():
    async def scenario():
        publisher = await started(AccessConfig(max_ingest_connections=2))
        held = asyncio.Event()

        async def ingest(connection):
            await held.wait()

        publisher.ingest = ingest
        url = f"ws://127.0.0.1:{publisher.port}/ingest"
        first, second = await connect(url), await connect(url)
        with pytest.raises(InvalidStatus) as refused:
            await connect(url)
        subscriber = await first_message(f"ws://127.0.0.1:{publisher.port}/")  # subscribers are not limited by it
        held.set()
        await first.close()
        await second.close()
        await publisher.close()
        return refused.value.response.status_code, subscriber

    status, subscriber = asyncio.run(scenario())
    assert status == 429 and subscriber["type"] == "hello"


def test_tls_serves_wss_and_refuses_plain_websocket():
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)

    async def scenario():
        publisher = await started(AccessConfig(tls=server_context))
        hello = await first_message(f"wss://127.0.0.1:{publisher.port}/", ssl=client_context)
        with pytest.raises(Exception):  # noqa: B017 - a plain client cannot complete the handshake
            await first_message(f"ws://127.0.0.1:{publisher.port}/", open_timeout=3)
        await publisher.close()
        return hello

    assert asyncio.run(scenario())["type"] == "hello"


def test_listening_beyond_loopback_needs_an_explicit_flag():
    local = MonitorOptions(sources=(SourceSpec("rtp", "127.0.0.1:5004"),), host="::1")
    check_listening(local)
    for options in (
        MonitorOptions(sources=(), host="0.0.0.0"),
        MonitorOptions(sources=(SourceSpec("rtp", "0.0.0.0:5004"),)),
    ):
        with pytest.raises(SerStreamError, match="add --allow-remote"):
            check_listening(options)
    check_listening(MonitorOptions(sources=(), host="0.0.0.0", allow_remote=True, access=AccessConfig(token="t")))


def test_a_host_name_is_judged_by_the_addresses_it_resolves_to_and_one_that_does_not_resolve_is_named_as_such(monkeypatch):
    """A typo in --ws or an rtp: host once asked for --allow-remote, steering the user to open the monitor up."""
    import socket

    from ser_stream.monitor import MonitorOptions, check_listening
    from ser_stream.publish import AccessConfig

    with pytest.raises(SerStreamError, match=r"^nosuchhost\.invalid: cannot resolve this host name \("):
        check_listening(MonitorOptions(sources=(), host="nosuchhost.invalid", access=AccessConfig()))
    check_listening(MonitorOptions(sources=(), host="localhost", access=AccessConfig()))  # loopback by name: fine
    addresses = {"monitor.example": "203.0.113.7", "loopback.example": "127.0.0.2"}
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (addresses[host], 0))])
    with pytest.raises(SerStreamError, match="add --allow-remote"):
        check_listening(MonitorOptions(sources=(), host="monitor.example", access=AccessConfig()))
    check_listening(MonitorOptions(sources=(), host="loopback.example", access=AccessConfig()))


def test_the_cli_says_so_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ser_stream", "monitor", "--ingest", "--no-dashboard", "--ws", "0.0.0.0:0"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ser-stream: error: 0.0.0.0 is reachable from other machines; add --allow-remote to listen there (and set --token)"
    ]


def test_tokenless_ingest_attempts_are_refused_without_using_up_the_ingest_rate_limit():
    """The limit is charged only to clients with the token: a flood without one must not lock out the real platform."""

    async def scenario():
        publisher = await started(AccessConfig(token="s3cret-token", ingest_connections_per_second=0.5))  # one, then one per 2 s

        async def ingest(connection):
            await connection.wait_closed()

        publisher.ingest = ingest
        url = f"ws://127.0.0.1:{publisher.port}/ingest"
        refused = []
        for attempt in [url] * 10 + [url + "?token=wrong"] * 10:
            with pytest.raises(ConnectionClosedError) as closed:
                await first_message(attempt)
            refused.append(closed.value.rcvd.code)
        platform = await connect(url + "?token=s3cret-token")
        with pytest.raises(InvalidStatus) as limited:  # the limit still holds for clients with the token
            await connect(url, additional_headers={"Authorization": "Bearer s3cret-token"})
        await platform.close()
        counters = publisher.counters()
        await publisher.close()
        return refused, limited.value.response.status_code, counters

    refused, limited, counters = asyncio.run(scenario())
    assert refused == [POLICY_VIOLATION] * 20
    assert limited == 429
    assert counters["refused_token"] == 20 and counters["refused_ingest_limit"] == 1


def test_a_connection_handler_stuck_at_shutdown_cannot_hold_the_publishers_close():
    """A handler waiting on something other than its connection (ingest held by backpressure from a worker that
    has stopped) once made close() wait for ever; it is cancelled once the time for handlers has passed."""

    async def scenario():
        publisher = await started(AccessConfig())
        cleaned_up = asyncio.Event()

        async def ingest(connection):
            try:
                while True:  # room in a ring buffer that never comes
                    await asyncio.sleep(0.005)
            finally:
                cleaned_up.set()

        publisher.ingest = ingest
        sender = await connect(f"ws://127.0.0.1:{publisher.port}/ingest")
        subscriber = await connect(f"ws://127.0.0.1:{publisher.port}/")
        began = asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(publisher.close(), 15)
        except TimeoutError:
            return None, cleaned_up.is_set(), 0
        took = asyncio.get_running_loop().time() - began
        await sender.close()
        await subscriber.close()
        return took, cleaned_up.is_set(), publisher.cancelled_handlers

    took, cleaned_up, cancelled = asyncio.run(scenario())
    assert took is not None, "Publisher.close() was still waiting after 15 s"
    assert took < 5 and cleaned_up and cancelled == 1  # 1 s for the closing handshakes, 2 s for handlers
