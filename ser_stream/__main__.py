"""``python -m ser_stream`` and the ``ser-stream`` command: Ctrl-C while the modules load is a quiet exit too."""

from __future__ import annotations

import os
import signal


def run() -> int:
    # The imports take a second or so (numpy, scipy, onnxruntime), in which Ctrl-C once gave a 30-line traceback;
    # caught as KeyboardInterrupt it still could: inside numpy's C import it surfaces as an ImportError
    # ("PyCapsule_Import could not import module datetime"). While they load there is nothing to clean up.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored (nohup, &)
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    from ser_stream.cli import main

    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return main()


if __name__ == "__main__":
    raise SystemExit(run())
