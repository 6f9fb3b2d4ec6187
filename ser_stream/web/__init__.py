"""The live web dashboard: one static page, served by the monitor on its WebSocket address."""

from __future__ import annotations

import base64
import hashlib
import re
from email.utils import formatdate
from functools import lru_cache
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

PAGE = Path(__file__).with_name("index.html")
# Put in the page of a monitor run with --token: the page asks for the token before it connects, as a connection
# without one would be refused and counted (refused_token), and --log-status would report every page opened.
TOKEN_REQUIRED = '<meta name="ser-stream-token" content="required">'


def _inline_hashes(html: str, tag: str) -> str:
    """CSP hashes of the page's inline ``<script>``/``<style>`` blocks: nothing else may run."""
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks)


@lru_cache(maxsize=2)
def _page(token_required: bool = False) -> tuple[bytes, str]:
    html = PAGE.read_text(encoding="utf-8")
    if token_required:  # a <meta> tag: no script or style, so the policy's hashes are the same
        html = html.replace('<meta charset="utf-8">\n', f'<meta charset="utf-8">\n{TOKEN_REQUIRED}\n', 1)
    policy = (
        f"default-src 'none'; script-src {_inline_hashes(html, 'script')}; style-src {_inline_hashes(html, 'style')}; "
        "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html.encode("utf-8"), policy


def http_answer(status: HTTPStatus, headers: list[tuple[str, str]], body: bytes = b"") -> Response:
    """A response of the page server's own, with the ``Date`` and ``Connection: close`` websockets' ``respond()`` gives
    the others: the server closes the connection after any answer but an upgrade, and a client not told so sent its next
    request on it (curl: 'Connection died, retrying a fresh connect')."""
    return Response(status.value, status.phrase, Headers([("Date", formatdate(usegmt=True)), ("Connection", "close"), *headers]), body)


def serve_page(connection: ServerConnection, request: Request, token_required: bool = False) -> Response:
    """GET / → the page (``token_required``: it asks for the token before it connects); /favicon.ico → 204 (browsers ask
    for it with every page: a 404 was an error in the console of each); anything else that is not a WebSocket upgrade → 404."""
    path = request.path.split("?", 1)[0]
    if path == "/favicon.ico":  # no icon, and nothing wrong: a day's cache saves a browser asking again at every load
        return http_answer(HTTPStatus.NO_CONTENT, [("Cache-Control", "max-age=86400"), ("X-Content-Type-Options", "nosniff")])
    if path not in ("/", "/index.html"):
        return connection.respond(HTTPStatus.NOT_FOUND, "not found: the page and its WebSocket are at /\n")
    body, policy = _page(token_required)
    headers = [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Content-Security-Policy", policy),
        ("X-Content-Type-Options", "nosniff"),
        ("Cache-Control", "no-store"),
    ]
    return http_answer(HTTPStatus.OK, headers, body)
