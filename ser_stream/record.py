"""``--record PATH``: every utterance is written to SQLite before it is broadcast.

A subscriber that was away asks for what it missed with ``?since=SEQ``: every
utterance message carries ``seq``, a number that only grows, across restarts
too, because it is the database's own row id. WAL mode lets catch-up readers
run while the worker writes; each utterance is committed on its own, so a
process killed at any moment has every utterance it broadcast on disk (WAL
with ``synchronous=NORMAL`` survives the death of the process; only a power
cut may lose the last commits). Catch-ups read through a few shared read-only
connections (``CatchUpConnections``), each lent for one page.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import uuid
from collections import deque
from collections.abc import Generator, Iterator
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
# Read-only connections ?since= catch-ups share, each lent for one page: a page that finds them all lent waits its turn.
# A connection of its own per catch-up left a descriptor open for each one running at once until the monitor exited
# (450 at once: 450 more, and ~370 MB more resident): SQLite on Unix keeps a closed connection's descriptor while
# another connection of the process holds a lock on the file, and a WAL writer always does.
CATCH_UP_CONNECTIONS = 4


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


class CatchUpConnections:
    """Read-only connections to a --record database, at most ``size`` open, each lent for one query and given back.

    Lent in the order asked for: one asked for while all are lent waits until one is given back, after any that
    asked before it. Each reads the file now at the path: those opened on a file since deleted or replaced are
    closed, and a new one is opened (or fails) as a connection of its own would. Usable from any thread.
    """

    def __init__(self, path: Path, size: int = CATCH_UP_CONNECTIONS) -> None:
        self.path, self.size = Path(path), size
        self._lock = threading.Lock()
        self._idle: list[tuple[sqlite3.Connection, tuple[int, int] | None]] = []  # each with the file it was opened on
        self._lent = 0  # connections lent, and turns handed to a waiter that has yet to take its connection
        self._waiting: deque[threading.Event] = deque()  # those waiting for a connection, first come first
        self._closed = False

    @property
    def waiting(self) -> int:
        """Queries waiting for a connection: every one is lent."""
        with self._lock:
            return len(self._waiting)

    @contextlib.contextmanager
    def lent(self) -> Iterator[sqlite3.Connection]:
        """A connection for one query (no transaction stays open on it: the writer's checkpoints are not held)."""
        file = file_identity(self.path)
        self._wait_for_a_turn()
        try:
            connection = self._idle_or_new(file)
        except BaseException:
            self._end_turn(None, file)
            raise
        try:
            yield connection
        finally:
            self._end_turn(connection, file)

    def close(self) -> None:
        """Close every connection now idle, and each one lent as it is given back; a query waiting for one fails."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            waiting, self._waiting = self._waiting, deque()
        for connection, _ in idle:
            connection.close()
        for turn in waiting:
            turn.set()

    def _wait_for_a_turn(self) -> None:
        with self._lock:
            self._refuse_if_closed()
            if self._lent < self.size and not self._waiting:
                self._lent += 1
                return
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()  # the one who ends a turn hands it on (_end_turn): no later arrival takes it first
        with self._lock:
            self._refuse_if_closed()

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise sqlite3.ProgrammingError(f"{shown(self.path)}: the monitor is stopping; its catch-up connections are closed")

    def _idle_or_new(self, file: tuple[int, int] | None) -> sqlite3.Connection:
        with self._lock:
            stale = [connection for connection, opened_on in self._idle if opened_on != file]
            fresh = [(connection, opened_on) for connection, opened_on in self._idle if opened_on == file]
            self._idle = fresh[:-1]
            connection = fresh[-1][0] if fresh else None
        for old in stale:  # the file was deleted or replaced since they were opened
            old.close()
        if connection is not None:
            return connection
        # as_uri() percent-encodes the path: a raw "file:{path}" would read '#', '?' and '%' in it as URI syntax.
        return sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False, isolation_level=None)

    def _end_turn(self, connection: sqlite3.Connection | None, file: tuple[int, int] | None) -> None:
        with self._lock:
            if connection is not None and not self._closed:
                self._idle.append((connection, file))
                connection = None
            if self._waiting:
                self._waiting.popleft().set()  # the turn passes on: _lent stays as it is
            else:
                self._lent -= 1
        if connection is not None:
            connection.close()


@contextlib.contextmanager
def shared_or_own(path: Path, connections: CatchUpConnections | None) -> Iterator[CatchUpConnections]:
    """``connections`` (the monitor's, shared), or, without them, one connection of its own, closed at the end."""
    if connections is not None:
        yield connections
        return
    own = CatchUpConnections(path, size=1)
    try:
        yield own
    finally:
        own.close()


def read_since(
    path: Path, since: int, stream: str | None = None, until: int | None = None, page: int = 500,
    connections: CatchUpConnections | None = None,
) -> Generator[list[tuple[int, str]], None, None]:
    """Pages of stored utterances, each its seq and its message as broadcast (JSON text), with ``since < seq``
    (``<= until``, if given), oldest first. Each page is read on a connection of ``connections`` lent for it alone
    (none is held while a page is sent); without them, on one connection of its own, closed after the last page.

    The catch-up advances this from ``asyncio.to_thread``, so each page may be read on another pool
    thread: a connection is used by one thread at a time, but not always the same one.
    """
    with shared_or_own(path, connections) as lender:
        last, highest = since, 2**63 - 1 if until is None else until
        while True:
            with lender.lent() as connection:
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


def last_stored_seq(path: Path, connections: CatchUpConnections | None = None) -> int:
    """The last utterance seq in a --record database; 0 for none, or for one that cannot be read (its catch-ups say so)."""
    try:
        with shared_or_own(path, connections) as lender, lender.lent() as connection:
            return int(connection.execute("SELECT COALESCE(MAX(seq), 0) FROM utterances").fetchone()[0])
    except sqlite3.Error:
        return 0


def with_seq(seq: int, text: str) -> str:
    """The stored message text with its ``seq`` first, as it was broadcast."""
    return f'{{"seq":{seq},' + text[1:]
