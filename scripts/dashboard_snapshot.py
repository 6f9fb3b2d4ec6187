"""Render the terminal dashboard after the demo recording to docs/figures/dashboard.svg.

Runs the real monitor headless at fast pace, reads its WebSocket messages and
feeds them to the dashboard's state, then saves rich's SVG export.
Run: .venv/bin/python scripts/dashboard_snapshot.py
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from websockets.asyncio.client import connect

from ser_stream.dashboard import DashboardState

ROOT = Path(__file__).resolve().parent.parent


async def messages(port: int) -> list[dict]:
    for _ in range(300):
        try:
            async with connect(f"ws://127.0.0.1:{port}/") as ws:
                return [json.loads(text) async for text in ws]
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("monitor did not start")


def main() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", f"file:{ROOT / 'ser_stream/demo/demo.flac'}",
         "--pace", "fast", "--no-dashboard", "--ws", f"127.0.0.1:{port}", "--await-subscribers", "1"],
        stderr=subprocess.DEVNULL,
    )
    received = asyncio.run(messages(port))
    process.wait()
    state = DashboardState(received[0])
    for message in received[1:]:
        if message["type"] != "stream_ended":  # show it as it looked live, just before the recording ended
            state.handle(message)
    console = Console(record=True, width=84, force_terminal=True)
    console.print(state.render())
    out = ROOT / "docs" / "figures" / "dashboard.svg"
    console.save_svg(str(out), title="ser-stream demo")
    print(out)


if __name__ == "__main__":
    main()
