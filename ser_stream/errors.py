"""The project's exception types: each carries a one-line message a user can act on; and the bounded memory
that keeps a fault reported (or a refusal counted) once per key for a while, not once per packet."""

from __future__ import annotations

import os
from collections.abc import Hashable


class SerStreamError(Exception):
    """Base of every error the CLI turns into one line and an exit status."""


class AudioInputError(SerStreamError):
    """Audio that cannot be read or turned into a model input."""


class ModelError(SerStreamError):
    """A model file or its metadata that is missing, corrupt or does not match this code."""


class StreamRefused(SerStreamError):
    """A stream the worker will not take: its id is still active, the limit is reached, or the monitor is stopping."""

    def __init__(self, stream_id: str, reason: str) -> None:
        super().__init__(f"stream {stream_id!r} refused: {reason}")
        self.reason = reason


class DatasetError(SerStreamError):
    """A training data folder or file name that does not follow the expected layout."""


def shown(path: object) -> str:
    """A path as it appears in a one-line error: escaped if it holds line breaks or other control characters.

    A name that is not UTF-8 shows its other bytes as ``\\xNN`` (``caf\\xe9.wav``), as ``classify --json`` gives
    it, not as the surrogate escapes Python reads them into (``'caf\\udce9.wav'``)."""
    text = str(path)
    if text.isprintable() and text:
        return text
    undecoded = bytes_as_text(text)
    return undecoded if undecoded.isprintable() and undecoded else ascii(text)  # an empty name shows as ''


def bytes_as_text(name: str) -> str:
    """A file name Python read from bytes that are not UTF-8 (surrogate escapes) with those bytes as ``\\xNN``
    text: valid Unicode, for JSON and messages alike; any other name unchanged."""
    try:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    except UnicodeError:  # a surrogate no file name decodes to
        return name


def host_port(host: str, port: int) -> str:
    """An address as URLs and logs write it: IPv6 in brackets (``[::1]:5004``), so the port reads apart from it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


MAX_PORT = 65535


def port_number(text: str) -> int | None:
    """A port written as ASCII digits, 0 to 65535, or None: ``str.isdigit`` also takes '²', which int() refuses,
    and int() refuses strings of over 4300 digits, each once a traceback instead of the option's one line."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_PORT)):
        return None
    port = int(text)
    return port if port <= MAX_PORT else None


def one_line(error: BaseException) -> str:
    """An exception's message as one line for an error message; its type's name when it has none."""
    text = str(error).strip()
    return shown(text.splitlines()[0]) if text else type(error).__name__


class RecentKeys:
    """Keys noted lately, oldest first, each forgotten ``seconds`` after it was noted, at most ``capacity`` at once.

    What a flood of distinct keys (spoofed senders, retrying calls) can cost is bounded, and a key seen again
    after a while counts as new again: a sender that breaks later is still told, a call refused later still counted.
    """

    def __init__(self, seconds: float, capacity: int) -> None:
        self.seconds, self.capacity = seconds, capacity
        self._noted: dict[Hashable, float] = {}

    def remembers(self, key: Hashable, now: float) -> bool:
        """Whether ``key`` was noted less than ``seconds`` before ``now`` (and forget those noted earlier)."""
        while self._noted:
            oldest, noted_at = next(iter(self._noted.items()))
            if now - noted_at < self.seconds:
                break
            del self._noted[oldest]
        return key in self._noted

    def has_room(self) -> bool:
        return len(self._noted) < self.capacity

    def note(self, key: Hashable, now: float) -> None:
        """Remember ``key`` from ``now`` (renewed if already noted), if there is room."""
        self.forget(key)
        if self.has_room():
            self._noted[key] = now

    def oldest_noted_at(self) -> float | None:
        """When the oldest key still remembered was noted: the first to be forgotten, making room."""
        return next(iter(self._noted.values()), None)

    def noted_at(self, key: Hashable) -> float | None:
        """When ``key`` was noted, if it still is."""
        return self._noted.get(key)

    def forget(self, key: Hashable) -> None:
        self._noted.pop(key, None)
