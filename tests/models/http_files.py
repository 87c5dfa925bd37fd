"""A real HTTP server on 127.0.0.1 serving bytes from memory, with HTTP Range, and faults on demand:
a response cut after N bytes (the connection closes mid-body), or Range ignored (200 each time)."""

from __future__ import annotations

import http.server
import re
import threading
from dataclasses import dataclass, field


@dataclass
class Files:
    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: list[int] = field(default_factory=list)  # next responses: send only this many body bytes, then close
    ignore_range: bool = False
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(state: Files):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def do_GET(self):
            rng = self.headers.get("Range")
            with state.lock:
                state.requests.append((self.path, rng))
                cut = state.cut_after.pop(0) if state.cut_after else None
            body = state.files.get(self.path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            m = re.fullmatch(r"bytes=(\d+)-", rng or "")
            start = int(m.group(1)) if m and not state.ignore_range else 0
            if start >= len(body) and m and not state.ignore_range:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            part = body[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            if cut is not None:
                self.wfile.write(part[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(part)

    return Handler


class FileServer:
    def __init__(self, state: Files | None = None):
        self.state = state or Files()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
