"""How fast the fast abort is on `rollout stack`: from `rollout stack inject --error-rate 0.08`
until `flags:google:rollout_percent` holds the safe step, with no manual and no scheduled run.

Each trial starts google at 50% on healthy traffic (and the fast alert inactive), injects the
fault, and times each stage of the path from the servers' own records:

  scrape + rule evaluation  inject -> the alert pending in Prometheus (its activeAt)
  for                       pending -> firing (polled from Prometheus' /api/v1/alerts)
  Alertmanager grouping     firing -> the bridge's event (its `occurred`, from Prefect's events)
  event to flow run         the event -> the abort flow run created by the trigger
  worker pickup + start-up  run created -> run Running (the worker polls every second, then
                            starts a Python process that imports Prefect and the flow)
  run to write              run Running -> the safe step in Redis (the flow's tasks)

Prints the 5 trials, the stage breakdown, the median and the worst; asserts nothing. Uses the
stack in $ROLLOUT_STACK_DIR / .stack when one is up, else starts one on random ports (and
stops it). Loopback only. About 2 minutes per trial (the 1-minute window has to heal).

Run: `.venv/bin/python benchmarks/abort_latency.py [--trials 5]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from deployments.stack import StackState, down, inject, read_state, resolve_stack_dir, up

FEATURE = "google"
ALERT = "GmailErrorRateFast"
SAFE = "10"
STAGES = (
    "scrape + rule evaluation",
    "for",
    "Alertmanager grouping",
    "event to flow run",
    "worker pickup + start-up",
    "run to write",
)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def post_json(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def moment(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def wait_for(probe: Any, what: str, timeout: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(every)
    raise SystemExit(f"gave up after {timeout:.0f} s waiting for {what}")


def fast_alert(prometheus: str) -> dict[str, Any] | None:
    alerts = get_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
    return next((a for a in alerts if a["labels"].get("alertname") == ALERT), None)


def ratio_1m(prometheus: str) -> float:
    query = urllib.parse.urlencode({"query": "provider_action:action_errors:ratio_rate1m"})
    result = get_json(f"{prometheus}/api/v1/query?{query}")["data"]["result"]
    return float(result[0]["value"][1]) if result else float("nan")


def seed(flags: redis.Redis) -> None:
    past = (datetime.now(UTC) - timedelta(hours=2)).isoformat(timespec="seconds")
    flags.mset(
        {
            f"flags:{FEATURE}:enabled": "true",
            f"flags:{FEATURE}:internal_only": "false",
            f"flags:{FEATURE}:rollout_percent": "50",
            f"flags:{FEATURE}:paused": "false",
            f"flags:{FEATURE}:last_change_time": past,
        }
    )


def healthy_start(state: StackState, flags: redis.Redis) -> None:
    """google at 50% on healthy traffic, the 1-minute ratio low and the fast alert inactive."""
    inject(Path(state.directory), {"error_rate": 0.002})
    seed(flags)
    prometheus = state.env["PROMETHEUS_BASE_URL"]
    wait_for(
        lambda: fast_alert(prometheus) is None and ratio_1m(prometheus) < 0.005,
        "healthy traffic and the fast alert inactive",
        timeout=240,
        every=1,
    )
    time.sleep(3)  # the sample service's gate has read 50% again


def trial(state: StackState, flags: redis.Redis) -> dict[str, float]:
    prometheus, api = state.env["PROMETHEUS_BASE_URL"], state.env["PREFECT_API_URL"]
    healthy_start(state, flags)
    injected = time.time()
    inject(Path(state.directory), {"error_rate": 0.08})
    pending = wait_for(lambda: fast_alert(prometheus), "the alert to go pending", 120)
    wait_for(
        lambda: (a := fast_alert(prometheus)) is not None and a["state"] == "firing",
        "the alert to fire",
        120,
        every=0.02,
    )
    firing_seen = time.time()
    wait_for(lambda: flags.get(f"flags:{FEATURE}:rollout_percent") == SAFE, "the rollback", 180)
    written = time.time()
    since = datetime.fromtimestamp(injected, UTC).isoformat()
    event_filter = {
        "filter": {"event": {"name": ["rollout.alert.firing"]}, "occurred": {"since": since}},
        "limit": 50,
    }
    events = wait_for(
        lambda: post_json(f"{api}/events/filter", event_filter)["events"], "the event", 30
    )
    event = min(events, key=lambda e: e["occurred"])
    deployment = get_json(f"{api}/deployments/name/rollout-controller/abort")
    runs = post_json(
        f"{api}/flow_runs/filter",
        {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}, "limit": 200},
    )
    episode = event["payload"]["alert"]
    run = min(
        (
            r
            for r in runs
            if (r["parameters"].get("alert") or {}).get("fingerprint") == episode["fingerprint"]
            and r["parameters"]["alert"]["starts_at"] == episode["starts_at"]
        ),
        key=lambda r: r["created"],
    )
    active_at = moment(pending["activeAt"])
    stamps = [
        injected,
        active_at,
        firing_seen,
        moment(event["occurred"]),
        moment(run["created"]),
        moment(run["start_time"]),
        written,
    ]
    stages = {name: b - a for name, a, b in zip(STAGES, stamps, stamps[1:], strict=False)}
    stages["total"] = written - injected
    return stages


def report(trials: list[dict[str, float]]) -> None:
    width = max(len(name) for name in STAGES)
    print("\nfast abort latency: inject -> safe step in Redis (seconds)")
    print(f"{'stage':<{width}}  " + "  ".join(f"trial {i + 1:>2}" for i in range(len(trials))))
    for name in (*STAGES, "total"):
        row = "  ".join(f"{t[name]:8.1f}" for t in trials)
        print(f"{name:<{width}}  {row}")
    totals = [t["total"] for t in trials]
    print(
        f"\nmedian {statistics.median(totals):.1f} s, worst {max(totals):.1f} s "
        f"(target: every trial within 60 s, median within 45 s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    state = read_state(resolve_stack_dir())
    scratch = None
    if state is None or state.dead():
        scratch = tempfile.TemporaryDirectory()
        print("starting a stack on random ports ...", file=sys.stderr)
        state = up(Path(scratch.name), usual_ports=False, ui=False).state
    try:
        flags = redis.Redis.from_url(state.env["REDIS_URL"], decode_responses=True)
        trials = []
        for number in range(args.trials):
            trials.append(trial(state, flags))
            print(f"trial {number + 1}: {trials[-1]['total']:.1f} s", file=sys.stderr, flush=True)
        report(trials)
    finally:
        inject(Path(state.directory), {"error_rate": 0.002})
        if scratch is not None:
            down(Path(scratch.name))
            scratch.cleanup()


if __name__ == "__main__":
    main()
