"""Where the monitor ends utterances, in audio time: what the voice detector's hold-over costs in latency.

Silero's recurrent state keeps calling frames speech for a while after the
voice stops; the monitor counts its silence from the last speech within
``hold_db`` of the utterance's peak instead (``UtteranceConfig``). This plays
clips of held-out actors untrimmed, each followed by its own room tone
(1.5 s, looped from the clip's quiet end), so the silences are a real room's,
not digital zeros, through the monitor's segmentation (Silero VAD, 8 kHz),
wideband in 50 ms blocks as the file source delivers it and through G.711
μ-law in 20 ms packets, once for each ``--hold-db`` and ``--voice-floor`` (same
audio, side by side; hold ``inf``: every frame the VAD calls speech holds, the
rule before 2026-11-30; floor ``off``: Silero alone, without WebRTC's second
opinion, the rule before 2026-12-01).
Reported per run: clips whose speech end (30 dB trim) has an utterance ending
within 0.3 s, missing or twice; other utterances; and the close lag, the audio
time from that end plus ``--min-silence`` to the block that closed the
utterance: the part of the latency the segmentation decides (the worker's
time and delivery come on top). Audio time only: no clock, no machine load.

    .venv/bin/python -m benchmarks.utterance_ends [--actors 3 5 7 20] [--per-actor 25] [--hold-db inf 30 35 40] [--voice-floor off 0.1]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from benchmarks.clip_file import GAP_SECONDS
from benchmarks.monitor_e2e import add_clip_arguments, chosen_clips, match_clip_ends
from ser_stream.audiofile import read_audio
from ser_stream.cli import OneLineParser, score_or_off
from ser_stream.clips import without_dc
from ser_stream.errors import SerStreamError
from ser_stream.features import SAMPLE_RATE, resample_to_canonical
from ser_stream.g711 import mulaw_decode, mulaw_encode
from ser_stream.messages import latency_summary
from ser_stream.sources import BLOCK_SECONDS
from ser_stream.utterances import Utterance, UtteranceConfig, UtteranceTracker
from ser_stream.windows import TRIM_FRAME_SECONDS, WindowConfig, frame_energies, trim_bounds

PACKET_SECONDS = 0.02  # an RTP packet's audio


@dataclass(frozen=True)
class Clip:
    """A clip at the canonical rate, where its speech lies (samples), and its room tone."""

    audio: NDArray[np.float32]
    first: int
    last: int
    tone: NDArray[np.float32]


def load(clip_path: Path) -> Clip:
    """A RAVDESS clip as these benchmarks hear it: at the canonical rate, less its DC offset, trimmed at 30 dB; its room
    tone is what follows the speech (or, if under a frame does, what precedes it), a frame of zeros where neither."""
    recorded, rate = read_audio(clip_path)
    audio = resample_to_canonical(without_dc(recorded), rate)
    frame = int(TRIM_FRAME_SECONDS * SAMPLE_RATE)
    first, last, _ = trim_bounds(frame_energies(audio, frame), frame, audio.size, 30.0, margin=0)
    tone = audio[last:] if audio.size - last >= frame else audio[:first]
    return Clip(audio, first, last, tone if tone.size else np.zeros(frame, np.float32))


def room_tone_file(data: Path, actors: list[int], per_actor: int) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Canonical-rate audio of the clips, each whole and then its room tone; where each clip's speech ends (s)."""
    pieces, ends, t = [], [], 0
    for chosen in chosen_clips(data, actors, per_actor):
        clip = load(chosen.path)
        gap = np.resize(clip.tone, int(GAP_SECONDS * SAMPLE_RATE)).astype(np.float32)
        ends.append((t + clip.last) / SAMPLE_RATE)
        pieces += [clip.audio, gap]
        t += clip.audio.size + gap.size
    return np.concatenate(pieces), np.array(ends)


def tracked(audio: NDArray[np.float32], block_seconds: float, config: UtteranceConfig | None = None) -> list[Utterance]:
    """Every utterance the monitor's segmentation ends in ``audio`` as one stream fed in blocks, in order; each closed
    at the audio time of the block that closed it (``closed_at``)."""
    tracker = UtteranceTracker("s", WindowConfig(), config or UtteranceConfig())
    block = int(block_seconds * SAMPLE_RATE)
    for start in range(0, audio.size, block):
        tracker.feed(audio[start : start + block], arrival=min(start + block, audio.size) / SAMPLE_RATE)
    tracker.finish(arrival=audio.size / SAMPLE_RATE)
    return sorted(tracker.waiting.values(), key=lambda u: (u.start_sample, u.end_sample))


def segment(audio: NDArray[np.float32], block_seconds: float, config: UtteranceConfig) -> list[tuple[float, float]]:
    """Every utterance the monitor's segmentation ends in ``audio``: (its end, the audio time of the block that closed it)."""
    return sorted((u.end_sample / SAMPLE_RATE, u.closed_at) for u in tracked(audio, block_seconds, config))


def through_mulaw(audio: NDArray[np.float32]) -> NDArray[np.float32]:
    """``audio`` as a G.711 μ-law call carries it."""
    return mulaw_decode(mulaw_encode(audio)).astype(np.float32)


def hold_db(text: str) -> float:
    """argparse type: decibels above 0, or inf."""
    value = float(text)
    if not value > 0:  # nan too
        raise argparse.ArgumentTypeError(f"{text} is not a level above 0 dB (or inf)")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.utterance_ends", description=__doc__.splitlines()[0])
    add_clip_arguments(parser, per_actor=25)
    parser.add_argument("--hold-db", type=hold_db, nargs="+", default=[math.inf, UtteranceConfig().hold_db])
    parser.add_argument("--voice-floor", type=score_or_off, nargs="+", default=[UtteranceConfig().voice_floor])
    args = parser.parse_args(argv)
    try:
        configs = [(level, floor, UtteranceConfig(hold_db=level, voice_floor=floor)) for level in args.hold_db for floor in args.voice_floor]
        speech, ends = room_tone_file(args.data, args.actors, args.per_actor)
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    chains = {"wideband, 50 ms blocks": (speech, BLOCK_SECONDS),
              "G.711 μ-law, 20 ms packets": (through_mulaw(speech), PACKET_SECONDS)}
    print(f"{ends.size} clips of actors {', '.join(map(str, args.actors))}, {speech.size / SAMPLE_RATE:.1f} s, each followed by its room tone")
    print()
    print("| hold_db | voice floor | audio | clip ends reported once / missing / twice | other utterances | close lag median / p95 (ms of audio) |")
    print("|---|---|---|---|---|---|")
    for level, floor, config in configs:
        for chain, (audio, block_seconds) in chains.items():
            found = match_clip_ends(ends, ends, segment(audio, block_seconds, config), zero=0.0)
            lag = latency_summary([ms for ms in found["latencies_ms"] if np.isfinite(ms)])
            once = ends.size - found["missing"] - found["duplicated"]
            print(f"| {level:g} | {'off' if floor is None else f'{floor:g}'} | {chain} | {once} / {found['missing']} / "
                  f"{found['duplicated']} | {found['other_utterances']} | {lag['median']:.0f} / {lag['p95']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
