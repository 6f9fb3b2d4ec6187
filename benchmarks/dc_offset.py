"""What a DC offset does to the monitor's utterances and labels, and what taking it off changes of speech without one.

Plays RAVDESS clips through the monitor's worker with the model, each as a live stream of its own at its file's
rate in 50 ms blocks: as recorded, at ``GAIN`` (0.8, so that +0.05 does not clip), and with each offset added
(constant; drifting from 0 to 0.05 over the clip; 0.03 swinging by ±0.02 over 20 s and over 4 s), rounded to
16 bits as a file or a sound card delivers it; the first row, an offset of a fraction of a step, is what rounding
the same audio otherwise does on its own. Per offset, against the same clips without it: clips whose utterances
differ in number, utterances whose label differs, whose bounds moved (how many, the most) and the largest change
of a probability. ``--without-blocker``: as the monitor heard them before it took a stream's offset off
(``ser_stream.dcblocker``, 2026-12-02); without it, the clips without an offset are also compared with that. Then,
for the clips without an offset, what the blocker changes of what ``classify`` sends the network (the same windows
of the clip, less its mean or through the blocker at the file's rate): spectrogram values and the clip's
probabilities. Audio time only: no clock, no machine load.

    .venv/bin/python -m benchmarks.dc_offset [--actors 3 5 7 20] [--per-actor 12] [--without-blocker]
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from benchmarks.monitor_e2e import add_clip_arguments, chosen_clips
from ser_stream.audiofile import read_audio
from ser_stream.cli import OneLineParser
from ser_stream.clips import TRIM_MARGIN, without_dc
from ser_stream.dcblocker import DcBlocker
from ser_stream.errors import SerStreamError
from ser_stream.features import SAMPLE_RATE, resample_to_canonical, spectrogram
from ser_stream.inference import EmotionModel
from ser_stream.pipeline import MonitorConfig, Stream, Worker
from ser_stream.sources import BLOCK_SECONDS
from ser_stream.windows import TRIM_FRAME, WindowConfig, cut_windows, frame_energies, trim_bounds

GAIN = 0.8  # the clips' level before an offset is added: RAVDESS's loudest clip peaks at 0.95
Offset = Callable[[NDArray[np.float64]], NDArray[np.float64]]  # times (s) → the offset there
OFFSETS: dict[str, Offset] = {
    "rounding alone: +0.36 of a 16-bit step": lambda t: np.full(t.size, 0.36 / 32768),  # +0.02 rounds as this does
    "+0.02": lambda t: np.full(t.size, 0.02),
    "+0.03": lambda t: np.full(t.size, 0.03),
    "+0.05": lambda t: np.full(t.size, 0.05),
    "-0.05": lambda t: np.full(t.size, -0.05),
    "0 to 0.05 over the clip": lambda t: 0.05 * t / max(t[-1], 1e-9),
    "0.03 ± 0.02, 20 s period": lambda t: 0.03 + 0.02 * np.sin(2 * np.pi * t / 20.0),
    "0.03 ± 0.02, 4 s period": lambda t: 0.03 + 0.02 * np.sin(2 * np.pi * t / 4.0),
}


class LeftIn(DcBlocker):
    """The monitor before it took a stream's offset off: every block as it came."""

    def process(self, block: NDArray[np.float32]) -> NDArray[np.float32]:
        return block


def as_16_bit(audio: NDArray[np.float64]) -> NDArray[np.float32]:
    return (np.clip(np.round(audio * 32768), -32768, 32767) / 32768).astype(np.float32)


def utterances(model: EmotionModel, audio: NDArray[np.float32], rate: int, offset_left_in: bool) -> list[dict[str, Any]]:
    """The utterance messages the monitor's worker publishes for ``audio`` as one live stream."""
    messages: list[dict[str, Any]] = []
    config = MonitorConfig()
    worker = Worker(model, config, lambda message: messages.append(cast(dict[str, Any], message)))
    stream = Stream("clip", rate, config)
    if offset_left_in:
        stream.dc_blocker = LeftIn(rate)
    worker.add_stream(stream)
    block = int(BLOCK_SECONDS * rate)
    for start in range(0, audio.size, block):
        stream.ring.write(audio[start : start + block])
        worker.step()
    stream.finished = True
    worker.run(threading.Event(), until_all_ended=True)
    if worker.crash is not None:
        raise RuntimeError(worker.crash)
    return [message for message in messages if message["type"] == "utterance"]


def compared(without: list[list[dict[str, Any]]], heard: list[list[dict[str, Any]]]) -> str:
    """A table row's figures: ``heard`` (per clip, with an offset) against ``without`` (the same clips without it)."""
    counts = labels = moved = total = 0
    most_moved = most_changed = 0.0
    for clean, shifted in zip(without, heard):
        if len(clean) != len(shifted):
            counts += 1
            continue
        for a, b in zip(clean, shifted):
            total += 1
            labels += a["label"] != b["label"]
            shift = max(abs(a["t_start"] - b["t_start"]), abs(a["t_end"] - b["t_end"]))
            moved += shift > 0
            most_moved = max(most_moved, shift)
            most_changed = max(most_changed, max(abs(a["probabilities"][e] - b["probabilities"][e]) for e in a["probabilities"]))
    return f"{counts} | {labels} of {total} | {moved} ({most_moved:.3f} s) | {most_changed:.3f}"


def classify_inputs(model: EmotionModel, audio: NDArray[np.float32], rate: int) -> tuple[float, float, float]:
    """What the blocker changes of what classify sends the network for a clip: the largest and the mean change of
    a spectrogram value, and the largest of a probability (the same windows, cut where classify trims the clip)."""
    reference = resample_to_canonical(without_dc(audio), rate)
    blocked = resample_to_canonical(DcBlocker(rate).process(audio), rate)
    first, last, _ = trim_bounds(frame_energies(reference, TRIM_FRAME), TRIM_FRAME, reference.size, margin=TRIM_MARGIN)
    pictures = [np.stack([spectrogram(window, SAMPLE_RATE) for window in cut_windows(canonical[first:last], WindowConfig())[0]])
                for canonical in (reference, blocked)]
    change = np.abs(pictures[0] - pictures[1])
    probabilities = [model.predict(picture).mean(axis=0) for picture in pictures]
    return float(change.max()), float(change.mean()), float(np.abs(probabilities[0] - probabilities[1]).max())


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.dc_offset", description=__doc__.splitlines()[0])
    add_clip_arguments(parser, per_actor=12)
    parser.add_argument("--without-blocker", action="store_true", help="leave each stream's offset in, as the monitor did before 2026-12-02")
    args = parser.parse_args(argv)
    try:
        model = EmotionModel(provider="cpu")
        clips = [read_audio(clip.path) for clip in chosen_clips(args.data, args.actors, args.per_actor)]
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    left_in = args.without_blocker
    print(f"{len(clips)} clip{'' if len(clips) == 1 else 's'} of actors {', '.join(map(str, args.actors))}, at {GAIN:g}, 16-bit; "
          f"{'the offset left in' if left_in else 'the offset taken off (DC blocker)'}")
    print()
    without = [utterances(model, as_16_bit(GAIN * audio.astype(np.float64)), rate, left_in) for audio, rate in clips]
    print(f"without an offset: {sum(map(len, without))} utterances")
    if not left_in:  # what the blocker changes of the monitor's utterances where there is no offset to take off
        before = [utterances(model, as_16_bit(GAIN * audio.astype(np.float64)), rate, True) for audio, rate in clips]
        print("against the monitor that left offsets in (clips whose utterances differ in number | labels that differ | "
              f"bounds moved (most) | largest probability change): {compared(before, without)}")
    print()
    print("| offset | clips whose utterances differ in number | labels that differ | bounds moved (most) | largest probability change |")
    print("|---|---|---|---|---|")
    for name, offset in OFFSETS.items():
        heard = [utterances(model, as_16_bit(GAIN * audio.astype(np.float64) + offset(np.arange(audio.size) / rate)), rate, left_in)
                 for audio, rate in clips]
        print(f"| {name} | {compared(without, heard)} |")
    print()
    changes = [classify_inputs(model, audio, rate) for audio, rate in clips]
    print(f"classify's network inputs for the clips as recorded, through the blocker: spectrogram values moved by "
          f"{max(c[0] for c in changes):.3f} at most, {np.mean([c[1] for c in changes]):.5f} on average; "
          f"probabilities by {max(c[2] for c in changes):.4f} at most")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
