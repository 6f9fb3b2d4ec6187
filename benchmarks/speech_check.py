"""How often ``classify`` warns that a RAVDESS clip holds no speech, as it is, quieter and on one channel, and its cost.

Every RAVDESS clip is speech, so each ``no speech heard`` warning here is the
voice check missing it (``vad.SpeechHeard``). The clips are classified as they
are, and every ``--every``-th one again written quieter by each of ``--quieter``
dB (float WAV) and as the left channel of a 16-bit stereo WAV whose right is
silent (the mix halves it). Then sounds that are not speech (``NON_SPEECH``: a
chord, a hum and clicks of 1, 2 and 3 s, noise, room tone, a siren), where
anything but ``no speech heard`` is the check hearing speech that is not there.
The cost is the median time ``classify_file`` takes for a clip as it is.

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


def non_speech(rate: int) -> dict[str, np.ndarray]:
    """Sounds without a voice, by name: each should be ``no speech heard``. A steady sound's onset once was not."""
    rng = np.random.default_rng(0)

    def seconds(length: float) -> np.ndarray:
        return np.arange(int(length * rate)) / rate

    def clicks(length: float) -> np.ndarray:  # a 2 ms burst of noise every 0.15 s
        audio = np.zeros(int(length * rate))
        for start in range(0, audio.size - rate // 500, int(0.15 * rate)):
            audio[start : start + rate // 500] = 0.3 * rng.standard_normal(rate // 500)
        return audio

    sounds: dict[str, np.ndarray] = {}
    for length in (1.0, 2.0, 3.0):
        t = seconds(length)
        sounds[f"chord_{length:g}s"] = 0.025 * np.sum([np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63, 440.0)], axis=0)
        sounds[f"hum_{length:g}s"] = 0.008 * np.sin(2 * np.pi * 50 * t) + 0.003 * np.sin(2 * np.pi * 150 * t)
        sounds[f"clicks_{length:g}s"] = clicks(length)
    t = seconds(5.0)
    sounds["noise_-20dB"] = 0.1 * rng.standard_normal(t.size)
    sounds["room_tone_-50dB"] = 10 ** (-50 / 20) * rng.standard_normal(t.size)
    sounds["siren"] = 0.3 * np.sin(2 * np.pi * np.cumsum(700 + 300 * np.sin(2 * np.pi * 0.5 * t)) / rate)
    return {name: sound.astype(np.float32) for name, sound in sounds.items()}


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
        sounds = non_speech(16000)
        for name, sound in sounds.items():
            soundfile.write(Path(folder) / f"{name}.wav", sound, 16000)
        sets[f"not speech ({len(sounds)})"] = [Path(folder) / f"{name}.wav" for name in sounds]
        for name, paths in sets.items():
            verdicts: Counter[str] = Counter()
            wrong = []  # speech unheard, or sound that is not speech heard as speech
            for path in paths:
                started = time.perf_counter()
                result = classify_file(path, model)
                if name.startswith("as they are"):
                    seconds.append(time.perf_counter() - started)
                said = verdict(result)
                verdicts[said] += 1
                if (said == "no speech heard") != name.startswith("not speech"):
                    wrong.append(path.stem)
            print(f"{name}: " + ", ".join(f"{kind} {verdicts[kind]}" for kind in ("no speech heard", "most windows without speech", "refused")))
            if wrong:
                said = "heard as speech" if name.startswith("not speech") else "no speech heard"
                print(f"  {said}:", ", ".join(wrong[:10]) + (" …" if len(wrong) > 10 else ""))
    print(f"median classify_file of a clip as it is: {1000 * float(np.median(seconds)):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
