"""The controller pass without Prefect: its steps over a fake metrics source and the real
flag store on fakeredis (with Lua), so every row of DESIGN §5 is checked in milliseconds."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest

from rollout_core.config import FeatureSpec
from rollout_core.controller import (
    FeatureOutcome,
    OutcomeStatus,
    apply_decisions,
    check_all_guards,
    decision_rows,
    evaluate_all,
    read_states,
    resolve_dry_run,
    run_pass,
    run_status,
    stale_run_reason,
    summarize,
)
from rollout_core.errors import FlagStoreError, MetricsUnavailable, RolloutError
from rollout_core.flags import AUDIT_STREAM, RedisFlagStore
from rollout_core.model import Action, FlagState, QueryError, SloReading, SloSnapshot
from rollout_core.ports import ApplyResult, FlagChange

NOW = datetime(2025, 10, 8, 15, 0, tzinfo=UTC)
HEALTHY = SloReading("error_rate", 0.001, 5000)
BREACHING = SloReading("error_rate", 0.2, 5000)


def spec(name: str) -> FeatureSpec:
    return FeatureSpec.model_validate(
        {
            "name": name,
            "slos": [
                {
                    "name": "error_rate",
                    "ratio": {"errors": f"errors_{name}", "total": f"total_{name}"},
                    "max": 0.01,
                }
            ],
        }
    )


@dataclass
class FakeSource:
    """Readings by feature, or an outage; counts its fetches."""

    readings: Mapping[str, SloReading] = field(default_factory=dict)
    is_down: bool = False
    fetches: int = 0

    def fetch(
        self, specs: Sequence[FeatureSpec], at: datetime
    ) -> Mapping[str, SloSnapshot | RolloutError]:
        self.fetches += 1
        if self.is_down:
            raise MetricsUnavailable("Prometheus at http://127.0.0.1:9 is unreachable")
        return {
            s.name: SloSnapshot(s.name, {"error_rate": self.readings[s.name]}, at)
            for s in specs
            if s.name in self.readings
        }


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def client(server: fakeredis.FakeServer) -> Iterator[fakeredis.FakeRedis]:
    fake = fakeredis.FakeRedis(server=server, decode_responses=True)
    yield fake
    fake.close()


@pytest.fixture
def store(client: fakeredis.FakeRedis) -> RedisFlagStore:
    return RedisFlagStore(client)


def seed(client: fakeredis.FakeRedis, feature: str, percent: str, **extra: str) -> None:
    keys = {"enabled": "true", "rollout_percent": percent, "paused": "false", **extra}
    client.mset({f"flags:{feature}:{name}": value for name, value in keys.items()})


def test_a_healthy_feature_is_promoted_with_history_and_audit_written(
    client: fakeredis.FakeRedis, store: RedisFlagStore
) -> None:
    seed(client, "google", "0")

    outcomes = run_pass([spec("google")], store, FakeSource({"google": HEALTHY}), NOW, False)

    outcome = outcomes["google"]
    assert (outcome.status, outcome.result, outcome.percent) == (OutcomeStatus.OK, "promote", 10)
    assert client.get("flags:google:rollout_percent") == "10"
    assert client.get("flags:google:last_change_time") == "2025-10-08T15:00:00Z"
    assert outcome.audit_id is not None and client.xlen(AUDIT_STREAM) == 1


def test_a_breach_rolls_back_inside_the_dwell(
    client: fakeredis.FakeRedis, store: RedisFlagStore
) -> None:
    seed(client, "google", "50", last_change_time="2025-10-08T14:59:00Z")

    outcome = run_pass([spec("google")], store, FakeSource({"google": BREACHING}), NOW, False)[
        "google"
    ]

    assert outcome.result is Action.ROLLBACK
    assert client.get("flags:google:rollout_percent") == "10"
    assert client.get("flags:google:last_rollback_time") == "2025-10-08T15:00:00Z"


def test_a_dry_run_records_a_recommendation_and_changes_no_flag(
    client: fakeredis.FakeRedis, store: RedisFlagStore
) -> None:
    seed(client, "google", "0")

    outcome = run_pass([spec("google")], store, FakeSource({"google": HEALTHY}), NOW, True)[
        "google"
    ]

    assert (outcome.result, outcome.percent, outcome.applied) == (Action.HOLD, 0, False)
    assert outcome.summary.startswith("google: recommend promote 0% -> 10%")
    assert client.get("flags:google:rollout_percent") == "0"
    assert not client.exists("flags:google:last_change_time")
    [(_, entry)] = client.xrange(AUDIT_STREAM)
    assert (entry["dry_run"], entry["new_percent"]) == ("true", "10")


def test_one_features_bad_flag_value_does_not_block_another(
    client: fakeredis.FakeRedis, store: RedisFlagStore
) -> None:
    seed(client, "google", "0")
    seed(client, "broken", "abc")
    source = FakeSource({"google": HEALTHY, "broken": HEALTHY})

    outcomes = run_pass([spec("broken"), spec("google")], store, source, NOW, False)

    assert outcomes["broken"].status is OutcomeStatus.CONFIG_ERROR
    assert "flags:broken:rollout_percent is 'abc'" in (outcomes["broken"].error or "")
    assert outcomes["google"].result is Action.PROMOTE
    assert run_status(outcomes) == "error"


def test_prometheus_down_fails_every_feature_and_writes_nothing(
    client: fakeredis.FakeRedis, store: RedisFlagStore
) -> None:
    seed(client, "google", "10")

    outcomes = run_pass([spec("google")], store, FakeSource(is_down=True), NOW, False)

    assert outcomes["google"].status is OutcomeStatus.PROM_UNREACHABLE
    assert outcomes["google"].decision is None
    assert run_status(outcomes) == "prom_unreachable"
    assert client.get("flags:google:rollout_percent") == "10"
    assert not client.exists(AUDIT_STREAM)


def test_redis_down_fails_every_feature(
    server: fakeredis.FakeServer, client: fakeredis.FakeRedis, store: RedisFlagStore
) -> None:
    seed(client, "google", "10")
    server.connected = False

    outcomes = run_pass([spec("google")], store, FakeSource({"google": HEALTHY}), NOW, False)

    assert outcomes["google"].status is OutcomeStatus.REDIS_ERROR
    assert run_status(outcomes) == "redis_error"
    assert "redis_error (Redis at" in summarize(outcomes)


def test_a_flag_changed_after_the_read_is_held_and_not_overwritten(
    client: fakeredis.FakeRedis, store: RedisFlagStore
) -> None:
    seed(client, "google", "0")
    specs = [spec("google")]
    states = read_states(store, ["google"])
    proposals = evaluate_all(specs, FakeSource({"google": HEALTHY}).fetch(specs, NOW), states)
    decisions = check_all_guards(specs, states, proposals, NOW)
    client.set("flags:google:rollout_percent", "50")  # an operator, between read and apply

    outcome = apply_decisions(store, decisions, states, NOW, dry_run=False)["google"]

    assert outcome.status is OutcomeStatus.OK and not outcome.applied
    assert outcome.decision is not None and outcome.decision.guard == "concurrent change"
    assert "flag moved from 0% to 50%" in outcome.decision.reason
    assert client.get("flags:google:rollout_percent") == "50"


def test_a_conflict_reports_the_percent_redis_holds_not_the_one_it_read(
    client: fakeredis.FakeRedis, store: RedisFlagStore
) -> None:
    # found by the whole-pass invariant suite (I5): a promotion from 0% whose percent an
    # operator set to 50%, or mistyped as "fifty", meanwhile reported (and pushed) 0%
    specs = [spec("google")]
    for meanwhile, reported in (("50", 50.0), ("fifty", None)):
        seed(client, "google", "0")
        states = read_states(store, ["google"])
        proposals = evaluate_all(specs, FakeSource({"google": HEALTHY}).fetch(specs, NOW), states)
        decisions = check_all_guards(specs, states, proposals, NOW)
        client.set("flags:google:rollout_percent", meanwhile)

        outcome = apply_decisions(store, decisions, states, NOW, dry_run=False)["google"]

        assert outcome.decision is not None and outcome.decision.guard == "concurrent change"
        assert outcome.percent == reported
        assert decision_rows({"google": outcome})[0]["after"] == (
            None if reported is None else f"{reported:g}%"
        )


def test_a_percent_deleted_after_the_read_is_a_concurrent_change_not_a_config_error(
    client: fakeredis.FakeRedis, store: RedisFlagStore
) -> None:
    # found by the whole-pass invariant suite (I5): a rollback whose percent key an operator
    # deleted meanwhile failed the run as "not initialised" and reported the percent it read
    seed(client, "google", "50")
    specs = [spec("google")]
    states = read_states(store, ["google"])
    proposals = evaluate_all(specs, FakeSource({"google": BREACHING}).fetch(specs, NOW), states)
    decisions = check_all_guards(specs, states, proposals, NOW)
    client.delete("flags:google:rollout_percent")

    outcome = apply_decisions(store, decisions, states, NOW, dry_run=False)["google"]

    assert outcome.status is OutcomeStatus.OK and not outcome.applied
    assert outcome.decision is not None and outcome.decision.guard == "concurrent change"
    assert "flags:google:rollout_percent was deleted since it was read" in outcome.decision.reason
    assert outcome.percent is None
    assert client.get("flags:google:rollout_percent") is None
    assert client.xlen(AUDIT_STREAM) == 0


class FailingApplyStore(RedisFlagStore):
    """Reads work; every compare-and-set fails as if Redis dropped the connection."""

    applies = 0

    def apply_many(self, changes: Sequence[FlagChange]) -> list[ApplyResult | RolloutError]:
        self.applies += len(changes)
        raise FlagStoreError(f"Redis failed while applying {changes[0].feature}")


def test_a_failed_apply_fails_only_that_feature_and_is_not_retried(
    client: fakeredis.FakeRedis,
) -> None:
    seed(client, "google", "0")
    seed(client, "other", "100")
    source = FakeSource({"google": HEALTHY, "other": HEALTHY})

    store = FailingApplyStore(client)

    outcomes = run_pass([spec("google"), spec("other")], store, source, NOW, False)

    assert outcomes["google"].status is OutcomeStatus.REDIS_ERROR
    assert outcomes["google"].percent == 0  # what it still is
    assert outcomes["other"].status is OutcomeStatus.OK  # at 100%: a hold, nothing to apply
    assert store.applies == 1  # one attempt for the one change, never a blind retry


def test_a_missing_snapshot_is_an_inconclusive_hold() -> None:
    state = FlagState("google", percent=10)

    proposals = evaluate_all([spec("google")], {}, {"google": state})

    decision = proposals["google"]
    assert not isinstance(decision, FeatureOutcome)
    assert decision.action is Action.HOLD and "inconclusive" in decision.reason


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], "ok"),
        ([OutcomeStatus.OK], "ok"),
        ([OutcomeStatus.CONFIG_ERROR, OutcomeStatus.OK], "error"),
        ([OutcomeStatus.ERROR, OutcomeStatus.PROM_UNREACHABLE], "prom_unreachable"),
        ([OutcomeStatus.PROM_UNREACHABLE, OutcomeStatus.REDIS_ERROR], "redis_error"),
    ],
)
def test_the_run_status_is_the_worst_feature_status(
    statuses: list[OutcomeStatus], expected: str
) -> None:
    outcomes = {
        f"f{i}": FeatureOutcome(f"f{i}", status, error=None if status is OutcomeStatus.OK else "x")
        for i, status in enumerate(statuses)
    }
    assert run_status(outcomes) == expected


@pytest.mark.parametrize(
    ("requested", "from_env", "is_dry"),
    [(None, None, True), (None, False, False), (True, False, True), (False, True, False)],
)
def test_dry_run_comes_from_the_parameter_then_the_environment_then_defaults_to_dry(
    requested: bool | None, from_env: bool | None, is_dry: bool
) -> None:
    assert resolve_dry_run(requested, from_env) is is_dry


def test_a_run_more_than_two_intervals_late_is_stale_and_an_on_time_one_is_not() -> None:
    interval = timedelta(minutes=10)

    assert stale_run_reason(NOW - timedelta(minutes=20), NOW, interval) is None
    assert stale_run_reason(None, NOW, interval) is None
    reason = stale_run_reason(NOW - timedelta(minutes=21), NOW, interval)
    assert reason is not None and "0:21:00 late" in reason and reason.startswith("skipped")


def test_the_summary_counts_results_and_lists_the_changed_feature(
    client: fakeredis.FakeRedis, store: RedisFlagStore
) -> None:
    seed(client, "google", "0")
    source = FakeSource({"google": HEALTHY})

    outcomes = run_pass([spec("google")], store, source, NOW, False)

    assert summarize(outcomes).splitlines() == [
        "1 feature(s): 1 promote",
        "google: promote 0% -> 10% (Initial canary 0% -> 10%: all SLOs healthy; "
        "error_rate 0.1% (n=5000, 99% lower bound 0.037%) <= max 1.0%: healthy)",
    ]


@dataclass
class SnapshotSource:
    """Hands back the given snapshots as they are."""

    snapshots: Mapping[str, SloSnapshot]

    def fetch(
        self, specs: Sequence[FeatureSpec], at: datetime
    ) -> Mapping[str, SloSnapshot | RolloutError]:
        return dict(self.snapshots)


def with_latency(name: str) -> FeatureSpec:
    body = spec(name).model_dump()
    body["slos"] = [*body["slos"], {"name": "latency_p95", "query": "p95", "max": 0.5}]
    return FeatureSpec.model_validate(body)


def broken_latency(transient: bool) -> SloReading:
    kind, status = ("execution", 422) if transient else ("bad_data", 400)
    error = QueryError("latency_p95", "p95", kind, "made up", transient, status)
    return SloReading("latency_p95", None, None, error)


def test_a_bad_query_on_one_slo_still_lets_another_slos_breach_roll_back_and_fails_the_run(
    client: fakeredis.FakeRedis, store: RedisFlagStore
) -> None:
    seed(client, "google", "100")
    readings = {
        "error_rate": SloReading("error_rate", 0.2, 2000),
        "latency_p95": broken_latency(False),
    }
    source = SnapshotSource({"google": SloSnapshot("google", readings, NOW)})

    outcomes = run_pass([with_latency("google")], store, source, NOW, False)

    outcome = outcomes["google"]
    assert (outcome.result, outcome.applied) == (Action.ROLLBACK, True)
    assert client.get("flags:google:rollout_percent") == "10"
    assert outcome.status is OutcomeStatus.CONFIG_ERROR and outcome.is_failed
    assert run_status(outcomes) == "error"
    assert "config_error: SLO 'latency_p95': HTTP 400 bad_data: made up (query 'p95')" in (
        outcome.summary
    )


def test_a_transient_query_error_holds_without_failing_the_run(
    client: fakeredis.FakeRedis, store: RedisFlagStore
) -> None:
    seed(client, "google", "10")
    readings = {"error_rate": HEALTHY, "latency_p95": broken_latency(True)}
    source = SnapshotSource({"google": SloSnapshot("google", readings, NOW)})

    outcomes = run_pass([with_latency("google")], store, source, NOW, False)

    outcome = outcomes["google"]
    assert outcome.result is Action.HOLD and outcome.status is OutcomeStatus.OK
    assert "latency_p95 transient query error: HTTP 422 execution" in outcome.summary
    assert run_status(outcomes) == "ok"
    assert client.get("flags:google:rollout_percent") == "10"


def thousand_features_outcomes() -> dict[str, FeatureOutcome]:
    """1,000 features: 30 failed, 60 rolled back, 110 promoted, 800 held, with long reasons."""
    from rollout_core.model import Decision

    outcomes: dict[str, FeatureOutcome] = {}
    for i in range(1000):
        name = f"feature-{i:04d}"
        if i < 30:
            outcomes[name] = FeatureOutcome(
                name, OutcomeStatus.REDIS_ERROR, error="Redis at redis://127.0.0.1:6379 refused"
            )
            continue
        action = Action.ROLLBACK if i < 90 else Action.PROMOTE if i < 200 else Action.HOLD
        to = 10.0 if action is Action.ROLLBACK else 50.0 if action is Action.PROMOTE else 25.0
        reason = f"{action}: error_rate {i / 100:.2f}% (n=812, 99% lower bound 1.6%) " + "x" * 80
        decision = Decision(name, action, 25.0, to, (reason,))
        outcomes[name] = FeatureOutcome(
            name, OutcomeStatus.OK, decision, applied=action is not Action.HOLD
        )
    return outcomes


def test_the_summary_of_a_thousand_features_fits_a_chat_message() -> None:
    outcomes = thousand_features_outcomes()

    message = summarize(outcomes)
    lines = message.splitlines()

    assert len(message) <= 2000
    assert lines[0] == "1000 feature(s): 30 failed, 60 rollback, 110 promote, 800 hold"
    assert lines[1].startswith("feature-0000: redis_error (Redis at")  # failures come first
    listed = len(lines) - 2  # the head and the "... and N more" line
    assert lines[-1] == (
        f"... and {200 - listed} more (every feature is in the rollout-decisions artifact)"
    )
    assert not any("feature-0900" in line for line in lines)  # a hold is counted, not listed


def test_the_summary_lists_every_failed_and_changed_feature_when_they_fit() -> None:
    outcomes = dict(list(thousand_features_outcomes().items())[25:35])  # 5 failed, 5 rollbacks

    lines = summarize(outcomes).splitlines()

    assert lines[0] == "10 feature(s): 5 failed, 5 rollback"
    assert [line.split(":")[0] for line in lines[1:]] == [f"feature-{i:04d}" for i in range(25, 35)]


def test_each_applied_change_and_recommendation_has_its_event() -> None:
    from tasks.controller import feature_event

    outcomes = thousand_features_outcomes()
    rollback, promote = outcomes["feature-0030"], outcomes["feature-0100"]
    assert rollback.decision is not None
    rollback = FeatureOutcome(
        rollback.feature, OutcomeStatus.OK, rollback.decision, True, audit_id="17-0"
    )
    recommended = FeatureOutcome(promote.feature, OutcomeStatus.OK, promote.decision, dry_run=True)

    event = feature_event(rollback)

    assert event["event"] == "rollout.feature.rolled-back"
    assert event["resource"]["prefect.resource.id"] == "rollout.feature.feature-0030"
    assert event["payload"] == {
        "feature": "feature-0030",
        "action": "rollback",
        "from_percent": 25.0,
        "to_percent": 10.0,
        "reason": rollback.decision.reason,
        "guard": None,
        "dry_run": False,
        "applied": True,
        "audit_id": "17-0",
    }
    assert feature_event(promote)["event"] == "rollout.feature.promoted"
    assert feature_event(recommended)["event"] == "rollout.feature.recommended"
    assert feature_event(recommended)["payload"]["dry_run"] is True


def test_the_summary_lists_a_promotion_held_until_an_operator_repairs_a_key(
    client: fakeredis.FakeRedis, store: RedisFlagStore
) -> None:
    seed(client, "google", "10", last_percent="ten")  # a corrupt history: only a person fixes it
    seed(client, "gmail", "10")
    source = FakeSource({"google": HEALTHY, "gmail": HEALTHY})

    outcomes = run_pass([spec("google"), spec("gmail")], store, source, NOW, False)

    lines = summarize(outcomes).splitlines()
    assert lines[0] == "2 feature(s): 1 promote, 1 hold"
    [held] = [line for line in lines if line.startswith("google:")]
    assert held.startswith("google: hold 10% -> 10% (Hold at 10%: history: flags:google:")
    assert "fix or delete the key" in held
