"""WebSocket media-stream ingest (Twilio framing): calls become streams; bad frames get one error line."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
import pytest
import scipy.signal
import soundfile
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from benchmarks.clients import free_port, subscriber_when_up
from ser_stream.g711 import mulaw_encode
from ser_stream.ingest import IngestError, parse_message
from tests.conftest import undocumented_fields

pytestmark = pytest.mark.slow

T = TypeVar("T")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"no": "event"}), "no 'event'"),
        (json.dumps({"event": "media", "streamSid": "s"}), "lacks media.payload"),
        (json.dumps({"event": "start", "start": {}}), "lacks start.streamSid"),
        (json.dumps({"event": "start", "start": {"streamSid": "s", "mediaFormat": {"encoding": "audio/l16"}}}), "unsupported media format"),
        (json.dumps({"event": "start", "start": {"streamSid": "s", "mediaFormat": {"encoding": "audio/x-mulaw", "channels": 2}}}), "sampleRate 8000 and channels 1 only"),
        (json.dumps({"event": "start", "streamSid": "s", "start": {"streamSid": " \t"}}), "start.streamSid is empty"),
        (json.dumps({"event": "dance"}), "unknown event"),
    ],
)
def test_bad_frames_are_named(frame, reason):
    with pytest.raises(IngestError, match=reason):
        parse_message(frame)


def twilio_frames(stream_sid: str, audio_8k: np.ndarray) -> list[str]:
    frames = [json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})]
    frames.append(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
                              "start": {"streamSid": stream_sid, "callSid": "CA1", "tracks": ["inbound"],
                                        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
    codes = mulaw_encode(audio_8k)
    for chunk, start in enumerate(range(0, codes.size, 160)):  # 20 ms per frame, as Twilio sends
        payload = base64.b64encode(codes[start : start + 160].tobytes()).decode()
        frames.append(json.dumps({"event": "media", "streamSid": stream_sid, "sequenceNumber": str(chunk + 2),
                                  "media": {"track": "inbound", "chunk": str(chunk + 1), "timestamp": str(chunk * 20), "payload": payload}}))
    frames.append(json.dumps({"event": "stop", "streamSid": stream_sid, "stop": {"callSid": "CA1"}}))
    return frames


def start_ingest_monitor(port: int, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--ingest", "--no-dashboard", "--ws", f"127.0.0.1:{port}", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def run_then_sigterm(process: subprocess.Popen[str], scenario: Callable[[], Awaitable[T]]) -> T:
    """The clients' scenario, then SIGTERM as an operator would send it; the monitor must exit 0."""
    try:
        result = asyncio.run(scenario())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0, process.stderr.read()
    return result


def test_two_calls_through_ingest_become_two_streams_and_bad_frames_do_not_stop_them(clips_with_silence, shipped_model):
    path, bounds = clips_with_silence
    audio, rate = soundfile.read(path, dtype="float32")
    audio_8k = scipy.signal.resample_poly(audio, 8000, rate)
    port = free_port()
    process = start_ingest_monitor(port)

    async def call(stream_sid: str) -> list[dict]:
        replies = []
        async with connect(f"ws://127.0.0.1:{port}/ingest") as ws:
            frames = twilio_frames(stream_sid, audio_8k)
            frames.insert(5, "{not json")
            frames.insert(9, json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": "@@@"}}))
            # a last frame the monitor answers, as it answers the bad ones, marks the end of the replies: a second
            # without one could pass before the monitor had read the bad frames on a loaded machine
            for frame in [*frames, json.dumps({"event": "end-of-the-test-frames"})]:
                await ws.send(frame)
            while (reply := json.loads(await asyncio.wait_for(ws.recv(), 60)))["message"] != "unknown event 'end-of-the-test-frames'":
                replies.append(reply)
            return replies

    async def scenario():
        subscriber = await subscriber_when_up(port)
        replies = await asyncio.gather(call("MZ-one"), call("MZ-two"))
        messages, ended = [], set()
        while ended != {"MZ-one", "MZ-two"}:
            message = json.loads(await asyncio.wait_for(subscriber.recv(), 60))
            messages.append(message)
            if message["type"] == "stream_ended":
                ended.add(message["stream"])
        await subscriber.close()
        return replies, messages

    replies, messages = run_then_sigterm(process, scenario)
    for call_replies in replies:
        errors = [r["message"] for r in call_replies]
        assert len(errors) == 2 and "not JSON" in errors[0] and "not valid base64" in errors[1]
        assert undocumented_fields(call_replies) == []
    assert undocumented_fields(messages) == []
    assert not [m for m in messages if m["type"] == "warning" and "stream" not in m]  # each connection had a call by then
    for stream in ("MZ-one", "MZ-two"):  # its connection's bad frame is said about it, after its start
        assert [m["type"] for m in messages if m.get("stream") == stream and m["type"] in ("stream_started", "warning")][:2] == ["stream_started", "warning"]
        utterances = [m for m in messages if m["type"] == "utterance" and m["stream"] == stream]
        assert len(utterances) == len(bounds)
        for utterance, (start, end) in zip(utterances, bounds):
            assert abs(utterance["t_start"] - start) <= 0.3 and abs(utterance["t_end"] - end) <= 0.3


def test_a_call_naming_the_token_in_its_start_as_twilio_sends_it_is_classified_and_the_token_is_said_nowhere(clips_with_silence, shipped_model):
    """Twilio's <Stream url> takes no query string and it sends no Authorization header: the token comes as
    <Parameter name="token" value="T"/>, in start.customParameters. A monitor with a token once refused every such call.
    The token, and a wrong one tried before, reach neither the monitor's output nor any message."""
    path, bounds = clips_with_silence
    audio, rate = soundfile.read(path, dtype="float32")
    audio_8k = scipy.signal.resample_poly(audio, 8000, rate)
    port = free_port()
    token, wrong_token = "tw1l10-" + secrets.token_hex(8), "tw1l10-" + secrets.token_hex(8)
    process = start_ingest_monitor(port, "--print-utterances", "--log-status", "1", env={**os.environ, "SER_STREAM_TOKEN": token})

    def named(token_given: str) -> list[str]:
        frames = twilio_frames("MZ-twilio", audio_8k)
        start = json.loads(frames[1])
        start["start"]["customParameters"] = {"token": token_given, "agent": "a-17"}
        frames[1] = json.dumps(start)
        return frames

    async def call(frames: list[str], quiet_seconds: float) -> tuple[list[str], int | None]:
        """The replies to ``frames`` until none comes for ``quiet_seconds``, and the close code if it was closed."""
        replies = []
        async with connect(f"ws://127.0.0.1:{port}/ingest") as ws:  # no token in the URL, no header: as Twilio connects
            try:
                for frame in frames:
                    await ws.send(frame)
                while True:
                    replies.append(str(await asyncio.wait_for(ws.recv(), quiet_seconds)))
            except TimeoutError:  # still open: taken
                return replies, None
            except ConnectionClosed:
                await asyncio.wait_for(ws.wait_closed(), 5)  # its close code is known once it is closed
                return replies, ws.close_code

    async def scenario():
        subscriber = await subscriber_when_up(port, monitor=process, additional_headers={"Authorization": f"Bearer {token}"})
        refused = await call(named(wrong_token), 10)  # (a monitor just started may take a while to read it)
        taken = await call(named(token), 1)
        texts, ended, refusals = [], False, 0
        while not (ended and refusals):  # the call's stream, and a status counting the refusal
            texts.append(str(await asyncio.wait_for(subscriber.recv(), 60)))
            message = json.loads(texts[-1])
            ended = ended or (message["type"] == "stream_ended" and message["stream"] == "MZ-twilio")
            refusals = message.get("refused_token", 0) if message["type"] == "status" else refusals
        await subscriber.close()
        return refused, taken, texts, refusals

    refused, taken, texts, refusals = run_then_sigterm(process, scenario)
    stdout, stderr = process.stdout.read(), process.stderr.read()
    assert refused == ([], 1008) and refusals == 1
    assert taken == ([], None)  # not refused: no error line, open when the client left
    utterances = [json.loads(text) for text in texts if json.loads(text)["type"] == "utterance"]
    assert len(utterances) == len(bounds) and {u["stream"] for u in utterances} == {"MZ-twilio"}
    assert stdout.count('"type":"utterance"') + stdout.count('"type": "utterance"') == len(bounds)
    for said in (stdout, stderr, *texts):
        assert token not in said and wrong_token not in said and "customParameters" not in said


def test_ctrl_c_ends_the_monitor_while_a_call_is_sent_faster_than_real_time():
    """The ingest handler waits for room in the stream's buffer; at shutdown it once waited for ever."""
    port = free_port()
    process = start_ingest_monitor(port)
    # Sound, not μ-law's digital silence (0xff): past a second of zeros Silero is not run, and the worker then
    # kept up with the flood, so the buffer never filled and nothing waited for room at shutdown.
    noise = base64.b64encode(bytes((37 * i) % 256 for i in range(160))).decode()
    frame = json.dumps({"event": "media", "streamSid": "MZ-fast", "media": {"payload": noise}})

    async def flood() -> list[str]:
        subscriber = await subscriber_when_up(port)
        await subscriber.close()
        replies: list[str] = []

        async def collect(ws) -> None:  # every reply, whenever it comes, until the monitor closes the connection
            try:
                async for reply in ws:
                    replies.append(str(reply))
            except ConnectionClosed:
                pass

        async with connect(f"ws://127.0.0.1:{port}/ingest") as ws:
            collecting = asyncio.create_task(collect(ws))
            await ws.send(json.dumps({"event": "start", "start": {"streamSid": "MZ-fast"}}))
            for _ in range(4000):  # 80 s of audio as fast as TCP takes it: the 10 s buffer fills
                await ws.send(frame)
            process.send_signal(signal.SIGINT)
            try:  # the call goes on sending until the monitor ends it
                while True:
                    await ws.send(frame)
                    await asyncio.sleep(0.001)  # still 20 times real time
            except ConnectionClosed:
                pass
            await collecting
        return replies

    try:
        replies = asyncio.run(asyncio.wait_for(flood(), 90))
        process.wait(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, process.stderr.read()
    assert any("stream 'MZ-fast': the monitor is stopping; audio from here on is not analysed" in reply for reply in replies), replies[-3:]


def test_calls_beyond_max_streams_a_second_call_on_one_connection_or_a_repeated_start_are_refused_and_counted():
    port = free_port()
    process = start_ingest_monitor(port, "--max-streams", "2")

    async def scenario() -> tuple[list[str], list[dict]]:
        subscriber = await subscriber_when_up(port)
        replies: list[str] = []
        connections = [await connect(f"ws://127.0.0.1:{port}/ingest") for _ in range(3)]
        for index, connection in enumerate(connections):
            await connection.send(json.dumps({"event": "start", "start": {"streamSid": f"MZ{index}"}}))
        await connections[0].send(json.dumps({"event": "start", "start": {"streamSid": "MZ-extra"}}))
        await connections[0].send(json.dumps({"event": "start", "start": {"streamSid": "MZ0"}}))
        for connection in (connections[2], connections[0], connections[0]):
            replies.append(json.loads(await asyncio.wait_for(connection.recv(), 10))["message"])
        messages: list[dict] = []

        async def until_all_counted() -> None:
            while not any(m["type"] == "status" and m["refused_streams"] == 3 for m in messages):
                messages.append(json.loads(await subscriber.recv()))

        try:
            await asyncio.wait_for(until_all_counted(), 10)
        except TimeoutError:
            pass
        for connection in connections:
            await connection.close()
        await subscriber.close()
        return replies, messages

    replies, messages = run_then_sigterm(process, scenario)
    assert replies == [
        "stream 'MZ2' refused: 2 streams are open, the most this monitor takes (--max-streams)",
        "stream 'MZ-extra' refused: this connection already carries 'MZ0'; one call per connection",
        "stream 'MZ0' started twice",
    ]
    started = {m["stream"] for m in messages if m["type"] == "stream_started"}
    assert started == {"MZ0", "MZ1"}
    status = [m for m in messages if m["type"] == "status"][-1]
    assert status["refused_streams"] == 3  # every 'start' that opened no stream, as docs/protocol.md says
    assert status["ingest_gaps"] == status["ingest_late_chunks"] == 0 and undocumented_fields(messages) == []


def plain_get(port: int, path: str) -> tuple[int, str, str, str]:
    """What `curl http://127.0.0.1:PORT/PATH` gets: status, body, and the Upgrade and Connection headers."""
    import http.client

    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        client.request("GET", path)
        response = client.getresponse()
        return response.status, response.read().decode(), response.getheader("Upgrade") or "", response.getheader("Connection") or ""
    finally:
        client.close()


def test_a_plain_http_get_of_ingest_is_told_to_connect_over_websocket_not_sent_to_the_page():
    """`curl /ingest` of a monitor taking calls got 404 "not found: the page and its WebSocket are at /": ingest is there."""
    port = free_port()
    process = start_ingest_monitor(port)

    async def requests() -> dict[str, tuple[int, str, str, str]]:
        await (await subscriber_when_up(port, monitor=process)).close()
        return {path: await asyncio.to_thread(plain_get, port, path) for path in ("/ingest", "/ingest/?token=x", "/", "/other")}

    answers = run_then_sigterm(process, requests)
    told = f"/ingest takes call audio over WebSocket (Twilio Media Streams framing): connect with ws://127.0.0.1:{port}/ingest\n"
    assert answers["/ingest"] == answers["/ingest/?token=x"] == (426, told, "websocket", "upgrade, close")
    assert answers["/"][0] == 200 and "<html" in answers["/"][1].lower()  # the page, as before
    assert answers["/other"][:2] == (404, "not found: the page and its WebSocket are at /\n")


def test_a_plain_http_get_of_ingest_without_ingest_says_to_start_the_monitor_with_it():
    from ser_stream.publish import Publisher
    from ser_stream.web import serve_page

    async def requests() -> tuple[int, str, str, str]:
        publisher = Publisher("127.0.0.1", 0)
        publisher.hello = {"type": "hello"}
        publisher.page = serve_page  # as the monitor serves it: the page's own 404 once answered
        await publisher.start()
        try:
            return await asyncio.to_thread(plain_get, publisher.port, "/ingest")
        finally:
            await publisher.close(0)

    assert asyncio.run(asyncio.wait_for(requests(), 60))[:2] == (404, "no call audio is taken here: /ingest is served by a monitor started with --ingest\n")
