"""Prefect's ephemeral API for the demo, started before anything heavy is imported.

It is the server a flow call would start on its own (`SubprocessASGIServer`: uvicorn on
`prefect.server.api.server:create_app` with PREFECT__SERVER_EPHEMERAL=1, no UI), launched the
same way but first thing, so its 8-10 s boot overlaps the demo's own imports; importing
Prefect's server module in this process instead would add about 7 s on its own. PREFECT_API_URL
then points this process's client at it. It lives and dies with the demo.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from deployments.servers import free_port, wait_for_http

__all__ = ["EphemeralApi", "start_ephemeral_api"]


@dataclass
class EphemeralApi:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until /api/health answers; RuntimeError with the server's log tail otherwise."""
        healthy = wait_for_http(f"{self.url}/health")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Prefect's API exited with code {self.process.returncode}: {self._tail()}"
                )
            if healthy():
                return
            time.sleep(0.1)
        raise RuntimeError(f"Prefect's API not ready after {timeout:.0f}s: {self._tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def _tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-15:]) or f"(empty log {self.log_path})"


def start_ephemeral_api(output_dir: Path) -> EphemeralApi:
    """Launch the server (not waiting for it) and set PREFECT_API_URL for this process.
    Call after the demo's environment is applied: the server reads PREFECT_HOME from it."""
    port = free_port()
    log_path = output_dir / "prefect-api.log"
    server_env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    argv = [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_env,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops the server itself
        )
    url = f"http://127.0.0.1:{port}/api"
    os.environ["PREFECT_API_URL"] = url
    return EphemeralApi(process, url, log_path)
