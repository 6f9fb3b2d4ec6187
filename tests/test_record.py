"""--record: utterances reach SQLite before any subscriber sees them, and a subscriber can catch up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from benchmarks.clients import free_port, subscriber_when_up
from ser_stream.errors import SerStreamError
from ser_stream.publish import Publisher
from ser_stream.record import UtteranceLog, read_since
from tests.conftest import monitor, undocumented_fields

pytestmark = pytest.mark.slow


def finished(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int | None, str]:
    """The monitor's exit status and what it wrote to stderr (killed, status None, if it had not exited in time)."""
    try:
        _, errors = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, errors = process.communicate()
        return None, f"did not exit within {timeout:.0f} s; stderr: {errors}"
    return process.returncode, errors


async def subscribe(port: int, query: str = "", until=lambda messages: False) -> list[dict]:
    async with await subscriber_when_up(port, f"/{query}", max_queue=None) as ws:
        messages: list[dict] = []
        async for text in ws:
            messages.append(json.loads(text))
            if until(messages):
                break
        return messages


def stored(database) -> dict[int, dict]:
    with sqlite3.connect(database) as connection:
        return {seq: json.loads(text) for seq, text in connection.execute("SELECT seq, message FROM utterances")}


def test_every_broadcast_utterance_is_on_disk_when_the_process_is_killed(clips_with_silence, shipped_model, tmp_path):
    path, _ = clips_with_silence
    database = tmp_path / "utterances.db"
    port = free_port()
    process = monitor(port, "--source", f"file:{path}", "--record", str(database), "--await-subscribers", "1")
    try:
        messages = asyncio.run(subscribe(port, until=lambda ms: sum(m["type"] == "utterance" for m in ms) >= 2))
    finally:
        process.send_signal(signal.SIGKILL)  # no chance to flush anything
        process.wait(timeout=30)
    broadcast = [m for m in messages if m["type"] == "utterance"]
    assert [m["seq"] for m in broadcast] == [1, 2]
    on_disk = stored(database)
    for message in broadcast:
        assert on_disk[message["seq"]] == {k: v for k, v in message.items() if k != "seq"}


def test_a_subscriber_catches_up_from_a_seq_and_seqs_keep_growing_across_restarts(clips_with_silence, shipped_model, tmp_path):
    path, bounds = clips_with_silence
    database = tmp_path / "utterances.db"
    status, errors = finished(monitor(free_port(), "--source", f"file:{path}", "--record", str(database), "--pace", "fast"))
    assert status == 0, errors
    assert sorted(stored(database)) == list(range(1, len(bounds) + 1))

    port = free_port()
    second = monitor(port, "--source", f"file:{path}", "--record", str(database), "--pace", "fast", "--await-subscribers", "1")
    try:
        messages = asyncio.run(subscribe(port, "?since=2"))
    except Exception as error:
        raise AssertionError(f"subscriber failed: {error!r}; monitor: {finished(second)}") from error
    status, errors = finished(second)
    assert status == 0, errors
    kinds = [m["type"] for m in messages]
    caught_up = kinds.index("caught_up")
    replayed = [m for m in messages[:caught_up] if m["type"] == "utterance"]
    assert [m["seq"] for m in replayed] == list(range(3, len(bounds) + 1))  # what it missed, oldest first
    assert messages[caught_up]["last"] == len(bounds)
    assert undocumented_fields(messages) == []
    assert messages[0]["last_seq"] == len(bounds)  # hello: what the database held when the subscriber connected
    live = [m["seq"] for m in messages[caught_up:] if m["type"] == "utterance"]
    assert live == list(range(len(bounds) + 1, 2 * len(bounds) + 1))  # numbering continues, nothing twice
    # the same file, so the same stream and ids: the run each utterance came from is told by its stream's start
    first_run = stored(database)[1]["stream_started_at"]
    (second_run,) = [m["started_at"] for m in messages if m["type"] == "stream_started"]
    assert {m["stream_started_at"] for m in replayed} == {first_run} and first_run != second_run
    assert {m["stream_started_at"] for m in messages[caught_up:] if m["type"] == "utterance"} == {second_run}


def test_since_without_record_is_answered_with_an_error_line(clips_with_silence, shipped_model):
    path, _ = clips_with_silence
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", f"file:{path}", "--no-dashboard", "--pace", "fast",
         "--ws", f"127.0.0.1:{port}", "--await-subscribers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        messages = asyncio.run(subscribe(port, "?since=0"))
    finally:
        process.wait(timeout=120)
    errors = [m for m in messages if m["type"] == "error"]
    assert errors and "needs a monitor started with --record" in errors[0]["message"]
    assert [m["seq"] for m in messages if m["type"] == "utterance"] == [1, 2, 3, 4]


def test_the_log_pages_by_stream(tmp_path):
    log = UtteranceLog(tmp_path / "log.db")
    for index in range(7):
        log.append({"type": "utterance", "stream": "a" if index % 2 else "b", "id": index})
    log.close()
    pages = list(read_since(tmp_path / "log.db", 1, stream="b", page=2))
    seqs = [json.loads(text)["seq"] for page in pages for _, text in page]
    assert seqs == [3, 5, 7] and [len(page) for page in pages] == [2, 1]


def test_sigterm_publishes_and_stores_every_utterance_already_complete(clips_with_silence, shipped_model, tmp_path):
    path, bounds = clips_with_silence
    second_clip_start = bounds[1][0]
    database = tmp_path / "utterances.db"
    port = free_port()
    process = monitor(port, "--source", f"file:{path}", "--record", str(database), "--await-subscribers", "1")

    async def scenario() -> list[dict]:
        async def stop_in_the_second_clip():
            # Stopped by stream time, not by a sleep: on a loaded machine the first utterance arrived late and a
            # fixed wait after it let the second clip's utterance close before the SIGTERM (three utterances, not two).
            while not any(m["type"] == "window" and m["t_start"] >= second_clip_start for m in messages):
                await asyncio.sleep(0.05)
            process.send_signal(signal.SIGTERM)  # the second clip's utterance is open: SIGTERM closes it

        messages: list[dict] = []
        stopper = asyncio.ensure_future(stop_in_the_second_clip())
        for _ in range(300):
            try:
                async with connect(f"ws://127.0.0.1:{port}/", max_queue=None) as ws:
                    async for text in ws:
                        messages.append(json.loads(text))
                break
            except OSError:
                await asyncio.sleep(0.1)
        await stopper
        return messages

    messages = asyncio.run(scenario())
    status, errors = finished(process, timeout=30)
    assert status == 0, errors
    broadcast = {m["seq"]: {k: v for k, v in m.items() if k != "seq"} for m in messages if m["type"] == "utterance"}
    assert len(broadcast) == 2  # the complete one, and the one SIGTERM closed
    assert stored(database) == broadcast  # every one of them written, nothing else


def test_an_utterance_stored_during_the_catch_up_comes_live_after_its_windows_not_replayed(tmp_path, monkeypatch, open_log):
    """An utterance stored while a ?since= subscriber's catch-up ran was replayed, then its live windows, already
    queued, came after it (only the live utterance was recognised as a duplicate). The catch-up now stops at the
    last utterance published when the subscriber joined: later ones come from its queue, in the order published."""
    import ser_stream.publish

    log = open_log(tmp_path / "utterances.db")
    live_window = {"type": "window", "stream": "s", "utterance": 1, "t_start": 0.0, "t_end": 2.0}
    later_window = {"type": "window", "stream": "s", "utterance": 2, "t_start": 2.0, "t_end": 4.0}

    async def scenario():
        publisher = await publishing(tmp_path / "utterances.db")
        loop = asyncio.get_running_loop()

        def pages_after_the_live_messages(path, since, stream=None, until=None, **reading):
            async def live():  # the worker published utterance 1 (windows first, stored first) while the catch-up read
                publisher.publish(live_window)
                publisher.publish(log.append({"type": "utterance", "stream": "s", "id": 1, "windows": 1}))
                publisher.publish(later_window)
            asyncio.run_coroutine_threadsafe(live(), loop).result()
            yield from read_since(path, since, stream, until, **reading)

        monkeypatch.setattr(ser_stream.publish, "read_since", pages_after_the_live_messages)
        async with connect(f"ws://127.0.0.1:{publisher.port}/?since=0") as ws:
            messages = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(5)]
        await publisher.close()
        return messages

    messages = asyncio.run(scenario())
    assert [(m["type"], m.get("utterance", m.get("id"))) for m in messages] == [
        ("hello", None), ("caught_up", None), ("window", 1), ("utterance", 1), ("window", 2)
    ]


def test_live_windows_are_sent_whatever_an_earlier_run_stored_under_the_same_stream_and_id(tmp_path, open_log):
    """A restarted monitor's `mic` numbers its utterances from 1 again: the live windows of its utterance 1 were
    skipped, uncounted, as if the catch-up had replayed it, because an earlier run's (mic, 1) was on its last page."""
    earlier_run = UtteranceLog(tmp_path / "utterances.db")
    earlier_run.append({"type": "utterance", "stream": "mic", "id": 1, "windows": 3})
    earlier_run.close()
    open_log(tmp_path / "utterances.db")  # this run's, as the monitor opens it before its publisher starts

    async def scenario():
        publisher = await publishing(tmp_path / "utterances.db")  # its start reads the earlier run's last seq
        async with connect(f"ws://127.0.0.1:{publisher.port}/?since=0") as ws:
            caught_up = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(3)]
            for t in range(3):
                publisher.publish({"type": "window", "stream": "mic", "utterance": 1, "t_start": t / 2, "t_end": t / 2 + 2})
            live = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(3)]
        await publisher.close()
        return caught_up, live

    caught_up, live = asyncio.run(scenario())
    assert [m["type"] for m in caught_up] == ["hello", "utterance", "caught_up"]
    assert [(m["type"], m["t_start"]) for m in live] == [("window", 0.0), ("window", 0.5), ("window", 1.0)]


def test_live_windows_of_utterances_stored_during_a_long_catch_up_never_follow_them(tmp_path, monkeypatch, open_log):
    """Only the last page's utterances were remembered: with 500 or more stored during one catch-up, windows of one
    on an earlier page came after it (a page of one utterance stands in for 500 here). Those utterances now come
    from the queue, each after its windows."""
    import ser_stream.publish

    log = open_log(tmp_path / "utterances.db")

    async def scenario():
        publisher = await publishing(tmp_path / "utterances.db")
        loop = asyncio.get_running_loop()

        def pages_of_one(path, since, stream=None, until=None, **reading):
            async def live():  # the worker, while the catch-up reads: windows, then their utterance, stored first
                for number in (1, 2):
                    publisher.publish({"type": "window", "stream": "s", "utterance": number, "t_start": 0.0, "t_end": 2.0})
                    publisher.publish(log.append({"type": "utterance", "stream": "s", "id": number, "windows": 1}))
            asyncio.run_coroutine_threadsafe(live(), loop).result()
            yield from read_since(path, since, stream, until, page=1, **reading)

        monkeypatch.setattr(ser_stream.publish, "read_since", pages_of_one)
        async with connect(f"ws://127.0.0.1:{publisher.port}/?since=0") as ws:
            publisher.publish({"type": "status"})  # before or after the worker's messages: it joins the same queue
            messages = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(7)]
        await publisher.close()
        return messages

    messages = asyncio.run(scenario())
    assert [(m["type"], m.get("utterance", m.get("id"))) for m in messages if m["type"] != "status"] == [
        ("hello", None), ("caught_up", None), ("window", 1), ("utterance", 1), ("window", 2), ("utterance", 2)
    ]
    assert [m["type"] for m in messages].count("status") == 1


def test_a_catch_up_page_that_finds_every_connection_lent_waits_its_turn_and_pages_are_read_in_the_order_asked(tmp_path, open_log):
    """Catch-ups share a few read-only connections (a connection each once left a descriptor open per catch-up
    running at once): a page asked for while all are lent is not refused, it waits, and after those that asked first."""
    import threading
    import time

    from ser_stream.record import CatchUpConnections

    log = open_log(tmp_path / "calls.db")
    log.append({"type": "utterance", "stream": "a", "id": 1})
    connections = CatchUpConnections(log.path, size=1)
    served: list[tuple[str, int]] = []
    readers: list[threading.Thread] = []
    with connections.lent():  # the only connection, lent for another catch-up's page
        for name in ("first", "second", "third"):
            def read(name: str = name) -> None:
                served.append((name, next(read_since(log.path, 0, connections=connections))[0][0]))

            readers.append(threading.Thread(target=read))
            readers[-1].start()
            while connections.waiting < len(readers):  # it has asked, and waits
                time.sleep(0.001)
        assert served == [] and all(reader.is_alive() for reader in readers)
    for reader in readers:
        reader.join(30)
    connections.close()
    assert served == [("first", 1), ("second", 1), ("third", 1)]


def test_catch_up_pages_can_be_read_on_different_threads(tmp_path):
    """The publisher reads each page through asyncio.to_thread: under load, successive pages land on
    different pool threads (once a subscriber's catch-up failed with 1011 that way)."""
    import threading

    from ser_stream.record import UtteranceLog, read_since

    log = UtteranceLog(tmp_path / "utterances.db")
    for index in range(3):
        log.append({"type": "utterance", "stream": "a", "id": index})
    log.close()
    pages = read_since(tmp_path / "utterances.db", 0, page=1)
    read: list[list[tuple[int, str]]] = []
    for _ in range(4):  # three pages, then the end, each on a thread of its own
        thread = threading.Thread(target=lambda: read.append(next(pages, [])))
        thread.start()
        thread.join()
    assert [json.loads(page[0][1])["seq"] for page in read if page] == [1, 2, 3] and read[-1] == []


async def publishing(database) -> Publisher:
    """A publisher serving catch-up from ``database``, as ``--record`` sets it up."""
    publisher = Publisher("127.0.0.1", 0)
    publisher.record_path = database
    publisher.hello = {"type": "hello", "version": 1}
    await publisher.start()
    return publisher


async def received(url: str, count: int) -> list[dict]:
    async with connect(url) as ws:
        return [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(count)]


def test_an_utterance_goes_out_with_seq_first_and_replayed_as_it_went_out_live(tmp_path, open_log):
    """protocol.md: ``seq`` is always an utterance's first key. A client that keeps the lines it got (or hashes them)
    sees one utterance, whether it came live or from a ?since= catch-up, as the same text."""
    from tests.conftest import utterance

    log = open_log(tmp_path / "utterances.db")

    async def scenario() -> tuple[str, str]:
        publisher = await publishing(log.path)
        try:
            async with connect(f"ws://127.0.0.1:{publisher.port}/") as live:
                await asyncio.wait_for(live.recv(), 5)  # hello: it is subscribed
                publisher.publish(log.append(utterance("call")))  # stored, then published, as the outbox does
                live_text = await asyncio.wait_for(live.recv(), 5)
            async with connect(f"ws://127.0.0.1:{publisher.port}/?since=0") as catching_up:
                await asyncio.wait_for(catching_up.recv(), 5)  # hello
                replayed_text = await asyncio.wait_for(catching_up.recv(), 5)
        finally:
            await publisher.close()
        return str(live_text), str(replayed_text)

    live_text, replayed_text = asyncio.run(scenario())
    assert live_text.startswith('{"seq":1,"type":"utterance",')
    assert replayed_text == live_text


def test_a_since_that_is_not_an_utterance_seq_is_refused_with_1008_naming_it(tmp_path):
    """'²' passes str.isdigit() and 2**63 overflows SQLite: both once closed the subscriber with an unexplained 1011."""
    log = UtteranceLog(tmp_path / "utterances.db")
    log.append({"type": "utterance", "stream": "a"})
    log.close()
    bad = {"x": "x", "-1": "-1", "%C2%B2": "²", "%D9%A3": "٣", "9223372036854775808": "9223372036854775808",
           "99999999999999999999": "99999999999999999999", "1" * 5000: "1" * 37 + "…",
           "+5": "+5", "%FF": "%FF"}  # named as sent: "+5" was once named " 5", and "%FF" a replacement character

    async def scenario():
        publisher = await publishing(tmp_path / "utterances.db")
        refused = {}
        for query in bad:
            with pytest.raises(ConnectionClosedError) as closed:
                await received(f"ws://127.0.0.1:{publisher.port}/?since={query}", 1)
            refused[query] = (closed.value.rcvd.code, closed.value.rcvd.reason)
        largest = await received(f"ws://127.0.0.1:{publisher.port}/?since=9223372036854775807", 2)
        padded = await received(f"ws://127.0.0.1:{publisher.port}/?since=0000000000000000000000", 3)
        await publisher.close()
        return refused, largest, padded

    refused, largest, padded = asyncio.run(scenario())
    for query, shown in bad.items():
        assert refused[query] == (1008, f"?since={shown}: not an utterance seq (a whole number, 0 to 2**63-1)")
    assert largest[1] == {"type": "caught_up", "since": 2**63 - 1, "last": 0}
    assert [m["type"] for m in padded] == ["hello", "utterance", "caught_up"] and padded[1]["seq"] == 1


@pytest.mark.parametrize("name", ["rec#1.db", "rec?mode=rw.db", "100%.db", "%23.db", "my records.db", "a #b?c%20d/rec.db"])
def test_catch_up_reads_a_record_path_with_uri_characters_in_its_name(tmp_path, name):
    """read_since opens the database read-only through a file: URI; '#', '?' or '%' in --record once broke every catch-up."""
    database = tmp_path / name
    database.parent.mkdir(exist_ok=True)
    log = UtteranceLog(database)
    for index in range(2):
        log.append({"type": "utterance", "stream": "a", "id": index})
    log.close()
    assert [json.loads(text)["seq"] for page in read_since(database, 0) for _, text in page] == [1, 2]

    async def scenario():
        publisher = await publishing(database)
        messages = await received(f"ws://127.0.0.1:{publisher.port}/?since=1", 3)
        await publisher.close()
        return messages

    hello, utterance, caught_up = asyncio.run(scenario())
    assert utterance["seq"] == 2 and caught_up == {"type": "caught_up", "since": 1, "last": 2}


@pytest.mark.parametrize("damage", ["missing", "not_sqlite", "no_table"])
def test_a_record_database_that_cannot_be_read_is_an_error_line_and_live_messages_follow(tmp_path, damage):
    """As without --record: one error line naming ?since=, then live messages, instead of a 1011 close."""
    database = tmp_path / "utterances.db"
    if damage == "not_sqlite":
        database.write_text("not a database\n" * 100)
    elif damage == "no_table":
        with sqlite3.connect(database) as connection:
            connection.execute("CREATE TABLE other (x)")

    async def scenario():
        publisher = await publishing(database)
        async with connect(f"ws://127.0.0.1:{publisher.port}/?since=3") as ws:
            hello, error = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
            publisher.publish({"seq": 4, "type": "utterance", "stream": "a"})
            live = json.loads(await asyncio.wait_for(ws.recv(), 5))
        failed = publisher.counters()["failed_catch_ups"]  # as the status message reports it
        await publisher.close()
        return hello, error, live, failed

    hello, error, live, failed = asyncio.run(scenario())
    assert error["type"] == "error" and "stream" not in error
    assert error["message"].startswith("?since=3: cannot read the --record database (") and "\n" not in error["message"]
    assert live == {"seq": 4, "type": "utterance", "stream": "a"} and failed == 1
    assert damage != "missing" or not database.exists()  # read-only: a catch-up never creates a database at the path


def held_by_another_writer(database) -> sqlite3.Connection:
    """A second process's write transaction, as a backup tool or a second monitor would hold it."""
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def open_descriptors(path, deleted: bool = False) -> int:
    """Descriptors this process holds on ``path`` (or, with ``deleted``, on a file deleted from there)."""
    names = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")]
    return sum(name.startswith(str(path)) and (not deleted or name.endswith(" (deleted)")) for name in names)


@pytest.mark.parametrize("problem", ["held by another writer", "not a database"])
def test_a_database_refused_at_open_keeps_no_handle_on_it(tmp_path, problem):
    """Refused, it kept its connection open: harmless to the command, which exits, not to a caller that goes on."""
    database = tmp_path / "utterances.db"
    holder = None
    if problem == "held by another writer":
        UtteranceLog(database).close()
        holder = held_by_another_writer(database)
    else:
        database.write_bytes(b"not sqlite " * 100)
    try:
        with pytest.raises(SerStreamError):
            UtteranceLog(database)
    finally:
        if holder is not None:
            holder.close()  # SQLite defers closing a file this process holds locks on until they go
    assert open_descriptors(database) == 0


def test_a_database_that_cannot_be_written_is_refused_at_start_in_one_line(clips_with_silence, shipped_model, tmp_path):
    path, _ = clips_with_silence
    database = tmp_path / "utterances.db"
    UtteranceLog(database).close()
    holder = held_by_another_writer(database)
    try:
        status, errors = finished(monitor(free_port(), "--source", f"file:{path}", "--record", str(database), "--pace", "fast"))
    finally:
        holder.close()
    assert status == 2
    assert errors.strip().splitlines()[-1] == f"ser-stream: error: --record {database}: cannot write to the database (database is locked)"


def test_an_utterance_the_database_cannot_store_is_still_published_reported_once_and_counted(clips_with_silence, shipped_model, tmp_path):
    """Once, the first failed insert stopped the worker and with it every stream."""
    import socket
    import time

    path, bounds = clips_with_silence
    database = tmp_path / "utterances.db"
    port = free_port()
    process = monitor(port, "--source", f"file:{path}", "--record", str(database), "--pace", "fast", "--await-subscribers", "1")
    deadline = time.monotonic() + 60
    while True:  # the monitor listens once its database has passed the start-up write check
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None, finished(process)
            time.sleep(0.05)
    holder = held_by_another_writer(database)
    try:
        messages = asyncio.run(subscribe(port))
        status, errors = finished(process)
    finally:
        holder.close()
    assert status == 1, errors
    utterances = [m for m in messages if m["type"] == "utterance"]
    assert len(utterances) == len(bounds) and all(m["seq"] is None for m in utterances)
    reason = f"--record {database}: an utterance was not stored (database is locked); it is published without a seq"
    assert [m["message"] for m in messages if m["type"] == "error"] == [reason]  # once, not once per utterance
    assert [m for m in messages if m["type"] == "status"][-1]["record_failures"] == len(bounds)
    assert errors.strip().splitlines()[-1] == f"ser-stream: error: --record {database}: {len(bounds)} utterance(s) were published but not stored"
    assert undocumented_fields(messages) == []
    assert stored(database) == {}


def test_a_database_keeps_its_record_id_across_restarts_and_another_database_has_its_own(tmp_path):
    """hello carries it, so a page that kept a seq from yesterday's database does not ask today's for it."""
    first = UtteranceLog(tmp_path / "monday.db")
    monday = first.record_id
    first.close()
    again = UtteranceLog(tmp_path / "monday.db")
    other = UtteranceLog(tmp_path / "tuesday.db")
    assert again.record_id == monday != other.record_id and len(monday) == 32
    again.close()
    other.close()


def test_hello_names_the_last_seq_stored_or_published_when_the_subscriber_connected(tmp_path):
    """A client that has seen no utterance yet resumes from it after a reconnect: without it the web page kept no seq
    and lost what was stored while it reconnected. Without --record hello has no such field."""
    log = UtteranceLog(tmp_path / "utterances.db")
    for _ in range(3):
        log.append({"type": "utterance", "stream": "a"})

    async def scenario():
        publisher = await publishing(tmp_path / "utterances.db")
        url = f"ws://127.0.0.1:{publisher.port}/"
        at_start = (await received(url, 1))[0]
        publisher.publish(log.append({"type": "utterance", "stream": "a"}))
        later = (await received(url, 1))[0]
        unrecorded = Publisher("127.0.0.1", 0)
        unrecorded.hello = {"type": "hello", "version": 1}
        await unrecorded.start()
        without = (await received(f"ws://127.0.0.1:{unrecorded.port}/", 1))[0]
        await publisher.close()
        await unrecorded.close()
        return at_start, later, without

    at_start, later, without = asyncio.run(scenario())
    log.close()
    assert at_start == {"type": "hello", "version": 1, "last_seq": 3}  # stored before this run
    assert later == {"type": "hello", "version": 1, "last_seq": 4}  # and published since
    assert without == {"type": "hello", "version": 1}


@pytest.mark.parametrize("fate", ["deleted", "replaced"])
def test_a_database_deleted_or_replaced_while_the_monitor_runs_is_a_counted_failure_not_a_silent_write_to_nowhere(tmp_path, fate):
    """SQLite went on writing into the open, deleted file: seqs were published, record_failures stayed 0, and nothing was kept."""
    from ser_stream.record import RecordError

    path = tmp_path / "calls.db"
    log = UtteranceLog(path)
    utterance = {"type": "utterance", "stream": "call", "id": 1}
    assert log.append(utterance)["seq"] == 1
    for suffix in ("", "-wal", "-shm"):  # as `rm calls.db*` does
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    if fate == "replaced":
        UtteranceLog(path).close()  # another database now at that path
    with pytest.raises(RecordError, match=r"the database file was deleted or replaced while the monitor ran; restart it to store again"):
        log.append(utterance)
    assert log.failures == 1
    log.close()


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("adir", "is a folder, not a database file; name a file in it ({tmp}/adir/calls.db)"),
        ("missing/calls.db", "no folder {tmp}/missing to write it in"),
        ("notes.txt/calls.db", "{tmp}/notes.txt is a file, not a folder to write it in"),
        ("b" * 300 + ".db", "cannot open the database (File name too long)"),
    ],
    ids=["folder", "missing-folder", "file-as-folder", "name-too-long"],
)
def test_a_record_path_no_database_can_be_at_says_why_in_one_line(tmp_path, where, reason):
    """`--record adir` once said only "cannot open the database (unable to open database file)", as SQLite does of all
    three; a name too long for the file system was an OSError traceback."""
    (tmp_path / "adir").mkdir()
    (tmp_path / "notes.txt").write_text("not a folder")
    with pytest.raises(SerStreamError) as refused:
        UtteranceLog(tmp_path / where)
    assert str(refused.value) == f"--record {tmp_path / where}: " + reason.format(tmp=tmp_path)


def test_monitor_record_given_a_folder_is_refused_at_start_naming_it_a_folder(tmp_path, shipped_model, capsys):
    import numpy as np
    import soundfile

    from ser_stream.cli import main

    recording = tmp_path / "x.wav"
    soundfile.write(recording, np.zeros(16000, np.float32), 16000)
    folder = tmp_path / "adir"
    folder.mkdir()
    assert main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--ws", "127.0.0.1:0",
                 "--record", str(folder), "--source", f"file:{recording}"]) == 2
    assert capsys.readouterr().err == f"ser-stream: error: --record {folder}: is a folder, not a database file; name a file in it ({folder}/calls.db)\n"


def test_a_file_whose_name_is_not_utf8_is_stored_under_its_name_with_the_bytes_as_escapes(clips_with_silence, shipped_model, tmp_path, capsys):
    """Its stream id held Python's surrogate escapes, which SQLite cannot encode: the INSERT raised UnicodeEncodeError
    and stopped the monitor (exit 1, every stream with it)."""
    import os
    import shutil

    from ser_stream.cli import main

    source, _ = clips_with_silence
    named = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.wav")
    shutil.copyfile(source, named)
    database = tmp_path / "calls.db"
    status = main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--pace", "fast", "--ws", "127.0.0.1:0",
                   "--record", str(database), "--print-utterances", "--source", f"file:{named}"])
    published = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0 and published and {message["stream"] for message in published} == {"caf\\xe9.wav"}
    assert sorted(stored(database)) == [message["seq"] for message in published]


def test_a_database_held_through_shutdown_delays_it_by_one_wait_and_every_utterance_is_published_and_counted(clips_with_silence, shipped_model, tmp_path, monkeypatch, capsys):
    """Each queued insert waited the busy timeout in turn; once the shutdown's time ran out, what was still queued
    (utterances, stream ends, the final status) was never published, printed or counted."""
    from ser_stream import monitor as monitor_module
    from ser_stream import record
    from ser_stream.cli import main

    path, bounds = clips_with_silence
    database = tmp_path / "utterances.db"
    holders: list[sqlite3.Connection] = []

    class HeldOnceOpen(UtteranceLog):
        """Passes the start-up write check, then another writer takes the database for the rest of the run."""

        def __init__(self, path) -> None:
            super().__init__(path)
            holders.append(held_by_another_writer(path))

    monkeypatch.setattr(record, "BUSY_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(monitor_module, "FINISH_SECONDS", 1.5)
    monkeypatch.setattr(monitor_module, "UtteranceLog", HeldOnceOpen)
    try:
        status = main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--pace", "fast", "--ws", "127.0.0.1:0",
                       "--record", str(database), "--print-utterances", "--log-status", "60",
                       "--source", f"file:{path}", "--source", f"file:{path}"])
    finally:
        for holder in holders:
            holder.close()
    captured = capsys.readouterr()
    printed = [json.loads(line) for line in captured.out.splitlines()]
    utterances = [message for message in printed if message["type"] == "utterance"]
    errors = captured.err.strip().splitlines()
    assert status == 1, captured.err
    assert len(utterances) == 2 * len(bounds) and all(message["seq"] is None for message in utterances)
    assert not any("stopped before publishing everything" in line for line in errors), captured.err
    totals = json.loads(next(line for line in reversed(errors) if line.startswith("ser-stream: status ")).removeprefix("ser-stream: status "))
    assert totals["streams"] == 0 and totals["utterances"] == totals["record_failures"] == 2 * len(bounds)  # the final status
    assert errors[-1] == f"ser-stream: error: --record {database}: {2 * len(bounds)} utterance(s) were published but not stored"
    assert stored(database) == {}


def test_a_catch_up_only_subscriber_gets_the_stored_utterances_then_a_normal_close_and_no_live_message(tmp_path, open_log):
    """The page's catch-up after drops (`?since=N`, closed by the page at caught_up) was a full subscriber: it queued
    live messages it never read, its queue overflowed into subscriber_drops though no one was told, and status said
    2 subscribers with one page open. `?since=N&live=0` gets hello, the live streams, the stored utterances after N
    and caught_up, then a 1000 close: never a live subscriber, its queue never filled, never counted as cut off."""
    from tests.conftest import utterance

    log = open_log(tmp_path / "utterances.db")
    for number in range(3):
        log.append(utterance("call", number))

    async def scenario():
        publisher = Publisher("127.0.0.1", 0, queue_size=2)
        publisher.record_path = log.path
        publisher.hello = {"type": "hello", "version": 1}
        await publisher.start()
        publisher.publish({"type": "stream_started", "stream": "call", "t": 0.0})
        try:
            async with connect(f"ws://127.0.0.1:{publisher.port}/?since=1&live=0") as catching_up:
                received = [json.loads(await asyncio.wait_for(catching_up.recv(), 5))]  # hello: the catch-up has begun
                for number in range(10):  # five times its queue, published while it catches up
                    publisher.publish({"type": "window", "stream": "call", "utterance": number})
                counted_meanwhile = publisher.counters()
                async for text in catching_up:
                    received.append(json.loads(text))
                closed = catching_up.close_code
        finally:
            await publisher.close()
        return received, closed, counted_meanwhile, publisher.counters()

    received, closed, counted_meanwhile, counted = asyncio.run(scenario())
    assert [m["type"] for m in received] == ["hello", "stream_started", "utterance", "utterance", "caught_up"]
    assert received[0] == {"type": "hello", "version": 1, "last_seq": 3}
    assert [m["seq"] for m in received[2:4]] == [2, 3] and received[4] == {"type": "caught_up", "since": 1, "last": 3}
    assert closed == 1000
    assert counted_meanwhile["subscribers"] == 0
    assert counted["subscriber_drops"] == counted["subscribers_cut_off"] == 0


def test_a_catch_up_reads_the_utterances_after_since_up_to_and_with_until_oldest_first_of_every_stream_or_one(tmp_path, open_log):
    """docs/protocol.md: ``?since=N`` replays the utterances after N (the subscriber has N itself) up to the last one
    published when it connected (``until``: later ones reach it live), oldest first, a page at a time; with
    ``?stream=ID``, that stream's alone."""
    import itertools

    from tests.conftest import utterance

    log = open_log(tmp_path / "calls.db")
    for number in range(1, 9):  # seqs 1 to 8: stream a holds the odd ones, b the even ones
        log.append(utterance("a" if number % 2 else "b", number))

    def replayed(since: int, until: int | None = None, stream: str | None = None) -> list[int]:
        pages = list(itertools.islice(read_since(log.path, since, stream, until, page=2), 10))  # 5 at most, or it repeats
        assert all(len(page) <= 2 for page in pages)
        assert all(json.loads(text)["seq"] == seq for page in pages for seq, text in page)
        return [seq for page in pages for seq, _ in page]

    assert replayed(0) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert replayed(2, until=6) == [3, 4, 5, 6]
    assert replayed(3, until=7, stream="a") == [5, 7]
    assert replayed(4, stream="b") == [6, 8]
    assert replayed(8) == replayed(2, until=2) == replayed(0, stream="c") == []


def test_an_insert_waits_for_another_writer_that_holds_the_database_for_a_moment_and_is_stored(tmp_path, open_log):
    """docs/reliability.md: inserts wait up to 2 s on another writer (a backup, a retention job's DELETE), so a
    maintenance job's moment of locking loses no seq; only a longer hold makes it a counted failure."""

    from ser_stream.record import BUSY_TIMEOUT_SECONDS
    from tests.conftest import utterance

    log = open_log(tmp_path / "calls.db")
    assert log.connection.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_SECONDS * 1000 == 2000
    holder = sqlite3.connect(log.path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with let_go_within_the_wait(holder):
            assert log.append(utterance("call"))["seq"] == 1
    finally:
        holder.close()
    assert log.failures == 0 and sorted(stored(log.path)) == [1]


@contextlib.contextmanager
def let_go_within_the_wait(holder: sqlite3.Connection) -> Iterator[None]:
    """Another writer holding the database lets go well inside an insert's wait (SQLite's own timer: there is no
    event to wait on instead)."""
    import threading

    from ser_stream.record import BUSY_TIMEOUT_SECONDS

    release = threading.Timer(BUSY_TIMEOUT_SECONDS / 4, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        yield
    finally:
        release.join()


def test_catch_up_connections_lend_no_more_than_their_number_at_once_however_turns_are_handed_on(tmp_path, open_log):
    """docs/reliability.md: catch-ups share 4 read-only connections, each lent for one page; one asked for while all
    are lent waits its turn. A turn handed to a waiter must not also free a place: a third page would then be read
    while two connections of one were lent."""
    import threading

    from ser_stream.record import CatchUpConnections

    log = open_log(tmp_path / "calls.db")
    connections = CatchUpConnections(log.path, size=1)
    first_has_one, first_may_go, second_has_one = threading.Event(), threading.Event(), threading.Event()

    def borrow(has_one: threading.Event, may_go: threading.Event | None = None) -> None:
        with connections.lent():
            has_one.set()
            if may_go is not None:
                may_go.wait()

    try:
        with connections.lent():  # held here: the first borrower waits for it
            first = threading.Thread(target=borrow, args=(first_has_one, first_may_go), daemon=True)
            first.start()
            while connections.waiting < 1 and not first_has_one.is_set():
                first_has_one.wait(0.001)
            assert not first_has_one.is_set()
        first_has_one.wait()  # given back above: the turn passed to the first borrower, which holds it
        second = threading.Thread(target=borrow, args=(second_has_one,), daemon=True)
        second.start()
        while connections.waiting < 1 and not second_has_one.is_set():
            second_has_one.wait(0.001)
        assert not second_has_one.is_set() and connections.waiting == 1  # it waits: the only connection is lent
    finally:
        first_may_go.set()
    for thread in (first, second):
        thread.join()
    assert second_has_one.is_set()
    connections.close()


def test_a_catch_up_after_the_database_was_replaced_reads_the_file_now_at_the_path(tmp_path, open_log):
    """An idle shared connection still open on the old file (deleted, or replaced by a restore) would replay what it
    held; each page reads the database now at the --record path, as a connection of its own would."""
    from ser_stream.record import CatchUpConnections, UtteranceLog
    from tests.conftest import utterance

    path = tmp_path / "calls.db"
    old = UtteranceLog(path)
    for number in (1, 2, 3):
        old.append(utterance("old-call", number))
    old.close()
    connections = CatchUpConnections(path)
    assert [seq for seq, _ in next(read_since(path, 0, connections=connections))] == [1, 2, 3]  # one page: all of them
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    open_log(path).append(utterance("new-call", 1))
    replayed = [json.loads(text) for _, text in next(read_since(path, 0, connections=connections))]
    held_on_the_old_file = open_descriptors(path, deleted=True)  # an idle connection kept open on it holds its disk space
    connections.close()
    assert [(m["seq"], m["stream"]) for m in replayed] == [(1, "new-call")]
    assert held_on_the_old_file == 0


def test_a_catch_up_page_waiting_for_a_connection_when_the_monitor_stops_fails_at_once_and_none_stays_open(tmp_path, open_log):
    """At shutdown a page still waiting for a connection would wait for ever on its pool thread (and the monitor's
    exit with it); a connection given back after the close is closed, not kept."""
    import threading

    from ser_stream.record import CatchUpConnections

    log = open_log(tmp_path / "calls.db")
    log.append({"type": "utterance", "stream": "a"})
    connections = CatchUpConnections(log.path, size=1)
    failures: list[str] = []

    def read() -> None:
        try:
            next(read_since(log.path, 0, connections=connections))
        except sqlite3.ProgrammingError as error:
            failures.append(str(error))

    with connections.lent() as lent_before_the_close:
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        while connections.waiting < 1 and reader.is_alive():
            reader.join(0.001)
        connections.close()
        reader.join(60)  # a guard against hanging the suite: it fails at once
    assert not reader.is_alive() and failures == [f"{log.path}: the monitor is stopping; its catch-up connections are closed"]
    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        lent_before_the_close.execute("SELECT 1")


def test_a_page_whose_connection_could_not_be_opened_gives_its_turn_back(tmp_path, open_log):
    """A catch-up that finds no database (deleted, not yet created) fails as a connection of its own would, and frees
    its place: four such failures once left every later catch-up waiting for ever, once the database was back."""
    import threading

    from ser_stream.record import CatchUpConnections

    path = tmp_path / "calls.db"
    connections = CatchUpConnections(path, size=1)
    with pytest.raises(sqlite3.OperationalError):
        next(read_since(path, 0, connections=connections))
    open_log(path).append({"type": "utterance", "stream": "a"})
    pages: list[list[tuple[int, str]]] = []
    reader = threading.Thread(target=lambda: pages.append(next(read_since(path, 0, connections=connections))), daemon=True)
    reader.start()
    while reader.is_alive() and connections.waiting == 0:
        reader.join(0.001)
    assert connections.waiting == 0
    reader.join()
    connections.close()
    assert [seq for seq, _ in pages[0]] == [1]


def test_an_utterance_whose_stream_name_no_text_encoding_holds_is_a_counted_record_failure_not_a_crash(tmp_path, open_log):
    """A lone surrogate in a stream name (a JSON "\\ud800") cannot be encoded for SQLite: its UnicodeEncodeError once
    stopped the monitor. ``append`` raises RecordError, counted, and the utterance is still published without a seq."""
    from ser_stream.record import RecordError
    from tests.conftest import utterance

    log = open_log(tmp_path / "calls.db")
    with pytest.raises(RecordError, match=r"an utterance was not stored \(.*surrogate.*\); it is published without a seq"):
        log.append(utterance("call-\ud800"))
    assert log.failures == 1 and log.append(utterance("call"))["seq"] == 1


def test_a_seq_is_never_given_again_even_after_the_newest_utterances_are_deleted(tmp_path, open_log):
    """A retention job that deletes the newest rows must not make the next utterance reuse their seq: a subscriber that
    saw seq 3 would skip the new one (its ?since=3 reads after 3), across a restart too."""
    from tests.conftest import utterance

    log = open_log(tmp_path / "calls.db")
    assert [log.append(utterance("call"))["seq"] for _ in range(3)] == [1, 2, 3]
    with sqlite3.connect(log.path) as retention:
        retention.execute("DELETE FROM utterances WHERE seq >= 2")
    assert log.append(utterance("call"))["seq"] == 4
    log.close()
    with sqlite3.connect(tmp_path / "calls.db") as retention:
        retention.execute("DELETE FROM utterances WHERE seq = 4")
    assert open_log(tmp_path / "calls.db").append(utterance("call"))["seq"] == 5


def test_an_utterance_is_stored_while_a_catch_up_is_in_the_middle_of_reading(tmp_path, open_log):
    """WAL: a reader's open read does not hold the writer (in SQLite's rollback journal it would, for the whole
    busy timeout, and the utterance would be a record failure)."""
    from tests.conftest import utterance

    log = open_log(tmp_path / "calls.db")
    log.append(utterance("call"))
    reader = sqlite3.connect(log.path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM utterances").fetchone()[0] == 1  # the read holds its snapshot
        assert log.append(utterance("call"))["seq"] == 2
        assert reader.execute("SELECT COUNT(*) FROM utterances").fetchone()[0] == 1
        reader.execute("COMMIT")
    finally:
        reader.close()
    assert log.failures == 0 and sorted(stored(log.path)) == [1, 2]


def test_pages_read_at_once_are_never_lent_the_same_connection(tmp_path, open_log):
    """A connection is used by one thread at a time: one lent while still idle would be lent again to the next page."""
    from contextlib import ExitStack

    from ser_stream.record import CatchUpConnections

    open_log(tmp_path / "calls.db")
    connections = CatchUpConnections(tmp_path / "calls.db", size=3)
    try:
        for at_once in (2, 3):  # the second time, two of the three are idle ones given back
            with ExitStack() as pages:
                lent = [pages.enter_context(connections.lent()) for _ in range(at_once)]
                assert len({id(connection) for connection in lent}) == at_once
    finally:
        connections.close()


def test_an_insert_that_failed_on_a_held_database_does_not_stop_later_ones_waiting_while_the_monitor_runs(tmp_path, open_log):
    """Only at shutdown (hurry()) does a failed insert make the rest stop waiting: a backup that held the database
    once must not turn every later moment of locking into a lost seq."""

    from ser_stream.record import RecordError
    from tests.conftest import utterance

    log = open_log(tmp_path / "calls.db")
    holder = sqlite3.connect(log.path, isolation_level=None, check_same_thread=False)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(RecordError, match="database is locked"):
            log.append(utterance("call"))
        with let_go_within_the_wait(holder):  # held again, for a moment
            assert log.append(utterance("call"))["seq"] == 1
    finally:
        holder.close()
    assert log.failures == 1


def test_a_catch_up_read_without_the_monitors_connections_leaves_no_descriptor_open(tmp_path):
    """read_since and last_stored_seq called on their own (a script, a tool) open one connection and close it."""
    from ser_stream.record import last_stored_seq
    from tests.conftest import utterance

    path = tmp_path / "calls.db"
    log = UtteranceLog(path)
    log.append(utterance("call"))
    log.close()  # no writer left: SQLite keeps a closed connection's descriptor while another holds a lock

    assert [seq for page in read_since(path, 0) for seq, _ in page] == [1] and last_stored_seq(path) == 1
    assert open_descriptors(path) == 0
