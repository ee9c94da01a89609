"""`rollout backtest --step 1s` over 30 days is not refused: it sends hundreds of range
requests and then replays 2.6 million ticks in memory.

The issue promises a bounded number of range requests (at most 30 for a month) and the brief
names this boundary (the 11,000-points-per-series limit). history.chunks cuts the range into
10,000-point pieces whatever their number (259 per distinct query for 30 days at 1s), and
the replay then builds a Tick per second of the month (one 6-hour run at 1s already takes
~190 MB and 4 s of CPU; 30 days is 120x that). Nothing checks the tick count up front.

Observed: no refusal; the command is still running after the test's limit, with far more than
30 query_range requests counted by Prometheus itself. Expected: exit 2 before any request,
naming the tick count and the fix (a coarser --step or a shorter range).
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import requests

from tests.review._support import iso, openmetrics_counters, prometheus_with

CONFIG = """
features:
  google:
    slos:
      - name: error_rate
        ratio:
          errors: sum(increase(app_errors_total[10m]))
          total: sum(increase(app_requests_total[10m]))
        max: 0.01
        min_samples: 200
"""


def range_requests(url: str) -> int:
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    pattern = r'prometheus_http_requests_total\{code="\d+",handler="/api/v1/query_range"\} (\d+)'
    return sum(int(n) for n in re.findall(pattern, metrics))


def test_a_one_second_step_over_thirty_days_is_refused_before_reading(tmp_path: Path) -> None:
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 31, tzinfo=UTC)
    times = list(range(int(start.timestamp()), int(start.timestamp()) + 3600, 60))
    history = openmetrics_counters(
        {"app_requests": {'job="app"': lambda t: float(t % 100000)}}, times
    )
    rollout = str(Path(sys.executable).with_name("rollout"))
    with prometheus_with(history) as prometheus:
        command = [
            rollout, "backtest", "google", "--start", iso(start), "--end", iso(end),
            "--step", "1s", "--config", str(config), "--json",
        ]  # fmt: skip
        env = {"PROMETHEUS_BASE_URL": prometheus.url, "PATH": "/usr/bin:/bin"}
        try:
            finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=45)
            code, stderr = finished.returncode, finished.stderr
        except subprocess.TimeoutExpired:
            code, stderr = None, "still running after 45 s"
        sent = range_requests(prometheus.url)

    assert (code, sent) == (2, 0), f"exit {code}, {sent} query_range requests; {stderr[-300:]}"
    assert "--step" in stderr
