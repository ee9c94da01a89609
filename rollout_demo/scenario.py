"""The demo's story as data: the rollouts config, the replayed SLO series and the eight scenes.

Times are minutes after START on the simulated clock. Every tick is one controller flow run
at that simulated time; operator steps are the writes an operator would make with the CLI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import pandas as pd

__all__ = [
    "DEMO_CONFIG",
    "ERROR_RATIO_MAX",
    "FEATURE",
    "LATENCY_MAX",
    "OUTAGE",
    "REGIONAL_FEATURE",
    "REGIONS",
    "REGION_SPIKE",
    "SCENES",
    "SPIKE",
    "START",
    "Expectation",
    "Operator",
    "Scene",
    "Tick",
    "at_minute",
    "build_series",
]

FEATURE = "google"
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # a Monday morning
ERROR_RATIO_MAX = 0.01
LATENCY_MAX = 0.5
SPIKE = (72, 92)  # minutes: error ratio 8%, latency 0.9 s
OUTAGE = (165, 185)  # minutes: the metrics source does not answer
# scene 8: a second feature rolled out region by region; eu-west alone breaks
REGIONAL_FEATURE = "google.regions"
REGIONS = ("eu-canary", "eu-west", "us-east")
REGION_SPIKE = (222, 240)  # minutes: eu-west's error ratio 6%, the other regions healthy
SERIES_MINUTES = 245

DEMO_CONFIG = f"""\
# The demo's rollouts file: the repository's rollouts.yaml with the same ladder and guards.
defaults:
  ladder: [0, 10, 50, 100]
  safe_percent: 10
  dwell: 15m
  cooldown: 1h

features:
  {FEATURE}:
    slos:
      - name: error_rate
        ratio:
          errors: sum(increase(action_error_total{{provider="google"}}[5m]))
          total: sum(increase(action_exec_total{{provider="google"}}[5m]))
        max: {ERROR_RATIO_MAX}
        min_samples: 200
      - name: latency_p95
        query: histogram_quantile(0.95, sum(rate(action_latency_seconds_bucket[5m])) by (le))
        max: {LATENCY_MAX}
      - name: oauth_refresh_failures
        kind: count
        query: sum(increase(oauth_events_total{{event="refresh_failed"}}[15m]))
        max: 5
  {REGIONAL_FEATURE}:
    segments:
      by: region
      values: [{", ".join(REGIONS)}]
      order: parallel
      halt_on_breach: segment
    slos:
      - name: error_rate
        ratio:
          errors: sum by (region) (increase(action_error_total{{provider="google"}}[5m]))
          total: sum by (region) (increase(action_exec_total{{provider="google"}}[5m]))
        max: {ERROR_RATIO_MAX}
        min_samples: 200
"""


def at_minute(minute: float) -> datetime:
    return START + timedelta(minutes=minute)


def build_series(minutes: int = SERIES_MINUTES) -> pd.DataFrame:
    """One reading per SLO per simulated minute (the long format ReplaySource reads): healthy
    with a little deterministic wobble, except during SPIKE."""
    rows = []
    for minute in range(minutes + 1):
        wobble = math.sin(minute / 7.0)
        spiking = SPIKE[0] <= minute < SPIKE[1]
        requests = 4000 + 300 * wobble
        error_ratio = 0.08 + 0.01 * wobble if spiking else 0.003 + 0.001 * wobble
        latency = 0.9 + 0.05 * wobble if spiking else 0.22 + 0.03 * wobble
        refresh_failures = 1.0 if minute % 40 < 5 else 0.0
        time = at_minute(minute)
        rows += [
            (time, FEATURE, "error_rate", error_ratio, requests),
            (time, FEATURE, "latency_p95", latency, requests),
            (time, FEATURE, "oauth_refresh_failures", refresh_failures, math.nan),
        ]
        for region in REGIONS:  # the replay names a segment's series `feature[segment]`
            breaking = region == "eu-west" and REGION_SPIKE[0] <= minute < REGION_SPIKE[1]
            ratio = 0.06 + 0.005 * wobble if breaking else 0.002 + 0.001 * wobble
            unit = f"{REGIONAL_FEATURE}[{region}]"
            rows.append((time, unit, "error_rate", ratio, requests / 2))
    return pd.DataFrame(rows, columns=["time", "feature", "slo", "value", "samples"])


@dataclass(frozen=True)
class Tick:
    """One controller flow run at this simulated minute."""

    minute: float
    dry_run: bool = False


OperatorKind = Literal["audience_public", "pause", "resume"]


@dataclass(frozen=True)
class Operator:
    """An operator's write between runs (what `rollout audience/pause/resume` do)."""

    minute: float
    kind: OperatorKind


@dataclass(frozen=True)
class Expectation:
    """How a scene must end: the flag percent and the last run's decision and state, plus
    the guards that must have held the flag at some tick of the scene."""

    percent: float
    action: str
    state: str = "Completed"
    guards_seen: tuple[str, ...] = ()
    audited: bool | None = None  # the last tick wrote an audit stream entry
    # a segmented scene: each segment's (name, percent, decision) at the last run
    segments: tuple[tuple[str, float, str], ...] = ()

    def describe(self) -> str:
        if self.segments:
            return ", ".join(f"{name} {p:g}% {action}" for name, p, action in self.segments)
        text = f"{self.percent:g}% {self.action} {self.state}"
        if self.guards_seen:
            text += f", held by {', '.join(self.guards_seen)}"
        if self.audited is not None:
            text += ", audited" if self.audited else ", nothing written"
        return text


@dataclass(frozen=True)
class Scene:
    number: int
    title: str
    story: str
    steps: tuple[Tick | Operator, ...]
    expected: Expectation
    outage: tuple[float, float] | None = None  # minutes when the metrics source fails
    feature: str = FEATURE  # the feature the scene's runs decide


SCENES: tuple[Scene, ...] = (
    Scene(
        1,
        "Dry run: recommend only",
        "The controller judges the SLOs and records a recommendation; the flag stays at 0%.",
        (Tick(0, dry_run=True),),
        Expectation(0, "recommend promote", audited=True),
    ),
    Scene(
        2,
        "Internal audience: 0% -> 10% -> 50% -> 100%",
        "Healthy SLOs promote one ladder step per run; runs inside the 15 min dwell hold.",
        (Tick(5), Tick(10), Tick(20), Tick(25), Tick(35)),
        Expectation(100, "promote", guards_seen=("dwell",)),
    ),
    Scene(
        3,
        "Audience switched to public: start over at 0%",
        "The operator opens the feature to everyone; the percent restarts at 0 and climbs again.",
        (Operator(40, "audience_public"), Tick(45), Tick(55), Tick(70)),
        Expectation(50, "promote", guards_seen=("dwell",)),
    ),
    Scene(
        4,
        "Error spike: rolled back at once",
        "5 min after a promotion, inside the dwell, the error ratio jumps to 8%: rollback now.",
        (Tick(75),),
        Expectation(10, "rollback"),
    ),
    Scene(
        5,
        "Cooldown: an hour before promoting again",
        "The SLOs recover, but promotions wait 1 h after the rollback; then they resume.",
        (Tick(95), Tick(120), Tick(135)),
        Expectation(50, "promote", guards_seen=("cooldown",)),
    ),
    Scene(
        6,
        "Pause and resume",
        "Past its dwell with green SLOs, a paused feature still holds; resume hands it back.",
        (Operator(140, "pause"), Tick(155), Operator(160, "resume")),
        Expectation(50, "hold", guards_seen=("paused",)),
    ),
    Scene(
        7,
        "Metrics outage: a Failed run, no change",
        "Resumed and due a promotion, but the metrics source does not answer: after its "
        "retries the run fails, and nothing is written.",
        (Tick(170),),
        Expectation(50, "failed", state="Failed", audited=False),
        outage=OUTAGE,
    ),
    Scene(
        8,
        "Regions: eu-west breaks, only eu-west rolls back",
        f"{REGIONAL_FEATURE} ramps region by region, each judged by its own series; eu-west's "
        "errors pull back eu-west alone while eu-canary and us-east keep ramping.",
        (Tick(190), Tick(206), Tick(225)),
        Expectation(
            100,
            "promote",
            segments=(
                ("eu-canary", 100, "promote"),
                ("eu-west", 10, "rollback"),
                ("us-east", 100, "promote"),
            ),
        ),
        feature=REGIONAL_FEATURE,
    ),
)
