"""``--record PATH``: every utterance is written to SQLite before it is broadcast.

A subscriber that was away asks for what it missed with ``?since=SEQ``: every
utterance message carries ``seq``, a number that only grows, across restarts
too, because it is the database's own row id. WAL mode lets catch-up readers
run while the worker writes; each utterance is committed on its own, so a
process killed at any moment has every utterance it broadcast on disk (WAL
with ``synchronous=NORMAL`` survives the death of the process; only a power
cut may lose the last commits).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import uuid
from collections.abc import Generator
from pathlib import Path

from ser_stream.errors import SerStreamError, one_line, shown
from ser_stream.messages import Utterance, UtteranceResult, numbered

SCHEMA = """
CREATE TABLE IF NOT EXISTS utterances (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS utterances_stream ON utterances (stream, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# A writer that holds the database (another process, a backup, a retention job's DELETE) makes each insert wait this
# long before it fails, reported and counted. Only the monitor's outbox thread waits, not the worker and the calls'
# audio (monitor.Outbox), so it rides out a maintenance job's second or two.
BUSY_TIMEOUT_SECONDS = 2.0


def file_identity(path: Path) -> tuple[int, int] | None:
    """The file at ``path`` (device and inode), or None if there is none."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def unopenable(path: Path) -> str | None:
    """Why no database can be opened at ``path``, or None: SQLite says "unable to open database file" of a folder, a
    missing folder and a file where a folder should be alike (`--record adir` once said only that)."""
    try:
        if path.is_dir():
            return f"is a folder, not a database file; name a file in it ({shown(path / 'calls.db')})"
        if not path.parent.exists():
            return f"no folder {shown(path.parent)} to write it in"
        if not path.parent.is_dir():
            return f"{shown(path.parent)} is a file, not a folder to write it in"
    except OSError as error:  # a name too long for the file system: is_dir() raises it, and a traceback once said so
        return f"cannot open the database ({error.strerror or type(error).__name__})"
    return None


class RecordError(SerStreamError):
    """An utterance the --record database did not store; the utterance is still published."""


class UtteranceLog:
    """Append-only log of utterance messages; ``append`` is called by the monitor's outbox thread only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failures = 0  # utterances not stored (published without a seq)
        # Set at shutdown: after one more insert fails on a locked database, the rest stop waiting (hurry()).
        self.shutting_down = False
        try:
            self.connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False, isolation_level=None)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=NORMAL")
            self.connection.executescript(SCHEMA)
        except sqlite3.Error as error:
            if hasattr(self, "connection"):  # opened, then a PRAGMA or the schema failed (not a database)
                self.connection.close()
            reason = unopenable(Path(path)) or f"cannot open the database ({error})"
            raise SerStreamError(f"--record {shown(path)}: {reason}") from None
        try:  # a database that opens but refuses writes (read-only file or medium, locked) is refused now, not mid-call
            self.connection.execute("BEGIN IMMEDIATE")
            self.connection.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('record_id', ?)", (uuid.uuid4().hex,))
            self.connection.execute("COMMIT")
        except sqlite3.Error as error:
            self.connection.close()  # refused: a caller that goes on (a test, an embedding program) keeps no handle
            raise SerStreamError(f"--record {shown(path)}: cannot write to the database ({error})") from None
        # Names this database in hello: a page that kept a seq from another database must not ask this one for it.
        self.record_id = str(self.connection.execute("SELECT value FROM meta WHERE key = 'record_id'").fetchone()[0])
        self.file = file_identity(path)

    def append(self, utterance: UtteranceResult) -> Utterance:
        """Store the utterance; return it with its ``seq``, or raise ``RecordError`` (counted) saying why not."""
        text = json.dumps(utterance, separators=(",", ":"))
        if file_identity(self.path) != self.file:  # SQLite goes on writing to the open file: a deleted one, unseen
            self.failures += 1
            raise RecordError(
                f"--record {shown(self.path)}: an utterance was not stored (the database file was deleted or replaced while "
                "the monitor ran; restart it to store again); it is published without a seq"
            )
        try:
            cursor = self.connection.execute("INSERT INTO utterances (stream, message) VALUES (?, ?)", (utterance["stream"], text))
        except (sqlite3.Error, UnicodeError) as error:  # UnicodeError: a stream name no text encoding holds (it stopped the monitor)
            self.failures += 1
            if self.shutting_down and isinstance(error, sqlite3.OperationalError):
                self.connection.execute("PRAGMA busy_timeout = 0")
            raise RecordError(f"--record {shown(self.path)}: an utterance was not stored ({one_line(error)}); it is published without a seq") from None
        return numbered(utterance, cursor.lastrowid)

    def hurry(self) -> None:
        """At shutdown: a database still held after one more wait is not waited for again. Each queued utterance
        waited BUSY_TIMEOUT_SECONDS in turn, and what the shutdown's time did not reach was never published."""
        self.shutting_down = True

    def close(self) -> None:
        self.connection.close()


def read_since(
    path: Path, since: int, stream: str | None = None, until: int | None = None, page: int = 500
) -> Generator[list[tuple[int, str]], None, None]:
    """Pages of stored utterances, each its seq and its message as broadcast (JSON text), with ``since < seq``
    (``<= until``, if given), oldest first, on a fresh connection, closed once the last page is read.

    The catch-up advances this from ``asyncio.to_thread``, so each page may be read on another pool
    thread: the connection is used by one thread at a time, but not always the same one.
    """
    # as_uri() percent-encodes the path: a raw "file:{path}" would read '#', '?' and '%' in it as URI syntax.
    connection = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
    try:
        last, highest = since, 2**63 - 1 if until is None else until
        while True:
            if stream is None:
                rows = connection.execute(
                    "SELECT seq, message FROM utterances WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?", (last, highest, page)
                ).fetchall()
            else:
                rows = connection.execute(
                    "SELECT seq, message FROM utterances WHERE stream = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                    (stream, last, highest, page),
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [(seq, with_seq(seq, message)) for seq, message in rows]
    finally:
        connection.close()


def last_stored_seq(path: Path) -> int:
    """The last utterance seq in a --record database; 0 for none, or for one that cannot be read (its catch-ups say so)."""
    try:
        with contextlib.closing(sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)) as connection:
            return int(connection.execute("SELECT COALESCE(MAX(seq), 0) FROM utterances").fetchone()[0])
    except sqlite3.Error:
        return 0


def with_seq(seq: int, text: str) -> str:
    """The stored message text with its ``seq`` first, as it was broadcast."""
    return f'{{"seq":{seq},' + text[1:]
