"""The project's exception types: each carries a one-line message a user can act on."""


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
    """A path as it appears in a one-line error: escaped if it holds line breaks or other control characters."""
    text = str(path)
    return text if text.isprintable() and text else ascii(text)  # an empty name shows as ''
