"""`rollout deploy` restores a paused deployment in a `finally`, but a SIGTERM (a CI job
cancelled, `timeout`, systemd stopping the unit, an ssh session closed -> SIGHUP) kills Python
without running `finally`. The child `prefect deploy --all` has already set the paused
deployment back to unpaused: the controller is RUNNING, and nothing said "THE KILL SWITCH IS
OFF". (Pausing only the schedule, as `rollout controller pause` does, survives, because
prefect.yaml never writes `active: true`; a deployment paused with Prefect's own pause, which
kill_switch.py counts as switched off, does not.)

Against a real Prefect server started here (private PREFECT_HOME).

    .venv/bin/python tests/review/repro_deploy_sigterm_lifts_the_kill_switch.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())
from tests.review._support import redis_server, verdict

NAME = "rollout-controller/every-10-minutes"


def main() -> int:
    from deployments.stack import start_prefect_server

    home = Path(tempfile.mkdtemp(prefix="review-prefect-"))
    prefect = start_prefect_server(home, ui=False)
    redis = redis_server()
    os.environ.update(PREFECT_API_URL=prefect.url, PREFECT_HOME=str(home), REDIS_URL=redis.url)
    try:
        from prefect.client.orchestration import get_client

        subprocess.run([".venv/bin/rollout", "deploy"], check=True, capture_output=True)
        with get_client(sync_client=True) as client:
            deployment_id = client.read_deployment_by_name(NAME).id
            client.pause_deployment(deployment_id)  # the operator's pause (Prefect UI toggle)
            deploy = subprocess.Popen([".venv/bin/rollout", "deploy"])
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and client.read_deployment(deployment_id).paused:
                time.sleep(0.05)
            deploy.send_signal(signal.SIGTERM)  # before the restore in `finally`
            code = deploy.wait()
            time.sleep(15)  # let the orphaned `prefect deploy` finish
            paused = client.read_deployment(deployment_id).paused
            schedules = [
                (s.slug, s.active) for s in client.read_deployment(deployment_id).schedules
            ]
        return verdict(
            paused,
            f"rollout deploy exit {code} on SIGTERM; the deployment is now paused={paused}, "
            f"schedules {schedules}: the controller runs again, nothing said so",
            "the pause restored on SIGTERM/SIGHUP too (a signal handler that raises, or the "
            "restore done by a process that outlives the signal), else a loud KillSwitchOff",
        )
    finally:
        redis.stop()
        prefect.stop()


if __name__ == "__main__":
    sys.exit(main())
