"""`rollout notify --webhook URL` keeps the URL's path and query (where a webhook's token sits)
in the block's secrets, but when the receiver fails (a 500, a timeout) Prefect's automation
service logs httpx's error, which carries the rendered URL: the token appears in plain text in
the Prefect server's log, once per attempt.

Against a real Prefect server (private PREFECT_HOME) and a local receiver that answers 500; the
rollback event is emitted as the controller's task emits it.

    .venv/bin/python tests/review/repro_webhook_token_in_prefect_server_log.py
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())
from tests.review._support import eventually, redis_server, verdict

TOKEN = "T0KEN-IN-PATH"
received: list[str] = []


class Failing(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        received.append(self.path)
        self.send_response(500)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def main() -> int:
    from deployments.stack import start_prefect_server

    receiver = http.server.HTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    home = Path(tempfile.mkdtemp(prefix="review-prefect-"))
    prefect = start_prefect_server(home, ui=False)
    redis = redis_server()
    os.environ.update(PREFECT_API_URL=prefect.url, PREFECT_HOME=str(home), REDIS_URL=redis.url)
    try:
        hook = f"http://127.0.0.1:{receiver.server_port}/hooks/{TOKEN}?key=SECRETQ"
        subprocess.run([".venv/bin/rollout", "notify", "--webhook", hook], check=True)
        time.sleep(3)  # automations load
        from prefect.events import emit_event

        emit_event(
            event="rollout.feature.rolled-back",
            resource={"prefect.resource.id": "rollout.feature.google"},
            payload={"old_percent": 50, "new_percent": 10, "reason": "review"},
        )
        eventually(lambda: len(received) > 0, 30)
        time.sleep(5)
        log = prefect.log_path.read_text(errors="replace")
        leaks = [line for line in log.splitlines() if TOKEN in line]
        return verdict(
            not leaks,
            f"receiver got {len(received)} POST(s); the Prefect server log holds the token in "
            f"{len(leaks)} line(s), e.g. {leaks[:1]}",
            "the token never in plain text in a log (the error reported with the origin only)",
        )
    finally:
        redis.stop()
        prefect.stop()
        receiver.shutdown()


if __name__ == "__main__":
    sys.exit(main())
