"""Command line: argument parsing only; each command builds its pieces from a config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ser_stream import __version__
from ser_stream.errors import SerStreamError
from ser_stream.model import DEFAULT_MODEL


def _classify(args: argparse.Namespace) -> int:
    from ser_stream.classify import classify_file
    from ser_stream.inference import EmotionModel

    model = EmotionModel(args.model, provider=args.provider)
    failures = 0
    for path in args.files:
        result = classify_file(path, model)
        if result.error is not None:
            failures += 1
            print(result.to_json() if args.json else result.to_text(), file=sys.stdout if args.json else sys.stderr, flush=True)
        else:
            print(result.to_json() if args.json else result.to_text(), flush=True)
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ser-stream", description="Streaming speech emotion recognition.")
    parser.add_argument("--version", action="version", version=f"ser-stream {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    classify = commands.add_parser("classify", help="label whole audio files (WAV, FLAC; any rate; mono or stereo)")
    classify.add_argument("files", nargs="+", type=Path, metavar="FILE")
    classify.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX model with its .json metadata beside it")
    classify.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"])
    classify.add_argument("--json", action="store_true", help="one JSON object per file and line")
    classify.set_defaults(run=_classify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except SerStreamError as error:
        print(f"ser-stream: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
