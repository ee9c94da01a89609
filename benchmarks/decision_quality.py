"""How often the SLO policy decides right on simulated binomial traffic, against the naive rule.

Each trial draws one 5-minute window of requests and errors (seeded), builds the reading the
controller would see, and runs the real `evaluate_slos` and `propose` on the original Gmail SLOs.
The naive rule is the original system's: point estimate above 1% means rollback, else promote
(a failed or NaN query read as 0). The last scenarios break the latency reading (NaN, a
malformed query) to check that it never promotes blind and never blocks a rollback.
Exits 1 when a target is missed.

    .venv/bin/python benchmarks/decision_quality.py [--trials 50000] [--seed 7]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rollout_core.model import Action, FlagState, QueryError, SloReading, SloSnapshot
from rollout_core.policy import evaluate_slos, gmail_spec, propose

SPEC = gmail_spec(has_request_counts=True)
MAX_ERROR_RATIO = 0.01
HEALTHY_LATENCY = SloReading("latency_p95", 0.2)
NAN_LATENCY = SloReading("latency_p95", float("nan"))
BROKEN_LATENCY = SloReading(
    "latency_p95", None, None, QueryError("latency_p95", "p95", "bad_data", "parse error")
)


@dataclass(frozen=True)
class Scenario:
    """A feature with a true error ratio, seen through `requests` per window; the figure is the
    share of evaluations that end in `action`, judged against `target`."""

    label: str
    true_error: float
    requests: int
    action: Action
    target: float
    is_at_most: bool  # the figure must stay at or below the target (a false-action rate)
    latency: SloReading = field(default=HEALTHY_LATENCY)


Policy = Callable[[float, Scenario], Action]


SCENARIOS = (
    Scenario("false rollbacks, healthy 0.5% at n=100", 0.005, 100, Action.ROLLBACK, 0.005, True),
    Scenario("detection, broken 5% at n=400", 0.05, 400, Action.ROLLBACK, 0.99, False),
    Scenario("detection, broken 10% at n=50", 0.10, 50, Action.ROLLBACK, 0.85, False),
    Scenario("promotion, healthy 0.5% at n=3000", 0.005, 3000, Action.PROMOTE, 0.95, False),
    Scenario("holds at zero traffic", 0.005, 0, Action.HOLD, 1.0, False),
    Scenario(
        "holds, healthy 0.5% at n=3000, NaN p95", 0.005, 3000, Action.HOLD, 1.0, False, NAN_LATENCY
    ),
    Scenario(
        "rollback, 20% at n=2000, broken p95",
        0.2,
        2000,
        Action.ROLLBACK,
        1.0,
        False,
        BROKEN_LATENCY,
    ),
)


def evidence_policy(errors: float, scenario: Scenario) -> Action:
    """The real policy, on the reading Prometheus would give: errors/total and total."""
    requests = scenario.requests
    ratio = errors / requests if requests else float("nan")
    readings = {
        "error_rate": SloReading("error_rate", ratio, float(requests)),
        "latency_p95": scenario.latency,
        "oauth_refresh_failures": SloReading("oauth_refresh_failures", 0.0),
    }
    verdicts = evaluate_slos(SPEC, SloSnapshot(SPEC.name, readings))
    return propose(SPEC, FlagState(SPEC.name, 50.0), verdicts).action


def naive_policy(errors: float, scenario: Scenario) -> Action:
    """The original rule: an empty window read as 0%, then point estimate > 1% rolls back."""
    requests = scenario.requests
    ratio = errors / requests if requests else 0.0
    return Action.ROLLBACK if ratio > MAX_ERROR_RATIO else Action.PROMOTE


def share(policy: Policy, scenario: Scenario, errors: np.ndarray) -> float:
    hits = sum(policy(float(e), scenario) is scenario.action for e in errors)
    return hits / len(errors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    print(f"{args.trials:,} evaluations per scenario, seed {args.seed}, real evaluate_slos/propose")
    print(f"{'scenario':<40} {'policy':>8} {'naive':>8}  target      result")
    missed = 0
    for scenario in SCENARIOS:
        errors = rng.binomial(scenario.requests, scenario.true_error, size=args.trials)
        ours, naive = (
            share(evidence_policy, scenario, errors),
            share(naive_policy, scenario, errors),
        )
        is_met = ours <= scenario.target if scenario.is_at_most else ours >= scenario.target
        missed += not is_met
        bound = f"{'<=' if scenario.is_at_most else '>='} {scenario.target:.1%}"
        verdict = "met" if is_met else "MISSED"
        print(f"{scenario.label:<40} {ours:>8.2%} {naive:>8.2%}  {bound:<10}  {verdict}")
    print(f"{time.perf_counter() - started:.1f}s; {missed} target(s) missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
