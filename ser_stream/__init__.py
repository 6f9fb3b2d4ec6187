"""ser-stream: streaming speech emotion recognition (Mittal 2021 CNN, served with onnxruntime)."""

EMOTIONS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
)

__version__ = "0.1.0"
