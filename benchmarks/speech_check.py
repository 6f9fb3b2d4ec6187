"""How often ``classify`` warns that a RAVDESS clip holds no speech, as it is, quieter and on one channel, and its cost.

Every RAVDESS clip is speech, so each ``no speech heard`` warning here is the
voice check missing it (``vad.SpeechHeard``). The clips are classified as they
are, and every ``--every``-th one again written quieter by each of ``--quieter``
dB (float WAV) and as the left channel of a 16-bit stereo WAV whose right is
silent (the mix halves it). The cost is the median time ``classify_file`` takes
for a clip as it is.

    .venv/bin/python -m benchmarks.speech_check [--data ../shared/data/ravdess16k] [--every 15] [--quieter 10 20 30]
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile

from ser_stream.classify import FileResult, classify_file
from ser_stream.cli import OneLineParser
from ser_stream.errors import SerStreamError
from ser_stream.inference import EmotionModel
from training.ravdess import scan

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "models" / "ser_cnn.onnx"


def verdict(result: FileResult) -> str:
    """What the voice check said of one result."""
    if result.error is not None:
        return "refused"
    if result.warning and "no speech heard" in result.warning:
        return "no speech heard"
    return "most windows without speech" if result.warning and "hold no speech" in result.warning else "heard"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.speech_check", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ravdess16k"))
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--every", type=int, default=15, help="every how many clips is also written quieter and one-sided")
    parser.add_argument("--quieter", type=float, nargs="*", default=[10.0, 20.0, 30.0], metavar="DB")
    args = parser.parse_args(argv)
    try:
        clips, _ = scan(args.data)
        model = EmotionModel(args.model, provider="cpu")
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    seconds: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        sets: dict[str, list[Path]] = {f"as they are ({len(clips)})": [clip.path for clip in clips]}
        sampled = clips[:: args.every]
        for clip in sampled:
            audio, rate = soundfile.read(clip.path, dtype="float32")
            for db in args.quieter:
                path = Path(folder) / f"{clip.path.stem}_{db:g}dB.wav"
                soundfile.write(path, audio * np.float32(10 ** (-db / 20)), rate, subtype="FLOAT")
                sets.setdefault(f"{db:g} dB quieter ({len(sampled)})", []).append(path)
            path = Path(folder) / f"{clip.path.stem}_left.wav"
            soundfile.write(path, np.stack([audio, np.zeros_like(audio)], axis=1), rate, subtype="PCM_16")
            sets.setdefault(f"on one channel of a stereo file ({len(sampled)})", []).append(path)
        for name, paths in sets.items():
            verdicts: Counter[str] = Counter()
            unheard = []
            for path in paths:
                started = time.perf_counter()
                result = classify_file(path, model)
                if name.startswith("as they are"):
                    seconds.append(time.perf_counter() - started)
                verdicts[verdict(result)] += 1
                if verdict(result) == "no speech heard":
                    unheard.append(path.stem)
            print(f"{name}: " + ", ".join(f"{kind} {verdicts[kind]}" for kind in ("no speech heard", "most windows without speech", "refused")))
            if unheard:
                print("  no speech heard:", ", ".join(unheard[:10]) + (" …" if len(unheard) > 10 else ""))
    print(f"median classify_file of a clip as it is: {1000 * float(np.median(seconds)):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
