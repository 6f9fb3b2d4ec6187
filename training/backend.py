"""TensorFlow and Keras, imported without the start-up lines a machine without a GPU can do nothing about.

On import TensorFlow writes, straight to file descriptor 2 and before any log
level applies, that oneDNN is on and that no CUDA driver was found; its first
device query then logs ``failed call to cuInit`` as an error. A training
command's own one-line answer came after seven such lines. Here the import's
stderr is held back and written out again without those lines, and where no
NVIDIA driver is installed TensorFlow's C++ log is limited to fatal messages.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")
START_UP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I0000 .*(oneDNN custom operations are on|Could not find cuda drivers on your machine)"
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if NVIDIA_DRIVER.exists() else "3")


def _import_quietly() -> None:
    """Import TensorFlow and Keras with fd 2 captured; pass on every captured line that is not start-up noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines() if not START_UP_NOISE.match(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


if "tensorflow" not in sys.modules:
    _import_quietly()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = ["keras", "tf"]
