"""FAILING REPRO (review 9, defect R9): a Markdown audit log that cannot be written turns a
run that changed flags into "Failed: IsADirectoryError", with no decisions shown.

`write_audit` (the human-readable copy; the Redis stream entry is already written) runs after
`apply_flag` and is not guarded, so when ROLLOUT_AUDIT_LOG points at a directory, a full disk
or a read-only mount, `rollout run --live` prints a traceback and "run Failed: Flow run
encountered an exception: IsADirectoryError", exit 1, no table - although f1 was rolled back
100 -> 10 and f2 promoted 10 -> 50. The on-call sees a failed run that "did nothing", the
failure notification fires without the decisions, and the next pass repeats it. Telemetry was
already pushed as status ok. Wanted: like the Pushgateway, a warning on a run that reports
what it applied.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

from deployments.servers import RunningServer

ROLLOUT = Path(sys.executable).parent / "rollout"
CONFIG = """
features:
  f1:
    slos: [{name: error_rate, ratio: {errors: 'vector(400)', total: 'vector(2000)'}, max: 0.01}]
  f2:
    slos: [{name: error_rate, ratio: {errors: 'vector(0)', total: 'vector(2000)'}, max: 0.01}]
"""


def test_a_run_that_applied_changes_reports_them_when_the_markdown_log_fails(
    redis_url: str, prometheus_factory, tmp_path: Path
) -> None:
    prometheus: RunningServer = prometheus_factory()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for feature, percent in (("f1", "100"), ("f2", "10")):
        client.mset(
            {
                f"flags:{feature}:enabled": "true",
                f"flags:{feature}:internal_only": "false",
                f"flags:{feature}:rollout_percent": percent,
                f"flags:{feature}:paused": "false",
            }
        )
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG)
    log_dir = tmp_path / "log-is-a-directory"
    log_dir.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "REDIS_URL": redis_url,
        "PROMETHEUS_BASE_URL": prometheus.url,
        "ROLLOUT_AUDIT_LOG": str(log_dir),
        "COLUMNS": "200",
    }
    done = subprocess.run(
        [str(ROLLOUT), "run", "--live", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert client.mget("flags:f1:rollout_percent", "flags:f2:rollout_percent") == ["10", "50"]
    # observed: exit 1, "run Failed: Flow run encountered an exception: IsADirectoryError"
    assert "IsADirectoryError" not in done.stdout + done.stderr, done.stdout[-600:]
    assert "100% -> 10%" in done.stdout or "rollback" in done.stdout, done.stdout[-600:]
