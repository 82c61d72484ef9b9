"""A real HTTP server on a loopback port for tests: it records every request and answers with a given function."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[["Request"], tuple[int, Any]]


@dataclass
class Request:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Server:
    """Where the server listens and what it has received."""

    url: str
    requests: list[Request] = field(default_factory=list)


@contextmanager
def serve(answer: Answer) -> Iterator[Server]:
    """Run a loopback HTTP server whose every response is answer(request) -> (status, JSON-able body or None)."""
    received: list[Request] = []

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            request = Request(self.command, self.path, dict(self.headers), self.rfile.read(length))
            received.append(request)
            status, body = answer(request)
            data = b"" if body is None else json.dumps(body).encode()  # json.dumps writes NaN for float("nan")
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(url=f"http://127.0.0.1:{server.server_address[1]}", requests=received)
    finally:
        server.shutdown()
        server.server_close()
