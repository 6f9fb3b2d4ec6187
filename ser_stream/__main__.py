"""``python -m ser_stream`` and the ``ser-stream`` command: Ctrl-C while the modules load is a quiet exit too."""

from __future__ import annotations


def run() -> int:
    # The imports take a second or so (numpy, scipy, onnxruntime), in which Ctrl-C once gave a 30-line traceback.
    try:
        from ser_stream.cli import main
    except KeyboardInterrupt:
        return 130
    return main()


if __name__ == "__main__":
    raise SystemExit(run())
