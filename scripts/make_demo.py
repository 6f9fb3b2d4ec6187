"""Synthesise the bundled demo recording with espeak-ng (Debian package espeak-ng).

Six sentences in different voices, speeds and pitches, 1.5 s of silence between
them, 16 kHz mono FLAC. The output is our own synthetic speech, free of the
RAVDESS licence. Run: python scripts/make_demo.py ser_stream/demo/demo.flac
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile

SENTENCES = [
    ("en-us", 150, 50, "Hello, this is the emotion monitor demo. Everything is calm and quiet today."),
    ("en-gb", 190, 80, "I can't believe you did that! This is absolutely unacceptable!"),
    ("en-us+f3", 140, 70, "Oh wow, that is wonderful news, I am so happy for you!"),
    ("en-gb+m3", 110, 30, "I miss them so much. Nothing feels the same anymore."),
    ("en-us+f2", 200, 90, "Wait, what was that noise? Is somebody there? Please, help me!"),
    ("en-us", 160, 50, "Kids are talking by the door. Dogs are sitting by the door."),
]
RATE = 16000
GAP_SECONDS = 1.5


def main(out: str) -> None:
    pieces = [np.zeros(int(0.5 * RATE), np.float32)]
    with tempfile.TemporaryDirectory() as folder:
        for index, (voice, speed, pitch, text) in enumerate(SENTENCES):
            wav = Path(folder) / f"{index}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text], check=True)
            audio, rate = soundfile.read(wav, dtype="float32")
            audio = scipy.signal.resample_poly(audio, RATE, rate).astype(np.float32)
            pieces += [0.5 * audio / np.max(np.abs(audio)), np.zeros(int(GAP_SECONDS * RATE), np.float32)]
    soundfile.write(out, np.concatenate(pieces), RATE, subtype="PCM_16")


if __name__ == "__main__":
    main(sys.argv[1])
