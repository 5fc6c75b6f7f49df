"""A webhook receiver that takes each request and answers only after 60 s.

The containment benchmark routes every notification to it (``--hanging-receiver``) to
show that a receiver that hangs delays neither evaluation nor containment.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HANG_S = 60.0


@dataclass
class HangingReceiver:
    url: str
    requests: int = 0
    release: threading.Event = field(default_factory=threading.Event)

    def notify_config(self, path: Path) -> Path:
        """A notification config whose only receiver is this one, with no timeout shorter
        than the hang and one attempt, so each delivery truly waits."""
        path.write_text(
            "global:\n"
            "  http_timeout: 2m\n"
            "  retry: {attempts: 1, initial_backoff: 1s, max_backoff: 1s}\n"
            "route:\n"
            "  receiver: hanging\n"
            "  group_by: [alertname, agent_id]\n"
            "  group_wait: 0s\n"
            "receivers:\n"
            f"  - name: hanging\n    webhook_configs: [{{url: '{self.url}'}}]\n"
        )
        return path


@contextmanager
def hanging_receiver() -> Iterator[HangingReceiver]:
    """Serve on a free loopback port until the block ends (pending requests are then
    answered at once)."""
    receiver = HangingReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            receiver.requests += 1
            receiver.release.wait(HANG_S)
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, name="hanging-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
