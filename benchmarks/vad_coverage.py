"""How much of each RAVDESS clip the monitor's voice detector hears as speech, wideband and by telephone.

The monitor publishes an utterance only where its voice detector finds at least
``min_speech_seconds`` of speech; ``classify`` trims by level instead. This
counts the clips the monitor would pass over, by emotion, intensity and actor,
twice: with Silero VAD alone (frames scored at or above the threshold that
starts speech), and with the monitor's rule, where a frame Silero scores at
least ``voice_floor`` that WebRTC's voice detector calls voice is speech too.
The tracker's hysteresis keeps a few more frames once speech has started, so
this is close, not exact.

    .venv/bin/python -m benchmarks.vad_coverage [--data ../shared/data/ravdess16k] [--actors 1 6] [--voice-floor 0.2]
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ser_stream.audiofile import read_audio
from ser_stream.cli import OneLineParser, score_or_off
from ser_stream.clips import without_dc
from ser_stream.errors import SerStreamError
from ser_stream.features import SAMPLE_RATE, resample_to_canonical
from ser_stream.utterances import UtteranceConfig
from ser_stream.vad import VAD_FRAME_SAMPLES, SileroDetector, WebRtcVoice
from training.augment import telephone
from training.ravdess import scan

INTENSITY = {1: "normal", 2: "strong"}


def speech_seconds(canonical: np.ndarray, config: UtteranceConfig) -> tuple[float, float]:
    """Seconds of 32 ms frames fresh detectors call speech: Silero alone, and with WebRTC's second opinion."""
    silero, webrtc = SileroDetector(), WebRtcVoice()
    frames = canonical[: canonical.size // VAD_FRAME_SAMPLES * VAD_FRAME_SAMPLES].reshape(-1, VAD_FRAME_SAMPLES)
    scores = np.array([silero(frame) for frame in frames])
    voiced = np.array([webrtc(frame) for frame in frames], dtype=bool)
    alone = scores >= config.speech_threshold
    seconded = alone | (voiced & (scores >= (config.voice_floor or config.speech_threshold)))
    return alone.sum() * VAD_FRAME_SAMPLES / SAMPLE_RATE, seconded.sum() * VAD_FRAME_SAMPLES / SAMPLE_RATE


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.vad_coverage", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ravdess16k"))
    parser.add_argument("--actors", type=int, nargs="*", default=None, help="only these actors (default: all)")
    parser.add_argument("--voice-floor", type=score_or_off, default=UtteranceConfig().voice_floor, metavar="SCORE|off",
                        help="the monitor's --voice-floor (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        config = UtteranceConfig(voice_floor=args.voice_floor)
        clips, _ = scan(args.data)
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    clips = [clip for clip in clips if args.actors is None or clip.actor in args.actors]
    rules = {"Silero alone": 0, f"with WebRTC's second opinion from a Silero score of {config.voice_floor} (the monitor's rule)": 1}
    missed: dict[tuple[str, str], list] = {(chain, rule): [] for chain in ("wideband", "telephone") for rule in rules}
    for index, clip in enumerate(clips):
        audio, rate = read_audio(clip.path)
        canonical = resample_to_canonical(without_dc(audio), rate)
        for chain, heard in (("wideband", canonical), ("telephone", telephone(canonical, np.random.default_rng(index)))):
            seconds = speech_seconds(heard, config)
            for rule, which in rules.items():
                if seconds[which] < config.min_speech_seconds:
                    missed[(chain, rule)].append(clip)
    for (chain, rule), passed_over in missed.items():
        print(f"{chain}, {rule}: {len(passed_over)} of {len(clips)} clips have under {config.min_speech_seconds} s of speech"
              + (" (no utterance in the monitor)" if rules[rule] else ""))
        if passed_over:
            kinds = Counter(f"{clip.emotion}/{INTENSITY.get(clip.intensity, clip.intensity)}" for clip in passed_over)
            print("  by emotion/intensity:", ", ".join(f"{kind} {count}" for kind, count in kinds.most_common()))
            print("  by actor:", ", ".join(f"{actor:02d}: {count}" for actor, count in sorted(Counter(c.actor for c in passed_over).items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
