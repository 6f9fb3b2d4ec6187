"""Reading audio files (WAV, FLAC, anything libsndfile knows) as mono float32."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from numpy.typing import NDArray

from ser_stream.errors import AudioInputError, shown
from ser_stream.features import check_sample_rate


def to_mono(samples: NDArray[np.floating]) -> NDArray[np.float32]:
    """Average channels: (frames, channels) or (frames,) → (frames,)."""
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    return np.asarray(samples, dtype=np.float32)


def require_file(path: str | Path) -> None:
    """A missing path, a folder and a pipe or device get different one-line errors; each names the path."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise AudioInputError(f"{shown(path)}: no such file") from None
    except OSError as error:
        raise AudioInputError(f"{shown(path)}: cannot be opened ({error.strerror})") from None
    if stat.S_ISDIR(mode):
        raise AudioInputError(f"{shown(path)}: is a folder, not an audio file")
    if not stat.S_ISREG(mode):
        raise AudioInputError(f"{shown(path)}: not a regular file (a pipe or device); save the audio to a file, or pipe raw PCM to --source stdin")


def file_name(path: str | Path) -> bytes:
    """The path as bytes for libsndfile, so names that are not valid UTF-8 open as they are."""
    return os.fsencode(path)


def read_audio(path: str | Path) -> tuple[NDArray[np.float32], int]:
    """Read a whole file as mono float32 in [-1, 1] with its sample rate.

    Raises ``AudioInputError`` naming the file and the reason for anything
    libsndfile cannot decode, an empty file, or non-finite samples.
    """
    require_file(path)
    try:
        samples, sample_rate = soundfile.read(file_name(path), dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise AudioInputError(f"{shown(path)}: no such file") from None
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise unreadable(path, error) from None
    if samples.shape[0] == 0:
        raise AudioInputError(f"{shown(path)}: contains no audio samples")
    check_sample_rate(int(sample_rate), shown(path))
    mono = to_mono(samples)
    if not np.all(np.isfinite(mono)):
        raise AudioInputError(f"{shown(path)}: contains NaN or infinite samples")
    return mono, int(sample_rate)


def audio_info(path: str | Path) -> Any:
    """``soundfile.info`` with the same one-line errors as ``read_audio``; refuses empty files."""
    require_file(path)
    try:
        info = soundfile.info(file_name(path))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise unreadable(path, error) from None
    if info.frames == 0:
        raise AudioInputError(f"{shown(path)}: contains no audio samples")
    check_sample_rate(int(info.samplerate), shown(path))
    return info


def unreadable(path: str | Path, error: Exception) -> AudioInputError:
    """libsndfile's complaint about a file, cut to the one-line reason."""
    reason = str(error).split("\n")[0]
    if "Error opening" in reason and ":" in reason:
        reason = reason.rsplit(":", 1)[-1].strip()
    return AudioInputError(f"{shown(path)}: not a readable audio file ({reason})")
