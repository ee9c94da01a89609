"""Backtest, tune and explain against the targets of issue 14. Prints figures, asserts none.

1. 30 days at a 10-minute step, one feature with 3 SLOs, against a real Prometheus holding a
   backfilled history (promtool): range requests sent, query time, replay time (queries
   excluded), and tune on the same data.
2. 1,000 features over 7 days (a generated series, 3 SLOs each): the replay's wall time and
   CPU time (this process and its workers, user + system), and the number of workers.
3. explain over a generated 1,000-tick history: the share of decisions it reproduces.

Run: `.venv/bin/python benchmarks/backtest.py [--workers N]` (about a minute on 2 cores; the
default is one worker per core, 1 replays in this process alone). Loopback only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployments.servers import start_prometheus
from rollout_core.backtest import backtest
from rollout_core.config import FeatureSpec, parse_config
from rollout_core.decision_inputs import DecisionInputs
from rollout_core.explain import explain_inputs
from rollout_core.history import RangeReader
from rollout_core.replay import ReplaySource
from rollout_core.tune import suggest
from tests.history_data import CONFIG, backfill, default_history, history_config

STEP = timedelta(minutes=10)


def thirty_days() -> None:
    history = default_history(days=30, sample_seconds=300)
    spec = parse_config(CONFIG).feature("google")
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as scratch:
        started = time.perf_counter()
        backfill(history, Path(scratch))
        filled = time.perf_counter() - started
        server = start_prometheus(Path(scratch), extra_args=["--storage.tsdb.retention.time=3650d"])
        try:
            reader = RangeReader(server.url)
            started = time.perf_counter()
            frame = reader.read([spec], history.start, history.end, STEP)
            queried = time.perf_counter() - started
        finally:
            server.stop()
    started = time.perf_counter()
    result = backtest([spec], ReplaySource(frame), history.start, history.end, STEP)["google"]
    replayed = time.perf_counter() - started
    ticks = len(result.ticks)
    started = time.perf_counter()
    suggest(spec, frame, 0.005, STEP.total_seconds(), ticks)
    tuned = time.perf_counter() - started
    s = result.summary
    print("1. 30 days at 10m, 1 feature x 3 SLOs, real Prometheus (backfilled)")
    print(f"   backfill (promtool, 5-minute samples): {filled:.1f} s")
    print(f"   range requests: {reader.requests_sent} (target <= 30); query time {queried:.2f} s")
    print(f"   replay of {ticks} ticks, queries excluded: {replayed:.3f} s (target < 2 s)")
    print(f"   tune on the same readings: {tuned:.3f} s")
    print(
        f"   summary: {s.promotions} promotions, {s.rollbacks} rollbacks, "
        f"{sum(s.holds.values())} holds, {s.no_data_ticks} ticks with no data"
    )


def thousand_features(workers: int) -> None:
    days, features = 7, 1000
    start = datetime(2026, 1, 5, tzinfo=UTC)
    ticks = days * 144 + 1
    rng = np.random.default_rng(7)
    times = pd.date_range(start, periods=ticks, freq="10min", tz="UTC")
    names = [f"f{n:04d}" for n in range(features)]
    rows = features * ticks
    frame = pd.concat(
        [
            pd.DataFrame(
                {
                    "time": np.tile(times, features),
                    "feature": np.repeat(names, ticks),
                    "slo": slo,
                    "value": values,
                    "samples": samples,
                }
            )
            for slo, values, samples in (
                ("error_rate", rng.uniform(0.001, 0.006, rows), rng.integers(500, 1500, rows)),
                ("latency_p95", rng.uniform(0.1, 0.3, rows), np.full(rows, np.nan)),
                ("oauth_refresh_failures", rng.poisson(0.5, rows).astype(float), np.nan),
            )
        ],
        ignore_index=True,
    )
    # a sane error-ratio max (1%) for this traffic: features promote, then mostly hold at 100%
    template = parse_config(history_config(0.01)).feature("google")
    specs = [template.model_copy(update={"name": name}) for name in names]
    started = time.perf_counter()
    source = ReplaySource(frame)
    indexed = time.perf_counter() - started
    before, started = os.times(), time.perf_counter()
    results = backtest(
        specs, source, start, start + timedelta(days=days), STEP, workers=workers, keep_ticks=False
    )
    replayed, after = time.perf_counter() - started, os.times()
    own = after.user + after.system - before.user - before.system
    children = (
        after.children_user + after.children_system - before.children_user - before.children_system
    )
    cpu = own + children  # this process and its workers (once they have exited), user + system
    changes = sum(len(r.changes) for r in results.values())
    where = "this process alone" if workers == 1 else f"{workers} worker processes"
    print(f"2. {features} features x 7 days at 10m ({features * ticks:,} feature-ticks)")
    print(f"   index the series ({len(frame):,} rows): {indexed:.1f} s")
    print(f"   replay in {where} (workers={workers}):")
    print(f"     wall {replayed:.1f} s (target < 60 s)")
    print(
        f"     CPU {cpu:.1f} s (this process {own:.1f} s, workers {children:.1f} s; "
        f"{cpu / (features * ticks) * 1e6:.0f} us per feature-tick)"
    )
    print(f"     {changes} simulated changes")
    print(f"   load average while measured: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def explain_history() -> None:
    spec: FeatureSpec = parse_config(CONFIG).feature("google")
    start = datetime(2026, 1, 5, tzinfo=UTC)
    rng = np.random.default_rng(14)
    ticks = 1000
    times = pd.date_range(start, periods=ticks, freq="10min", tz="UTC")
    ratio = rng.uniform(0.0005, 0.004, ticks)
    ratio[rng.random(ticks) < 0.05] = 0.05  # breaches now and then
    samples = rng.integers(50, 1500, ticks).astype(float)  # some windows too thin to judge
    latency = rng.uniform(0.1, 0.6, ticks)
    latency[rng.random(ticks) < 0.03] = np.nan
    frame = pd.concat(
        [
            pd.DataFrame({"time": times, "feature": "google", "slo": slo, "value": v, "samples": n})
            for slo, v, n in (
                ("error_rate", ratio, samples),
                ("latency_p95", latency, np.nan),
                ("oauth_refresh_failures", rng.poisson(1.5, ticks).astype(float), np.nan),
            )
        ]
    )
    end = times[-1].to_pydatetime()
    result = backtest([spec], ReplaySource(frame), start, end, STEP, record_inputs=True)["google"]
    started = time.perf_counter()
    replays = [
        explain_inputs(DecisionInputs.from_json("google", t.inputs), spec, t.at)
        for t in result.ticks
    ]
    took = time.perf_counter() - started
    same = sum(r.reproduces for r in replays)
    actions: dict[str, int] = {}
    for t in result.ticks:
        actions[t.action] = actions.get(t.action, 0) + 1
    sizes = [len(t.inputs.encode()) for t in result.ticks]
    print(f"3. explain over a generated {len(replays)}-tick history ({actions})")
    print(f"   reproduced: {same}/{len(replays)} = {same / len(replays):.1%} in {took:.2f} s")
    print(f"   inputs per entry: median {int(np.median(sizes))} B, max {max(sizes)} B (< 2 KB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    arguments = parser.parse_args()
    thirty_days()
    thousand_features(max(1, arguments.workers))
    explain_history()
