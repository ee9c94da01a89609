"""How long the kill switch takes as an operator uses it: `rollout controller pause`, `status`
and `resume` as separate processes (Python and Prefect imports included) against a real
`prefect server start` with prefect.yaml deployed, auditing to a real redis-server. Prints
figures, asserts none. Loopback only.

Run: `.venv/bin/python benchmarks/kill_switch.py` (about 30-60 s on 2 cores).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deployments.servers import scoped_environ, start_redis
from deployments.stack import start_prefect_server, stop_process_group

REPO_ROOT = Path(__file__).resolve().parents[1]
ROLLOUT = str(Path(sys.executable).with_name("rollout"))
REPEATS = 3


def timed(env: dict[str, str], *args: str) -> float:
    began = time.perf_counter()
    done = subprocess.run([ROLLOUT, "controller", *args], env=env, capture_output=True, check=False)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"rollout controller {' '.join(args)} exited {done.returncode}: {done}")
    return seconds


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        prefect = start_prefect_server(root / "prefect", ui=False)
        redis_server = start_redis(root / "redis")
        try:
            env = {**os.environ, "PREFECT_API_URL": prefect.url, "REDIS_URL": redis_server.url}
            with scoped_environ({"PREFECT_API_URL": prefect.url}):
                from prefect.settings import PREFECT_API_URL, temporary_settings

                from deployments.deploy import deploy_all

                with temporary_settings({PREFECT_API_URL: prefect.url}):
                    deploy_all(REPO_ROOT)
            for command in ("pause", "status", "resume"):
                runs = [timed(env, command) for _ in range(REPEATS)]
                print(
                    f"rollout controller {command:<6}: best {min(runs):.2f} s, "
                    f"worst {max(runs):.2f} s over {REPEATS} runs (process start included)"
                )
        finally:
            redis_server.stop()
            stop_process_group(prefect.process, signal.SIGTERM)


if __name__ == "__main__":
    main()
