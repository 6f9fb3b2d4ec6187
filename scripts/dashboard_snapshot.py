"""Render the terminal dashboard after the demo recording to docs/figures/dashboard.svg.

Runs the real monitor headless at fast pace, reads its WebSocket messages and
feeds them to the dashboard's state, then saves rich's SVG export.
Run: .venv/bin/python -m scripts.dashboard_snapshot
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from benchmarks.clients import free_port, subscriber_when_up
from ser_stream.dashboard import DashboardState
from ser_stream.model import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent


async def messages(port: int, monitor: subprocess.Popen[bytes]) -> list[dict]:
    async with await subscriber_when_up(port, seconds=30.0, monitor=monitor) as ws:
        return [json.loads(text) async for text in ws]


def snapshot_title() -> str:
    """Names the model the figure shows, so a test can tell when a new model leaves the figure behind."""
    sha256 = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())["sha256"]
    return f"ser-stream demo · model {sha256[:12]}"


def main() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", f"file:{ROOT / 'ser_stream/demo/demo.flac'}",
         "--pace", "fast", "--no-dashboard", "--ws", f"127.0.0.1:{port}", "--await-subscribers", "1"],
        stderr=subprocess.DEVNULL,
    )
    received = asyncio.run(messages(port, process))
    process.wait()
    state = DashboardState(received[0])
    for message in received[1:]:
        if message["type"] != "stream_ended":  # show it as it looked live, just before the recording ended
            state.handle(message)
    console = Console(record=True, width=84, force_terminal=True)
    console.print(state.render())
    out = ROOT / "docs" / "figures" / "dashboard.svg"
    console.save_svg(str(out), title=snapshot_title())
    print(out)


if __name__ == "__main__":
    main()
