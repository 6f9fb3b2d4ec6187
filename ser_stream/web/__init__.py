"""The live web dashboard: one static page, served by the monitor on its WebSocket address."""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

PAGE = Path(__file__).with_name("index.html")


def _inline_hashes(html: str, tag: str) -> str:
    """CSP hashes of the page's inline ``<script>``/``<style>`` blocks: nothing else may run."""
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks)


@lru_cache(maxsize=1)
def _page() -> tuple[bytes, str]:
    html = PAGE.read_text(encoding="utf-8")
    policy = (
        f"default-src 'none'; script-src {_inline_hashes(html, 'script')}; style-src {_inline_hashes(html, 'style')}; "
        "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html.encode("utf-8"), policy


def serve_page(connection: ServerConnection, request: Request) -> Response:
    """GET / → the page; anything else that is not a WebSocket upgrade → 404."""
    path = request.path.split("?", 1)[0]
    if path not in ("/", "/index.html"):
        return connection.respond(HTTPStatus.NOT_FOUND, "not found: the page and its WebSocket are at /\n")
    body, policy = _page()
    headers = Headers(
        [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Content-Security-Policy", policy),
            ("X-Content-Type-Options", "nosniff"),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(HTTPStatus.OK.value, HTTPStatus.OK.phrase, headers, body)
