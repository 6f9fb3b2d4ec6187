"""The RAVDESS folder layout: clips and their labels from the 7-part file names.

    MM-VV-EE-II-SS-RR-AA.ext   modality, vocal channel, emotion, intensity,
                               statement, repetition, actor (each two digits)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ser_stream import EMOTIONS
from ser_stream.errors import DatasetError, SerStreamError, shown

AUDIO_SUFFIXES = (".wav", ".flac")
_FIELDS = ("modality", "vocal channel", "emotion", "intensity", "statement", "repetition", "actor")
_RANGES = {
    "modality": (1, 3),
    "vocal channel": (1, 2),
    "emotion": (1, len(EMOTIONS)),
    "intensity": (1, 2),
    "statement": (1, 2),
    "repetition": (1, 2),
    "actor": (1, 24),
}


@dataclass(frozen=True)
class RavdessClip:
    """One RAVDESS recording and the labels its name encodes."""

    path: Path
    emotion: str
    intensity: int
    statement: int
    repetition: int
    actor: int
    vocal_channel: int

    @property
    def label_index(self) -> int:
        return EMOTIONS.index(self.emotion)


def parse_name(path: str | Path) -> RavdessClip:
    """File name → clip labels; ``DatasetError`` naming the file and the bad part."""
    path = Path(path)
    name = shown(path.name)  # errors stay one line
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        raise DatasetError(f"{name}: not a WAV or FLAC file")
    parts = path.stem.split("-")
    if len(parts) != len(_FIELDS):
        raise DatasetError(f"{name}: expected 7 dash-separated fields, found {len(parts)}")
    values: dict[str, int] = {}
    for field, part in zip(_FIELDS, parts):
        if len(part) != 2 or not (part.isascii() and part.isdigit()):
            raise DatasetError(f"{name}: {field} field {part!r} is not two digits")
        low, high = _RANGES[field]
        value = int(part)
        if not low <= value <= high:
            raise DatasetError(f"{name}: {field} {value:02d} is outside {low:02d}–{high:02d}")
        values[field] = value
    if values["emotion"] == 1 and values["intensity"] == 2:
        raise DatasetError(f"{name}: neutral has no strong intensity in RAVDESS")
    return RavdessClip(
        path=path,
        emotion=EMOTIONS[values["emotion"] - 1],
        intensity=values["intensity"],
        statement=values["statement"],
        repetition=values["repetition"],
        actor=values["actor"],
        vocal_channel=values["vocal channel"],
    )


def named_like_a_clip(path: Path) -> bool:
    """Whether a file's name, whatever its extension, would be a RAVDESS clip's."""
    try:
        parse_name(path.with_name(path.stem + ".wav"))
    except DatasetError:
        return False
    return True


def files_under(root: Path) -> list[Path]:
    """Every path under ``root``, sorted, through folders that are links too (an actor folder linked in was once
    skipped without a word), each real folder once: a link back up the tree is not followed round again."""
    seen: set[str] = set()
    paths: list[Path] = []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        paths += [Path(folder) / name for name in subfolders + names]
    return sorted(paths)


def scan(folder: str | Path) -> tuple[list[RavdessClip], list[str]]:
    """Every parseable speech clip under ``folder`` (sorted; songs are left out) and one problem line per file that is not."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    clips: list[RavdessClip] = []
    problems: list[str] = []
    songs = 0
    first_of: dict[str, Path] = {}  # recording (its name without extension) → the first file of it
    for path in files_under(root):
        if not path.is_file():
            if path.is_symlink() and named_like_a_clip(path):
                problems.append(f"{shown(path)}: a link to nothing ({os.readlink(path)})")
            continue
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            if named_like_a_clip(path):  # a RAVDESS name in another format: say so rather than train without it
                problems.append(f"{shown(path)}: not a WAV or FLAC file; convert it (soundfile reads both)")
            continue
        try:
            clip = parse_name(path)
        except DatasetError as error:  # with its folder: take2.wav in two actors' folders once read as one file twice
            problems.append(f"{shown(path.parent)}{os.sep}{error}")
            continue
        if clip.vocal_channel != 1:
            songs += 1
            continue
        if (first := first_of.setdefault(path.stem, path)) != path:  # counted twice, it could train and test at once
            raise DatasetError(f"{shown(path)}: the same RAVDESS recording as {shown(first)}; keep one of them")
        clips.append(clip)
    if not clips:
        why = [f"{len(problems)} file(s) skipped, e.g. {problems[0]}"] if problems else []
        why += [f"{songs} song clip(s) left out (vocal channel 02)"] if songs else []
        raise DatasetError(f"{root}: no RAVDESS clips found ({'; '.join(why) or 'no WAV or FLAC file named like 03-01-05-01-02-01-12.wav'})")
    return clips, problems


def require_actors(data: Path, clips: list[RavdessClip], actors: Iterable[int]) -> None:
    """``DatasetError`` naming ``data`` and every one of ``actors`` without a clip among ``clips``: a tool once went on without them."""
    missing = sorted(set(actors) - {clip.actor for clip in clips})
    if missing:
        raise DatasetError(f"{shown(data)}: no clips of actor(s) {', '.join(map(str, missing))}")


def clip_problem(path: str | Path, error: SerStreamError) -> str:
    """Why a clip is left out, as one line naming it whether or not the error does."""
    text = str(error)
    return text if text.startswith((str(path), shown(path))) else f"{shown(path)}: {text}"


def skip_clip(path: Path, error: SerStreamError, skipped: list[str]) -> None:
    """Say on stderr that a clip is left out and why; list it in ``skipped`` (once, however often it is met)."""
    problem = clip_problem(path, error)
    print(f"skipped {problem}", file=sys.stderr)
    if problem not in skipped:
        skipped.append(problem)
