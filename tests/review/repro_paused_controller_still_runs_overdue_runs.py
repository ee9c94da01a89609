"""`rollout controller pause` says "no scheduled run starts until `rollout controller resume`",
but Prefect's schedule pause deletes only FUTURE auto-scheduled runs (server/api/deployments.py
update_deployment_schedule: `_delete_scheduled_runs(..., future_only=True)`). Runs already due
(Late because the worker is down or restarting, or inside the worker's prefetch window) stay,
and the next worker poll starts them. The flow's own late-run check lets a run act when it is
up to 2 intervals (20 min) late, so a "paused" controller can still change flags.

Against a real Prefect server (started here with a private PREFECT_HOME, scheduler every 2 s);
the deployment is named like the controller's with a 10 s interval so runs fall due quickly;
no worker, as when the worker is down.

    .venv/bin/python tests/review/repro_paused_controller_still_runs_overdue_runs.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, os.getcwd())
from tests.review._support import redis_server, verdict


def main() -> int:
    from deployments.stack import start_prefect_server

    home = Path(tempfile.mkdtemp(prefix="review-prefect-"))
    fast = {
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS": "2",
    }
    prefect = start_prefect_server(home, ui=False, extra_env=fast)
    redis = redis_server()
    os.environ.update(PREFECT_API_URL=prefect.url, PREFECT_HOME=str(home), REDIS_URL=redis.url)
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import DeploymentScheduleCreate, WorkPoolCreate
        from prefect.client.schemas.schedules import IntervalSchedule

        with get_client(sync_client=True) as client:
            client.create_work_pool(WorkPoolCreate(name="review-pool", type="process"))
            flow_id = client.create_flow_from_name("rollout-controller")
            schedule = IntervalSchedule(interval=timedelta(seconds=10))
            client.create_deployment(
                flow_id=flow_id,
                name="every-10-minutes",
                work_pool_name="review-pool",
                entrypoint="flows/controller.py:rollout_controller",
                schedules=[DeploymentScheduleCreate(schedule=schedule, slug="every-10-minutes")],
            )
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                due = client.get_scheduled_flow_runs_for_work_pool(
                    "review-pool", scheduled_before=datetime.now(UTC)
                )
                if due:
                    break
                time.sleep(2)
        pause = subprocess.run(
            [".venv/bin/rollout", "controller", "pause", "--reason", "incident"],
            capture_output=True,
            text=True,
        )
        print(pause.stdout.strip())
        time.sleep(3)
        with get_client(sync_client=True) as client:
            # exactly what a worker's next poll is handed
            handed = client.get_scheduled_flow_runs_for_work_pool(
                "review-pool", scheduled_before=datetime.now(UTC) + timedelta(seconds=10)
            )
        names = [
            (r.flow_run.name, r.flow_run.state.name if r.flow_run.state else "?") for r in handed
        ]
        return verdict(
            pause.returncode == 0 and not handed,
            f"pause exit {pause.returncode}, then a worker's poll is handed {names}",
            "after a pause that reports success, no run of the controller starts (overdue "
            "runs deleted or cancelled, or the flow refuses to act while the switch is off)",
        )
    finally:
        redis.stop()
        prefect.stop()


if __name__ == "__main__":
    sys.exit(main())
