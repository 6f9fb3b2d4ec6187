"""Training, evaluation and export of the emotion CNN (needs the ``train`` extra)."""

import importlib.util
import sys

TRAIN_EXTRA = ("tensorflow", "tf2onnx", "onnx", "matplotlib")

# Run as a program (``python -m training…``: while Python locates the module, sys.argv[0] is "-m"), a tool
# without the train extra says so in one line, not in an ImportError's traceback from a deep import.
if sys.argv[:1] == ["-m"]:
    _missing = [name for name in TRAIN_EXTRA if importlib.util.find_spec(name) is None]
    if _missing:
        print(
            f"python -m training: error: the training tools need the train extra ({', '.join(_missing)} not installed): "
            "pip install -c requirements.lock '.[train]'",
            file=sys.stderr,
        )
        sys.exit(2)
