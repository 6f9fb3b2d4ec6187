"""Model inputs for every clip, computed once with the runtime's feature code and cached.

Each clip yields its windows at a fine training hop (0.25 s) in several audio
variants (clean, telephone, noisy). Evaluation uses the clean windows the
runtime's default configuration would cut, so scores match ``ser-stream classify``.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import zipfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ser_stream import EMOTIONS
from ser_stream.audiofile import audio_info, read_audio, rounding_floor
from ser_stream.clips import trimmed_clip
from ser_stream.errors import SerStreamError
from ser_stream.features import SAMPLE_RATE, feature_parameters, spectrogram
from ser_stream.windows import (
    TRIM_FRAME_SECONDS,
    TRIM_MARGIN_SECONDS,
    TRIM_THRESHOLD_DB,
    WindowConfig,
    cut_windows,
    window_starts,
)
from training.augment import SPEED_FACTORS, add_noise, change_speed, telephone
from training.config import TRAINING_HOP_SECONDS
from training.ravdess import RavdessClip, clip_problem

VARIANTS = ("clean", "telephone", "noisy", "slower", "faster")  # new ones go last: ids are stored in caches


def random_split(clip_labels: NDArray[np.integer], seed: int) -> dict[str, NDArray[np.int64]]:
    """The paper's protocol: each emotion's clips shuffled, a quarter (rounded) to test, a tenth of the rest to
    validate, the others to train; clip indices per part, sorted. The training command and ``training.score
    --random-split`` draw it alike from the clips' labels and the seed."""
    rng = np.random.default_rng(seed)
    clips = np.arange(len(clip_labels))
    picked: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for label in range(len(EMOTIONS)):
        members = rng.permutation(clips[clip_labels == label])
        n_test = int(round(len(members) * 0.25))
        n_val = int(round((len(members) - n_test) * 0.1))
        picked["test"] += list(members[:n_test])
        picked["validation"] += list(members[n_test : n_test + n_val])
        picked["train"] += list(members[n_test + n_val :])
    return {part: np.sort(np.array(indices, dtype=np.int64)) for part, indices in picked.items()}


@dataclass
class FeatureSet:
    """Spectrogram windows of a list of clips, with what each window belongs to."""

    spectrograms: NDArray[np.float16]  # [n_windows, 260, 270]
    window_clip: NDArray[np.int32]  # clip index of each window
    window_variant: NDArray[np.int8]  # index into VARIANTS
    window_is_eval: NDArray[np.bool_]  # cut by the default (evaluation) configuration
    clip_labels: NDArray[np.int32]
    clip_actors: NDArray[np.int32]
    clip_names: list[str]
    skipped_clips: list[str] = field(default_factory=list)  # one line per clip left out (unreadable, silent, too little sound), naming it

    def windows_of(self, clip_indices: NDArray[np.integer], variants: tuple[str, ...]) -> NDArray[np.int64]:
        variant_ids = [VARIANTS.index(v) for v in variants]
        chosen = np.isin(self.window_clip, clip_indices) & np.isin(self.window_variant, variant_ids)
        return np.flatnonzero(chosen)

    def eval_windows(self, clip_indices: NDArray[np.integer], variant: str = "clean") -> NDArray[np.int64]:
        chosen = (
            np.isin(self.window_clip, clip_indices)
            & (self.window_variant == VARIANTS.index(variant))
            & self.window_is_eval
        )
        return np.flatnonzero(chosen)


ClipSpectrograms = list[tuple[int, bool, NDArray[np.float16]]]


def clip_sound(path: str | Path) -> NDArray[np.float32]:
    """A clip's sound as ``classify`` takes it (its format's rounding noise not sound, silence trimmed), or the
    ``SerStreamError`` by which classify refuses it (unreadable, silent, too little sound). The one place that decides
    which clips training learns from and tests on, and so which clips a random split is drawn from."""
    audio, rate = read_audio(path)
    return trimmed_clip(audio, rate, rounding_floor(audio_info(path)))


def learnable_clips(clips: list[RavdessClip]) -> tuple[list[RavdessClip], list[str]]:
    """The clips ``build_features`` keeps (those ``clip_sound`` takes), in order, and one line naming each it leaves out,
    also said on stderr: a split drawn over ``clips`` unfiltered is not the split training drew."""
    kept: list[RavdessClip] = []
    skipped: list[str] = []
    for clip in clips:
        try:
            clip_sound(clip.path)
        except SerStreamError as error:
            skipped.append(clip_problem(clip.path, error))
            print(f"skipped {skipped[-1]}", file=sys.stderr)
            continue
        kept.append(clip)
    return kept, skipped


def clip_names_sha256(names: Iterable[str]) -> str:
    """A digest of a set of clips by file name (sorted), which training records of its test clips and
    ``training.score --random-split`` holds the clips it would score to."""
    return hashlib.sha256("\n".join(sorted(names)).encode("utf-8", "backslashreplace")).hexdigest()


def _clip_spectrograms_or_problem(task: tuple[int, str, int, WindowConfig, tuple[str, ...]]) -> ClipSpectrograms | str:
    """A clip's window spectrograms, or why it is left out: what ``ser-stream classify`` would refuse, training does not learn from."""
    try:
        return _clip_spectrograms(task)
    except SerStreamError as error:
        return clip_problem(task[1], error)


def _clip_spectrograms(task: tuple[int, str, int, WindowConfig, tuple[str, ...]]) -> ClipSpectrograms:
    """(variant id, cut by the evaluation windowing, spectrogram) of every training window of one clip in each variant."""
    clip_index, path, seed, config, variants = task
    rng = np.random.default_rng([seed, clip_index])
    clean = clip_sound(path)  # a clip classify refuses (silent, a click) is left out
    training_config = WindowConfig(config.window_seconds, TRAINING_HOP_SECONDS)
    eval_starts = {int(s) for s in window_starts(clean.size, config)}
    results = []
    for variant in variants:
        signal = clean
        if variant == "telephone":
            signal = telephone(clean, rng)
        elif variant == "noisy":
            signal = add_noise(clean, rng)
        elif variant in SPEED_FACTORS:
            signal = change_speed(clean, SPEED_FACTORS[variant])
        windows, starts = cut_windows(signal, training_config)
        for window, start in zip(windows, starts):
            is_eval = int(round(start * SAMPLE_RATE)) in eval_starts or starts.size == 1
            results.append((VARIANTS.index(variant), is_eval, spectrogram(window, SAMPLE_RATE).astype(np.float16)))
    return results


def file_stamp(path: Path) -> tuple[int, int]:
    """A file's size and modification time in ns; (-1, -1) if it cannot be read (its features will then fail to compute)."""
    try:
        status = path.stat()
    except OSError:
        return -1, -1
    return status.st_size, status.st_mtime_ns


def cache_key(clips: list[RavdessClip], config: WindowConfig, variants: tuple[str, ...], seed: int) -> str:
    description = {
        "features": feature_parameters(),
        "window": [config.window_seconds, config.hop_seconds, TRAINING_HOP_SECONDS],
        # How clips are trimmed shapes the windows too (since 2026-11-30 with each clip's DC offset removed first).
        "trimming": [TRIM_FRAME_SECONDS, TRIM_THRESHOLD_DB, TRIM_MARGIN_SECONDS, "without DC"],
        # Since 2026-11-30 (seventh session) clips classify refuses (unreadable, silent, too short) are left out.
        "left out": "what classify refuses",
        # Since 2026-12-01 frames at the format's rounding noise are not sound (moves 2 of RAVDESS's 1200 clips' ends).
        "trimming floor": "half the square of the format's step",
        "variants": variants,
        "seed": seed,
        # Each file's size and modification time too: audio replaced under the same name is new audio.
        "clips": [[str(c.path), *file_stamp(c.path)] for c in clips],
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]


def build_features(
    clips: list[RavdessClip],
    config: WindowConfig,
    variants: tuple[str, ...] = VARIANTS,
    seed: int = 0,
    cache_dir: Path | None = None,
    workers: int | None = None,
) -> FeatureSet:
    """Compute (or load from ``cache_dir``) the windows of every clip in every variant."""
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"features-{cache_key(clips, config, variants, seed)}.npz"
        if cache_file.exists():
            try:
                with np.load(cache_file) as data:
                    cached = FeatureSet(
                        spectrograms=data["spectrograms"],
                        window_clip=data["window_clip"],
                        window_variant=data["window_variant"],
                        window_is_eval=data["window_is_eval"],
                        clip_labels=data["clip_labels"],
                        clip_actors=data["clip_actors"],
                        clip_names=[str(n) for n in data["clip_names"]],
                        skipped_clips=[str(n) for n in data["skipped_clips"]],
                    )
                for problem in cached.skipped_clips:  # every run says what it leaves out, not only the first
                    print(f"skipped {problem}", file=sys.stderr)
                return cached
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:  # truncated or foreign: computed afresh below
                print(f"{cache_file}: not a readable feature cache ({type(error).__name__}); computing the features again", file=sys.stderr)
    tasks = [(i, str(clip.path), seed, config, variants) for i, clip in enumerate(clips)]
    workers = workers or max(1, min(len(tasks), os.cpu_count() or 1))
    spectrograms: list[NDArray[np.float16]] = []
    window_clip: list[int] = []
    window_variant: list[int] = []
    window_is_eval: list[bool] = []
    kept: list[RavdessClip] = []
    skipped: list[str] = []
    # Spawned, not forked: a child forked while another thread held a lock (onnxruntime's, a test's server)
    # waited on it for ever, and a CI run hung in the smoke training's feature pass.
    pool = None if workers == 1 else ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        per_clip: Iterable[ClipSpectrograms | str]
        per_clip = map(_clip_spectrograms_or_problem, tasks) if pool is None else pool.map(_clip_spectrograms_or_problem, tasks, chunksize=8)
        for clip, windows in zip(clips, per_clip):
            if isinstance(windows, str):
                print(f"skipped {windows}", file=sys.stderr)
                skipped.append(windows)
                continue
            kept.append(clip)
            for variant_id, is_eval, image in windows:
                spectrograms.append(image)
                window_clip.append(len(kept) - 1)
                window_variant.append(variant_id)
                window_is_eval.append(is_eval)
    finally:  # on an error too (an interrupt, a clip that breaks a worker): the workers stop, the clips not begun are dropped
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if not kept:
        raise SerStreamError(f"none of the {len(clips)} clips can be learned from: {skipped[0]}" + (f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""))
    features = FeatureSet(
        spectrograms=np.stack(spectrograms),
        window_clip=np.asarray(window_clip, dtype=np.int32),
        window_variant=np.asarray(window_variant, dtype=np.int8),
        window_is_eval=np.asarray(window_is_eval, dtype=bool),
        clip_labels=np.asarray([c.label_index for c in kept], dtype=np.int32),
        clip_actors=np.asarray([c.actor for c in kept], dtype=np.int32),
        clip_names=[c.path.name for c in kept],
        skipped_clips=skipped,
    )
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_suffix(".partial.npz")
        arrays: dict[str, Any] = {k: np.asarray(v, dtype=str) if isinstance(v, list) else v for k, v in vars(features).items()}
        np.savez(partial, **arrays)  # the name lists as string arrays
        partial.replace(cache_file)
    return features


def remove_speaker_profiles(features: FeatureSet) -> None:
    """Remove from every window its speaker's mean spectral profile and add back the mean over speakers, in place.

    A profile is the mean, over all of one speaker's windows of one audio
    variant, of each frequency row: mostly the voice and the line, little of
    the emotion, since every speaker says the same sentences in every emotion.
    Held-out speakers get theirs from all their clips, which no single file
    could give the runtime: this measures what knowing the voice is worth. The
    reference added back is the mean over every speaker, held-out ones
    included, so training windows depend on the test clips too (a screen only).
    """
    window_actor = features.clip_actors[features.window_clip]
    for variant in np.unique(features.window_variant):
        of_variant = features.window_variant == variant
        windows_of = {actor: np.flatnonzero(of_variant & (window_actor == actor)) for actor in np.unique(window_actor[of_variant])}
        profiles = {
            actor: np.mean([features.spectrograms[w].mean(axis=1, dtype=np.float32) for w in windows], axis=0)
            for actor, windows in windows_of.items()
        }
        reference = np.mean(list(profiles.values()), axis=0)
        for actor, windows in windows_of.items():
            shift = (reference - profiles[actor]).astype(np.float32)[:, None]
            for w in windows:
                features.spectrograms[w] = np.clip(features.spectrograms[w].astype(np.float32) + shift, 0.0, 1.0)
