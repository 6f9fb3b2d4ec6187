"""How the monitor's segmentation hears a stream's first sound, in audio time: speech it starts on, and sound that is not.

Silero VAD started cold on speech scores it low (``vad.SPEECH_CHECK_LEAD_IN_FRAMES``): a call joined mid-sentence,
a microphone opened on someone talking, a file whose speech starts at its first sample, or speech just after more
than a second of digital silence (where ``SileroDetector`` goes back to a stream's start). This plays RAVDESS clips
through the monitor's segmentation (``UtteranceTracker``: Silero with WebRTC's second opinion), wideband in 50 ms
blocks and through G.711 μ-law in 20 ms packets, each clip's stream starting

- ``room tone``: with the clip as recorded, its own room tone first (the control: the usual case);
- ``onset``: at its speech onset (30 dB trim);
- ``+0.2 s``, ``+0.5 s``: that far into its speech;
- ``zeros``: after 2 s of digital silence, then at its speech onset;

each followed by the rest of the clip and 1.5 s of its room tone (looped from its quiet end). Per condition: the
clips with an utterance over their speech (any; over 90 % of it), the speech seconds the utterances cover, their
windows (the label is the mean of them) and utterances outside the speech. Then sound that is not speech, started
on by a stream (at its first sample, and after 2 s of zeros): each clip's own room tone, looped to 3 s, and 5 s of
hum, a chord, clicks, a siren, white and brown noise at -50 to -10 dBFS (``--draws`` of each, from other phases
and noise); how many streams of each publish an utterance. Audio time only: no clock, no machine load.

    .venv/bin/python -m benchmarks.stream_onsets [--actors 3 5 7 20] [--per-actor 25] [--draws 3]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.signal
from numpy.typing import NDArray

from benchmarks.clip_file import GAP_SECONDS
from benchmarks.monitor_e2e import add_clip_arguments, chosen_clips
from benchmarks.utterance_ends import PACKET_SECONDS, Clip, load, through_mulaw, tracked
from ser_stream.cli import OneLineParser, whole_number
from ser_stream.errors import SerStreamError
from ser_stream.features import SAMPLE_RATE
from ser_stream.sources import BLOCK_SECONDS

ZEROS_SECONDS = 2.0  # digital silence before the speech: past ``vad.DIGITAL_SILENCE_RESET_SECONDS``
SOUND_SECONDS = 5.0
WHOLE_SHARE = 0.9  # an utterance "over the speech" covers this much of it
CONDITIONS = ("room tone", "onset", "+0.2 s", "+0.5 s", "zeros")
CHAINS = {"wideband, 50 ms blocks": BLOCK_SECONDS, "G.711 μ-law, 20 ms packets": PACKET_SECONDS}


def condition_stream(clip: Clip, condition: str) -> tuple[NDArray[np.float32], int, int]:
    """The stream one condition plays, and where the speech it holds starts and ends in it (samples)."""
    after = np.resize(clip.tone, int(GAP_SECONDS * SAMPLE_RATE)).astype(np.float32)
    if condition == "room tone":
        return np.concatenate([clip.audio, after]), clip.first, clip.last
    skip = {"onset": 0.0, "zeros": 0.0, "+0.2 s": 0.2, "+0.5 s": 0.5}[condition]
    start = clip.first + int(skip * SAMPLE_RATE)
    lead = np.zeros(int(ZEROS_SECONDS * SAMPLE_RATE) if condition == "zeros" else 0, np.float32)
    return np.concatenate([lead, clip.audio[start:], after]), lead.size, lead.size + clip.last - start


def through(chain: str, audio: NDArray[np.float32]) -> NDArray[np.float32]:
    return audio if chain.startswith("wideband") else through_mulaw(audio)


def utterances(audio: NDArray[np.float32], block_seconds: float) -> list[tuple[int, int, int]]:
    """Every utterance the monitor's segmentation publishes from ``audio`` as one stream: (start, end, windows)."""
    return [(u.start_sample, u.end_sample, u.windows_cut) for u in tracked(audio, block_seconds)]


@dataclass
class Tally:
    clips: int = 0
    heard: int = 0  # an utterance overlaps the speech
    whole: int = 0  # the utterances cover WHOLE_SHARE of it
    speech: float = 0.0  # seconds of speech in the streams
    covered: float = 0.0  # of it, inside an utterance
    windows: int = 0  # of the utterances over the speech
    other: int = 0  # utterances outside the speech

    def add(self, found: list[tuple[int, int, int]], first: int, last: int) -> None:
        over = [(start, end, windows) for start, end, windows in found if start < last and end > first]
        covered = sum(min(end, last) - max(start, first) for start, end, _ in over)  # utterances never share audio
        self.clips += 1
        self.heard += bool(over)
        self.whole += covered >= WHOLE_SHARE * (last - first)
        self.speech += (last - first) / SAMPLE_RATE
        self.covered += covered / SAMPLE_RATE
        self.windows += sum(windows for _, _, windows in over)
        self.other += len(found) - len(over)


def sounds(rng: np.random.Generator) -> dict[str, Callable[[float], NDArray[np.float32]]]:
    """Sound that is not speech, by name: ``SOUND_SECONDS`` of it at an RMS level (dBFS) given."""
    n = int(SOUND_SECONDS * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE + rng.uniform(0.0, 1.0)  # each draw from another phase

    def at(signal: NDArray[np.float64]) -> Callable[[float], NDArray[np.float32]]:
        signal = signal / np.sqrt(np.mean(signal**2))
        return lambda db: (10 ** (db / 20) * signal).astype(np.float32)

    clicks = np.zeros(n)
    for start in range(0, n - 16, int(0.15 * SAMPLE_RATE)):
        clicks[start : start + 16] = rng.standard_normal(16)
    return {
        "hum": at(sum((np.sin(2 * np.pi * 50 * k * t) / k for k in range(1, 10)), np.zeros(n))),
        "chord": at(sum((np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63, 440.0)), np.zeros(n))),
        "clicks": at(clicks),
        "siren": at(np.sin(2 * np.pi * np.cumsum(1000 + 400 * np.sin(2 * np.pi * 0.5 * t)) / SAMPLE_RATE)),
        "white noise": at(rng.standard_normal(n)),
        "brown noise": at(scipy.signal.lfilter([1.0], [1.0, -0.99], rng.standard_normal(n))),
    }


SOUND_LEVELS_DB = (-50.0, -40.0, -30.0, -20.0, -10.0)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.stream_onsets", description=__doc__.splitlines()[0])
    add_clip_arguments(parser, per_actor=25)
    parser.add_argument("--draws", type=whole_number(1), default=3, help="draws of each sound at each level (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        clips = [load(clip.path) for clip in chosen_clips(args.data, args.actors, args.per_actor)]
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(f"{len(clips)} clips of actors {', '.join(map(str, args.actors))}")
    print()
    print("| stream starts | audio | clips with an utterance over their speech: any / 90 % | speech covered (s) | windows | other utterances |")
    print("|---|---|---|---|---|---|")
    for condition in CONDITIONS:
        for chain, block_seconds in CHAINS.items():
            tally = Tally()
            for clip in clips:
                audio, first, last = condition_stream(clip, condition)
                if last - first > 0:
                    tally.add(utterances(through(chain, audio), block_seconds), first, last)
            print(f"| {condition} | {chain} | {tally.heard} / {tally.whole} of {tally.clips} | {tally.covered:.1f} of {tally.speech:.1f} "
                  f"| {tally.windows} | {tally.other} |")
    print()
    print("| sound the stream starts on | audio | streams with an utterance: at its first sample / after 2 s of zeros |")
    print("|---|---|---|")
    zeros = np.zeros(int(ZEROS_SECONDS * SAMPLE_RATE), np.float32)
    cases: dict[str, list[NDArray[np.float32]]] = {
        "its room tone (each clip's, 3 s)": [np.resize(clip.tone, 3 * SAMPLE_RATE).astype(np.float32) for clip in clips]}
    for seed in range(args.draws):
        for name, sound in sounds(np.random.default_rng(seed)).items():
            cases.setdefault(f"{name}, {SOUND_LEVELS_DB[0]:g} to {SOUND_LEVELS_DB[-1]:g} dBFS", []).extend(
                sound(db) for db in SOUND_LEVELS_DB)
    for name, streams in cases.items():
        for chain, block_seconds in CHAINS.items():
            counts = [sum(bool(utterances(through(chain, np.concatenate([lead, audio])), block_seconds)) for audio in streams)
                      for lead in (zeros[:0], zeros)]
            print(f"| {name} | {chain} | {counts[0]} / {counts[1]} of {len(streams)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
