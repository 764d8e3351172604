"""A small HTTP server on 127.0.0.1 that answers JSON POSTs by path with prepared functions of the request body,
for the pod scripts that talk to vLLM (the unit tier; the node tier asks the real vLLM). A path without a
function answers 404, as a server without that endpoint does."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

Handlers = dict[str, Callable[[dict[str, Any]], Any]]


@contextmanager
def serve(handlers: Handlers) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(its URL, the requests it got: path, body, Authorization header); handlers may change while it runs."""
    requests: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
            handler = handlers.get(self.path)
            data = json.dumps(handler(body) if handler else {"detail": "Not Found"}).encode()
            self.send_response(200 if handler else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
