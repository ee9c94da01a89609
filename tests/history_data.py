"""A generated Prometheus history for backtests: a quiet week, then a known incident.

The Gmail adapter's counters (requests, errors, the latency histogram, OAuth refresh failures)
as OpenMetrics, backfilled into a real Prometheus with `promtool tsdb create-blocks-from
openmetrics`. Healthy error ratios wander between 0.2% and 0.8% hour by hour (noise a tight
threshold mistakes for a breach); the incident runs the error ratio at 8% for two hours.
"""

from __future__ import annotations

import math
import random
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from deployments.servers import require_binary

__all__ = ["CONFIG", "History", "backfill", "history_config", "openmetrics"]

LABELS = 'provider="google",action="gmail.send"'
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0)
# cumulative share of requests at or below each bucket bound when healthy
HEALTHY_SHARES = (0.3, 0.6, 0.97, 0.995, 1.0)


@dataclass(frozen=True)
class History:
    """What the generated history holds, so tests know where the incident is."""

    start: datetime
    days: int
    sample_seconds: int
    incident_start: datetime
    incident_end: datetime
    quiet_end: datetime  # the quiet week is start .. quiet_end

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)


def default_history(days: int = 9, sample_seconds: int = 120) -> History:
    start = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
    incident = start + timedelta(days=8, hours=12)
    return History(
        start=start,
        days=days,
        sample_seconds=sample_seconds,
        incident_start=incident,
        incident_end=incident + timedelta(hours=2),
        quiet_end=start + timedelta(days=7),
    )


def openmetrics(history: History, seed: int = 14) -> str:
    """The whole history as OpenMetrics text, every family's samples in time order."""
    rng = random.Random(seed)
    requests: list[float] = []
    errors: list[float] = []
    buckets: list[list[float]] = [[] for _ in BUCKETS]
    latency_sum: list[float] = []
    oauth: list[float] = []
    total = error_total = sum_total = oauth_total = 0.0
    bucket_totals = [0.0] * len(BUCKETS)
    hourly_ratio = 0.004
    times = []
    steps = history.days * 86400 // history.sample_seconds
    for index in range(steps + 1):
        at = history.start + timedelta(seconds=index * history.sample_seconds)
        times.append(int(at.timestamp()))
        if at.minute == 0 and at.second < history.sample_seconds:
            hourly_ratio = rng.uniform(0.002, 0.008)
        minutes = history.sample_seconds / 60
        daily = 1 + 0.4 * math.sin(2 * math.pi * (at.hour * 60 + at.minute) / 1440)
        count = max(0, round(rng.gauss(100 * daily * minutes, 10)))
        ratio = 0.08 if history.incident_start <= at < history.incident_end else hourly_ratio
        failed = sum(rng.random() < ratio for _ in range(count))
        total += count
        error_total += failed
        for position, share in enumerate(HEALTHY_SHARES):
            bucket_totals[position] += round(count * share)
            buckets[position].append(bucket_totals[position])
        sum_total += count * 0.12
        oauth_total += sum(rng.random() < 0.05 for _ in range(round(minutes)))
        requests.append(total)
        errors.append(error_total)
        latency_sum.append(sum_total)
        oauth.append(oauth_total)
    lines = ["# TYPE action_exec counter"]
    lines += [
        f"action_exec_total{{{LABELS}}} {v:g} {t}" for t, v in zip(times, requests, strict=True)
    ]
    lines += ["# TYPE action_error counter"]
    lines += [
        f"action_error_total{{{LABELS}}} {v:g} {t}" for t, v in zip(times, errors, strict=True)
    ]
    lines += ["# TYPE action_latency_seconds histogram"]
    for bound, values in zip(BUCKETS, buckets, strict=True):
        le = f'le="{bound:g}"'
        lines += [
            f"action_latency_seconds_bucket{{{LABELS},{le}}} {v:g} {t}"
            for t, v in zip(times, values, strict=True)
        ]
    lines += [
        f'action_latency_seconds_bucket{{{LABELS},le="+Inf"}} {v:g} {t}'
        for t, v in zip(times, requests, strict=True)
    ]
    lines += [
        f"action_latency_seconds_count{{{LABELS}}} {v:g} {t}"
        for t, v in zip(times, requests, strict=True)
    ]
    lines += [
        f"action_latency_seconds_sum{{{LABELS}}} {v:g} {t}"
        for t, v in zip(times, latency_sum, strict=True)
    ]
    lines += ["# TYPE oauth_events counter"]
    lines += [
        f'oauth_events_total{{provider="google",event="refresh_failed"}} {v:g} {t}'
        for t, v in zip(times, oauth, strict=True)
    ]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def backfill(history: History, data_dir: Path, seed: int = 14) -> Path:
    """Write the history into `data_dir/tsdb` (where start_prometheus keeps its storage)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    source = data_dir / "history.om"
    source.write_text(openmetrics(history, seed), encoding="utf-8")
    tsdb = data_dir / "tsdb"
    subprocess.run(
        [
            require_binary("promtool"),
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            str(source),
            str(tsdb),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return tsdb


def history_config(error_max: float = 0.002) -> str:
    """The Gmail feature as rollouts.yaml, with a tight error-ratio max that the history's
    healthy noise breaches now and then."""
    return f"""
defaults:
  ladder: [0, 10, 50, 100]
  safe_percent: 10
  dwell: 15m
  cooldown: 1h
features:
  google:
    slos:
      - name: error_rate
        ratio:
          errors: sum(increase(action_error_total{{{LABELS}}}[10m]))
          total: sum(increase(action_exec_total{{{LABELS}}}[10m]))
        max: {error_max}
        min_samples: 200
      - name: latency_p95
        query: >-
          histogram_quantile(0.95,
          sum(rate(action_latency_seconds_bucket{{{LABELS}}}[10m])) by (le))
        max: 0.5
      - name: oauth_refresh_failures
        kind: count
        query: sum(increase(oauth_events_total{{provider="google",event="refresh_failed"}}[15m]))
        max: 5
"""


CONFIG = history_config()
