"""Per-window costs, measured side by side in one run: features and inference.

    .venv/bin/python -m benchmarks.components [--model models/ser_cnn.onnx] [--repeats 50]

- features: our scipy path (``ser_stream.features.spectrogram``) against the
  paper's image path (render the spectrogram with matplotlib, convert to
  grayscale, resize to 270×260);
- inference: onnxruntime at batch 1 and 32 against the same model in Keras
  (``model(x, training=False)`` and ``model.predict``).
Each comparison is timed alternately: every round runs each contender once, so
a noisy machine slows them alike. Prints medians and p95 in ms per window, and
the ratios.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ser_stream.cli import OneLineParser
from ser_stream.errors import SerStreamError, shown
from ser_stream.features import spectrogram
from ser_stream.inference import EmotionModel
from training.timing import alternate_ms

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def paper_image_features(audio: np.ndarray, rate: int) -> np.ndarray:
    """The paper's route: a matplotlib spectrogram image → grayscale → 270×260."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    figure = plt.figure(figsize=(2.7, 2.6), dpi=100)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.specgram(audio, Fs=rate, NFFT=512, noverlap=384)
    axes.axis("off")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    buffer.seek(0)
    image = Image.open(buffer).convert("L").resize((270, 260))
    return np.asarray(image, dtype=np.float32) / 255.0


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.components", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/ser_cnn.onnx"))
    parser.add_argument("--keras", type=Path, default=None, help="the same model as .keras, for the Keras baseline")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    if args.keras is not None and not args.keras.is_file():
        parser.exit(2, f"{parser.prog}: error: --keras {shown(args.keras)}: no such file\n")
    try:
        model = EmotionModel(args.model, provider="cpu")  # before any timing: a bad model is one line, not a late traceback
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    rng = np.random.default_rng(0)
    window_16k = (0.1 * rng.standard_normal(32000)).astype(np.float32)
    window_8k = window_16k[::2].copy()
    results: dict[str, object] = {"cpu_count": os.cpu_count()}
    results.update(alternate_ms({
        "features_scipy_8k_ms": (lambda: spectrogram(window_8k, 8000), 1),
        "features_scipy_16k_ms": (lambda: spectrogram(window_16k, 16000), 1),
        "features_paper_image_ms": (lambda: paper_image_features(window_16k, 16000), 1),
    }, args.repeats))
    batch = np.stack([spectrogram(window_8k, 8000)] * 32)
    batch1: dict[str, tuple[Callable[[], object], int]] = {"onnx_batch1_ms_per_window": (lambda: model.predict(batch[:1]), 1)}
    batch32: dict[str, tuple[Callable[[], object], int]] = {"onnx_batch32_ms_per_window": (lambda: model.predict(batch), 32)}
    if args.keras is not None:
        import keras

        keras_model = keras.models.load_model(args.keras)
        x1, x32 = batch[:1, ..., None], batch[..., None]
        batch1["keras_call_batch1_ms_per_window"] = (lambda: keras_model(x1, training=False), 1)
        batch32["keras_call_batch32_ms_per_window"] = (lambda: keras_model(x32, training=False), 32)
        batch32["keras_predict_batch32_ms_per_window"] = (lambda: keras_model.predict(x32, verbose=0), 32)
    results.update(alternate_ms(batch1, args.repeats))
    results.update(alternate_ms(batch32, max(5, args.repeats // 5)))
    if args.keras is not None:
        results["ratio_keras_call_to_onnx_batch1"] = round(results["keras_call_batch1_ms_per_window"]["median"] / results["onnx_batch1_ms_per_window"]["median"], 2)  # type: ignore[index]
    results["ratio_paper_image_to_scipy"] = round(results["features_paper_image_ms"]["median"] / results["features_scipy_16k_ms"]["median"], 1)  # type: ignore[index]
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
