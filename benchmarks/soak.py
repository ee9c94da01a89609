"""Fault soak on the HA Redis topology: many controller passes, random faults, invariants.

    .venv/bin/python benchmarks/soak.py --runs 1000 [--seed 7] [--features 3]

Starts Redis as a primary, a replica and three Sentinels, and a Pushgateway, on loopback.
Each tick is one controller pass (the flow's own steps: fetch, read, decide, guard, apply,
count) with the schedule compressed: tick t is `T0 + t x 10 min`, so dwell and cooldown
work as in production. Traffic alternates between healthy and breaching stretches per
feature. Between ticks, and between a pass' read and its write, faults are injected at
random:

- kill the Redis primary (SIGKILL): Sentinel fails over; the old primary returns as replica;
- stop / start the Pushgateway (a real process), Prometheus (its answers: connection refused
  from the source's HTTP client), or the worker (the tick's run never happens: Crashed);
- an operator's `rollout set` or pause lands between a pass' read and its write;
- a corrupt value in a flag key (then put back as it was).

Then the whole history is checked: audit vs Redis (none lost, none duplicated), promotions
only on healthy evidence, every breach rolled back by the next successful pass, nothing
moved while paused, telemetry totals equal the audit's counts. Prints one table.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import requests

from deployments.ha import RedisHA, start_redis_ha
from deployments.servers import RunningServer, start_pushgateway
from rollout_core.config import FeatureSpec, load_config
from rollout_core.controller import FeatureOutcome, run_pass, run_status
from rollout_core.errors import RolloutError
from rollout_core.flags import AUDIT_STREAM, RedisFlagStore
from rollout_core.model import Action, FlagState
from rollout_core.ports import ApplyResult, FlagChange
from rollout_core.redis_connection import connect
from rollout_core.slo import Answer, PrometheusSource
from rollout_core.telemetry import CHANGES_KEY, PushgatewayTelemetry
from rollout_sdk.keys import flag_key

T0 = datetime(2026, 6, 1, tzinfo=UTC)
TICK = timedelta(minutes=10)
SAFE_PERCENT = 10.0
FAULTS = (
    "redis_failover",
    "pushgateway_restart",
    "prometheus_outage",
    "worker_killed",
    "concurrent_set",
    "concurrent_pause",
    "corrupt_value",
)
CONFIG = """
defaults:
  ladder: [0, 10, 50, 100]
  safe_percent: 10
  dwell: 15m
  cooldown: 30m
features:
{features}
"""
FEATURE = """  {name}:
    slos:
      - name: error_rate
        ratio:
          errors: sum(increase(soak_errors_total{{feature="{name}"}}[5m]))
          total: sum(increase(soak_requests_total{{feature="{name}"}}[5m]))
        max: 0.01
        min_samples: 200
"""


class Traffic:
    """Prometheus' answers per tick: each feature healthy or breaching in stretches; while
    `down`, every query is refused like a stopped Prometheus."""

    def __init__(self, features: Sequence[str], rng: random.Random) -> None:
        self.breaching = dict.fromkeys(features, False)
        self.rng = rng
        self.down = False

    def next_tick(self) -> None:
        for feature in self.breaching:
            if self.rng.random() < 0.2:  # stretches of about five ticks
                self.breaching[feature] = not self.breaching[feature]

    def query(self, promql: str, params: Mapping[str, str]) -> Answer:
        if self.down:
            raise requests.ConnectionError("[Errno 111] Connection refused (Prometheus stopped)")
        feature = promql.split('feature="')[1].split('"')[0]
        value = 2000.0 if "requests" in promql else (120.0 if self.breaching[feature] else 0.0)
        result = [{"metric": {}, "value": [float(params["time"]), str(value)]}]
        return Answer(
            200, {"status": "success", "data": {"resultType": "vector", "result": result}}
        )


class RacingStore:
    """The real store; when armed, an operator's write lands between the pass' read and its
    write (what a concurrent `rollout set` / `rollout pause` does)."""

    def __init__(self, store: RedisFlagStore, operator: RedisFlagStore) -> None:
        self.store, self.operator = store, operator
        self.race: tuple[str, str, Any] | None = None  # (kind, feature, value)
        self.raced: list[tuple[str, str]] = []

    def read(self, features: Sequence[str]) -> dict[str, FlagState]:
        return self.store.read(features)

    def read_each(self, features: Sequence[str]) -> dict[str, FlagState | RolloutError]:
        states = self.store.read_each(features)
        if self.race is not None:
            kind, feature, value = self.race
            self.race = None
            with contextlib.suppress(RolloutError):
                operator_write(self.operator, kind, feature, value, "soak: concurrent operator")
                self.raced.append((kind, feature))
        return states

    def apply_many(self, changes: Sequence[FlagChange]) -> list[ApplyResult | RolloutError]:
        return self.store.apply_many(changes)

    def apply(self, change: FlagChange) -> ApplyResult:
        return self.store.apply(change)


def operator_write(store: RedisFlagStore, kind: str, feature: str, value: Any, reason: str) -> Any:
    at = datetime.now(UTC)
    if kind == "set":
        return store.set_percent(feature, value, reason, by="operator", at=at)
    return store.set_paused(feature, value, reason, by="operator", at=at)


@dataclass
class Tick:
    index: int
    at: datetime
    ran: bool
    status: str
    breaching: dict[str, bool]
    before: dict[str, FlagState | None]
    outcomes: dict[str, FeatureOutcome] = field(default_factory=dict)
    raced: set[str] = field(default_factory=set)
    faults: list[str] = field(default_factory=list)


@dataclass
class Soak:
    directory: Path
    runs: int
    features: list[str]
    rng: random.Random
    fault_rate: float
    ha: RedisHA | None = None
    pushgateway: RunningServer | None = None
    ticks: list[Tick] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    survived: Counter[str] = field(default_factory=Counter)
    acknowledged: dict[str, str] = field(default_factory=dict)  # write id -> feature (confirmed)
    unconfirmed: int = 0
    lost_refusals: int = 0
    pending_survival: list[tuple[str, int]] = field(default_factory=list)
    corrupted: tuple[str, str | None] = ("", None)
    extra_ok_run: int = 0

    def start(self) -> None:
        self.ha = start_redis_ha(self.directory / "redis")
        self.pushgateway = start_pushgateway(self.directory / "pushgateway")

    def stop(self) -> None:
        if self.ha is not None:
            self.ha.stop()
        if self.pushgateway is not None:
            self.pushgateway.stop()

    def run(self) -> None:
        assert self.ha is not None and self.pushgateway is not None
        config_file = self.directory / "rollouts.yaml"
        config_file.write_text(
            CONFIG.format(features="".join(FEATURE.format(name=f) for f in self.features))
        )
        specs: list[FeatureSpec] = list(load_config(str(config_file)).select(None))
        store = RedisFlagStore(connect(self.ha.url), wait_timeout_ms=500)
        operator = RedisFlagStore(connect(self.ha.url), wait_timeout_ms=500)
        racing = RacingStore(store, operator)
        traffic = Traffic(self.features, self.rng)
        source = PrometheusSource("http://prometheus.invalid:9090", client=traffic, query_retries=0)
        telemetry = PushgatewayTelemetry(self.pushgateway.url, redis_client=connect(self.ha.url))
        for feature in self.features:
            store.init(feature, T0)
            store.set_audience(feature, False, "soak: public", "operator", T0)
        for index in range(self.runs):
            at = T0 + TICK * (index + 1)
            traffic.next_tick()
            faults = self.inject(traffic, racing, store)
            before = self.snapshot(store)
            tick = Tick(index, at, False, "crashed", dict(traffic.breaching), before, faults=faults)
            if "worker_killed" not in faults:
                outcomes = run_pass(specs, racing, source, at, dry_run=False)
                tick.ran, tick.status, tick.outcomes = True, run_status(outcomes), outcomes
                tick.raced = {feature for _, feature in racing.raced}
                racing.raced.clear()
                self.count(telemetry, outcomes, tick.status, at)
                self.remember(outcomes)
                self.recover_lost_writes(operator, outcomes)
            self.ticks.append(tick)
            self.settle(traffic, tick)
            if (index + 1) % 100 == 0:
                print(f"  {index + 1} ticks, {sum(self.injected.values())} faults", file=sys.stderr)
        self.flush(telemetry)

    # --- faults ---------------------------------------------------------------------------

    def inject(self, traffic: Traffic, racing: RacingStore, store: RedisFlagStore) -> list[str]:
        assert self.ha is not None and self.pushgateway is not None
        faults: list[str] = []
        if self.rng.random() >= self.fault_rate:
            return faults
        fault = self.rng.choice(FAULTS)
        feature = self.rng.choice(self.features)
        if fault == "redis_failover":
            self.ha.fail_over()
        elif fault == "pushgateway_restart":
            self.pushgateway.kill()
        elif fault == "prometheus_outage":
            traffic.down = True
        elif fault == "concurrent_set":
            racing.race = ("set", feature, self.rng.choice([0.0, 10.0, 50.0, 100.0]))
        elif fault == "concurrent_pause":
            current = store.read_each([feature]).get(feature)
            paused = isinstance(current, FlagState) and current.paused
            racing.race = ("pause", feature, not paused)
        elif fault == "corrupt_value":
            key = flag_key(feature, "rollout_percent")
            self.corrupted = (key, store.client.get(key))
            store.writer.set(key, "fifty")
        faults.append(fault)
        self.injected[fault] += 1
        self.pending_survival.append((fault, len(self.ticks)))
        return faults

    def settle(self, traffic: Traffic, tick: Tick) -> None:
        """Undo the tick's fault (the operator's repair), then count a fault survived when a
        later pass succeeds."""
        assert self.ha is not None and self.pushgateway is not None
        if "prometheus_outage" in tick.faults:
            traffic.down = False
        if "pushgateway_restart" in tick.faults:
            self.pushgateway = start_pushgateway(
                self.directory / "pushgateway", self.pushgateway.port
            )
        if "corrupt_value" in tick.faults:
            key, value = self.corrupted
            self.ha_client().set(key, value) if value is not None else self.ha_client().delete(key)
        if "redis_failover" in tick.faults:
            self.ha.wait_replicated()
        if tick.status == "ok":
            for fault, _ in self.pending_survival:
                self.survived[fault] += 1
            self.pending_survival.clear()

    def ha_client(self) -> redis.Redis:
        assert self.ha is not None
        return connect(self.ha.url)

    # --- bookkeeping ----------------------------------------------------------------------

    def snapshot(self, store: RedisFlagStore) -> dict[str, FlagState | None]:
        with contextlib.suppress(RolloutError):
            states = (
                store.store.read_each(self.features)
                if isinstance(store, RacingStore)
                else store.read_each(self.features)
            )
            return {f: s if isinstance(s, FlagState) else None for f, s in states.items()}
        return dict.fromkeys(self.features)

    def count(
        self,
        telemetry: PushgatewayTelemetry,
        outcomes: Mapping[str, FeatureOutcome],
        status: str,
        at: datetime,
    ) -> None:
        results = {n: o.result for n, o in outcomes.items() if not o.is_failed or o.applied}
        percents = {n: o.percent for n, o in outcomes.items() if o.percent is not None}
        unconfirmed = [n for n, o in outcomes.items() if o.unconfirmed]
        telemetry.record_run(results, percents, status, at, unconfirmed=unconfirmed)

    def remember(self, outcomes: Mapping[str, FeatureOutcome]) -> None:
        for name, outcome in outcomes.items():
            if outcome.applied and not outcome.dry_run and outcome.audit_id:
                if outcome.unconfirmed:
                    self.unconfirmed += 1
                else:
                    self.acknowledged[outcome.audit_id] = name

    def recover_lost_writes(
        self, operator: RedisFlagStore, outcomes: Mapping[str, FeatureOutcome]
    ) -> None:
        """A feature refused because a failover lost the controller's write: the operator
        looks at the audit and sets the percent again (a new, newer write)."""
        for name, outcome in outcomes.items():
            if outcome.error and "Redis lost that write" in outcome.error:
                self.lost_refusals += 1
                state = operator.read_each([name])[name]
                if isinstance(state, FlagState):
                    target = 0.0 if state.percent != 0 else SAFE_PERCENT
                    operator.set_percent(
                        name,
                        target,
                        "soak: re-set after a lost write",
                        by="operator",
                        at=datetime.now(UTC),
                    )

    def flush(self, telemetry: PushgatewayTelemetry) -> None:
        """Counts a pass kept while Redis was failing over join the totals now."""
        if telemetry.pending.runs or telemetry.pending.changes:
            telemetry.record_run({}, {}, "ok", T0 + TICK * (self.runs + 1))
            self.extra_ok_run = 1


# --- invariants ----------------------------------------------------------------------------


def audit_entries(client: redis.Redis) -> list[tuple[str, dict[str, str]]]:
    return [(str(i), dict(f)) for i, f in client.xrange(AUDIT_STREAM)]


def check(soak: Soak) -> dict[str, int]:
    client = soak.ha_client()
    entries = audit_entries(client)
    violations: Counter[str] = Counter(
        dict.fromkeys(
            [
                "duplicated audit entries",
                "acknowledged writes lost",
                "changes without an audit entry",
            ],
            0,
        )
    )
    ids = [fields.get("write_id") for _, fields in entries if fields.get("write_id")]
    violations["duplicated audit entries"] = len(ids) - len(set(ids))
    present = {entry_id for entry_id, _ in entries}
    violations["acknowledged writes lost"] = sum(1 for a in soak.acknowledged if a not in present)
    for feature in soak.features:
        chain = [
            fields
            for _, fields in entries
            if fields.get("feature") == feature
            and fields.get("new_percent")
            and fields.get("dry_run") != "true"
        ]
        for before, after in itertools.pairwise(chain):
            if (
                after.get("action") not in ("init", "audience")
                and after["old_percent"] != before["new_percent"]
            ):
                violations["changes without an audit entry"] += 1
        raw = client.get(flag_key(feature, "rollout_percent"))
        if chain and raw is not None and float(raw) != float(chain[-1]["new_percent"]):
            violations["changes without an audit entry"] += 1
    promote_without_evidence = 0
    breach_not_rolled_back = 0
    moved_while_paused = 0
    owed: dict[str, int] = {}
    for tick in soak.ticks:
        for name, outcome in tick.outcomes.items():
            decision = outcome.decision
            applied = outcome.applied and not outcome.dry_run and decision is not None
            if applied and decision.action is Action.PROMOTE and tick.breaching[name]:
                promote_without_evidence += 1
            state = tick.before.get(name)
            if (
                applied
                and decision.is_change
                and state is not None
                and state.paused
                and name not in tick.raced
            ):
                moved_while_paused += 1
        if tick.status != "ok":
            continue
        for name, breaching in tick.breaching.items():
            state = tick.before.get(name)
            outcome = tick.outcomes.get(name)
            needs = (
                breaching
                and state is not None
                and state.percent > SAFE_PERCENT
                and not state.paused
            )
            if name in owed and not needs:
                owed.pop(name)
            if not needs or name in tick.raced:
                continue
            rolled_back = (
                outcome is not None
                and outcome.applied
                and outcome.decision is not None
                and outcome.decision.action is Action.ROLLBACK
            )
            if not rolled_back:
                breach_not_rolled_back += 1
    violations["promotion without healthy evidence"] = promote_without_evidence
    violations["breach not rolled back by the next successful run"] = breach_not_rolled_back
    violations["percent moved while paused"] = moved_while_paused
    counted = {tuple(str(k).split("|")): int(v) for k, v in client.hgetall(CHANGES_KEY).items()}
    audited = Counter(
        (fields["feature"], fields["action"])
        for _, fields in entries
        if fields.get("by") == "controller"
        and fields.get("dry_run") != "true"
        and fields.get("action") in ("promote", "rollback")
    )
    mismatched = 0
    for feature in soak.features:
        for action in ("promote", "rollback"):
            if counted.get((feature, action), 0) != audited.get((feature, action), 0):
                mismatched += 1
    violations["telemetry totals != audit counts"] = mismatched
    return dict(violations)


def table(soak: Soak, violations: Mapping[str, int], seconds: float) -> str:
    lines = [
        f"soak: {soak.runs} scheduled ticks, {len(soak.features)} features, {seconds:.0f} s",
        "",
    ]
    lines.append(f"{'fault':<24}{'injected':>10}{'survived':>10}")
    for fault in FAULTS:
        lines.append(f"{fault:<24}{soak.injected[fault]:>10}{soak.survived[fault]:>10}")
    states = Counter(t.status for t in soak.ticks)
    lines += ["", f"{'runs by state':<24}{'count':>10}"]
    for status, count in sorted(states.items()):
        lines.append(f"{status:<24}{count:>10}")
    lines += ["", f"{'invariant':<52}{'violations':>10}"]
    for name, count in violations.items():
        lines.append(f"{name:<52}{count:>10}")
    ok = states.get("ok", 0)
    applied = Counter(
        str(o.decision.action)
        for t in soak.ticks
        for o in t.outcomes.values()
        if o.applied and not o.dry_run and o.decision is not None and o.decision.is_change
    )
    lines += [
        "",
        f"controller changes applied: {applied.get('promote', 0)} promotions, "
        f"{applied.get('rollback', 0)} rollbacks",
        "",
        f"availability (ticks with a successful run): {ok}/{soak.runs} = {ok / soak.runs:.1%}",
        f"Sentinel failovers: {soak.ha.failovers if soak.ha else 0}; writes applied but "
        f"unconfirmed: {soak.unconfirmed}; "
        f"features refused after a lost write: {soak.lost_refusals}",
    ]
    return "\n".join(lines)


def soak(
    runs: int, seed: int, features: int, fault_rate: float
) -> tuple[Soak, dict[str, int], str]:
    directory = Path(tempfile.mkdtemp(prefix="rollout-soak-"))
    state = Soak(
        directory, runs, [f"soak{i}" for i in range(features)], random.Random(seed), fault_rate
    )
    began = time.perf_counter()
    state.start()
    try:
        state.run()
        violations = check(state)
    finally:
        state.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return state, violations, table(state, violations, time.perf_counter() - began)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="controller ticks (default 1000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--features", type=int, default=3)
    parser.add_argument("--fault-rate", type=float, default=0.3, help="share of ticks with a fault")
    args = parser.parse_args(argv)
    _, violations, text = soak(args.runs, args.seed, args.features, args.fault_rate)
    print(text)
    return 1 if any(violations.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
