"""The controller flow end to end in one process: a Prefect test server, real Redis, a real
Prometheus scraping the Gmail sample service, a real Pushgateway (DESIGN §5 row by row).

Dwell and cooldown are passed by writing the history keys into the past, as an operator's
history would be; `now` stays the wall clock because Prometheus answers for `now` only.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from deployments.sample_service import SampleService
from deployments.servers import RunningServer
from flows.controller import rollout_controller
from rollout_core.bootstrap import Adapters, Settings, use_adapters, wire
from rollout_core.config import FeatureSpec
from rollout_core.controller import FeatureOutcome, OutcomeStatus
from rollout_core.errors import RolloutError
from rollout_core.model import Action, Decision, FlagState
from rollout_core.ports import ApplyResult, FlagChange, FlagStore
from rollout_core.slo import PrometheusSource
from tests.integration.conftest import (
    GMAIL_PROFILE,
    audit_entries,
    flag_keys,
    seed_flag,
    write_config,
)
from tests.integration.traffic import poll, pushed_totals

pytestmark = pytest.mark.integration


def run(config: Path, *features: str, dry_run: bool | None = False) -> Any:
    """One controller run; its final state (data: the list of FeatureOutcome)."""
    return rollout_controller(
        features=list(features) or None,
        dry_run=dry_run,
        config_path=str(config),
        return_state=True,
    )


def outcomes_of(state: Any) -> dict[str, FeatureOutcome]:
    data = state.result(raise_on_failure=False)
    assert isinstance(data, list), data
    return {outcome.feature: outcome for outcome in data}


def decided(state: Any, feature: str) -> tuple[FeatureOutcome, Decision]:
    """The feature's outcome and its decision (which a judged feature always has)."""
    outcome = outcomes_of(state)[feature]
    assert outcome.decision is not None, outcome
    return outcome, outcome.decision


def test_healthy_feature_is_promoted_one_step_then_waits_out_the_dwell(
    flags: redis.Redis, tmp_path: Path
) -> None:
    config = write_config(tmp_path, {"google": None})
    seed_flag(flags, "google", 0)

    first = run(config)
    promoted, promotion = decided(first, "google")
    assert first.is_completed(), first.message
    assert (promotion.action, promoted.applied) == (Action.PROMOTE, True)
    assert flag_keys(flags, "google")["rollout_percent"] == "10"
    assert "last_change_time" in flag_keys(flags, "google")

    second = run(config)
    _, hold = decided(second, "google")
    assert second.is_completed()
    assert (hold.action, hold.guard) == (Action.HOLD, "dwell")
    assert flag_keys(flags, "google")["rollout_percent"] == "10"

    seed_flag(flags, "google", 10, changed_ago=timedelta(minutes=16))
    third = run(config)
    assert decided(third, "google")[1].to_percent == 50
    assert flag_keys(flags, "google")["rollout_percent"] == "50"
    assert [e["new_percent"] for e in audit_entries(flags, "google")] == ["10", "50"]


def test_an_error_spike_is_rolled_back_at_once_even_inside_the_dwell(
    flags: redis.Redis,
    tmp_path: Path,
    gmail_traffic: SampleService,
    gmail_prometheus: RunningServer,
) -> None:
    config = write_config(tmp_path, {"spiky": None})
    seed_flag(flags, "spiky", 50, changed_ago=timedelta(minutes=1))
    gmail_traffic.inject(["spiky"], error_rate=0.3)
    try:
        wait_until_error_ratio_above(gmail_prometheus.url, "spiky", 0.05)
        state = run(config)
    finally:
        gmail_traffic.inject(["spiky"], error_rate=0.002)

    outcome, rollback = decided(state, "spiky")
    assert state.is_completed(), state.message
    assert rollback.action is Action.ROLLBACK and outcome.applied
    keys = flag_keys(flags, "spiky")
    assert (keys["rollout_percent"], keys["last_percent"]) == ("10", "50")
    assert "last_rollback_time" in keys
    assert "error_rate" in rollback.reason and "breach" in rollback.reason


def test_the_cooldown_holds_promotions_then_lets_them_through(
    flags: redis.Redis, tmp_path: Path
) -> None:
    config = write_config(tmp_path, {"cool": None})
    long_ago = timedelta(minutes=20)
    seed_flag(flags, "cool", 10, changed_ago=long_ago, rolled_back_ago=timedelta(minutes=20))

    _, hold = decided(run(config), "cool")
    assert (hold.action, hold.guard) == (Action.HOLD, "cooldown")
    assert flag_keys(flags, "cool")["rollout_percent"] == "10"

    seed_flag(flags, "cool", 10, changed_ago=long_ago, rolled_back_ago=timedelta(minutes=61))
    promoted, promotion = decided(run(config), "cool")
    assert promotion.action is Action.PROMOTE and promoted.applied
    assert flag_keys(flags, "cool")["rollout_percent"] == "50"


def test_a_paused_feature_is_left_alone(flags: redis.Redis, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"paused": None})
    seed_flag(flags, "paused", 10, paused=True)
    before = flag_keys(flags, "paused")

    state = run(config)

    _, hold = decided(state, "paused")
    assert state.is_completed()
    assert (hold.action, hold.guard, hold.proposed) == (Action.HOLD, "paused", Action.PROMOTE)
    assert flag_keys(flags, "paused") == before
    assert audit_entries(flags, "paused") == []


def test_a_dry_run_writes_no_flag_key_but_records_a_recommendation(
    flags: redis.Redis, tmp_path: Path
) -> None:
    config = write_config(tmp_path, {"dry": None})
    seed_flag(flags, "dry", 0)
    before = flag_keys(flags, "dry")

    state = run(config, dry_run=None)  # neither the parameter nor ROLLOUT_DRY_RUN: dry

    outcome, _ = decided(state, "dry")
    assert state.is_completed() and state.message.startswith("dry run:")
    assert (outcome.dry_run, outcome.applied, outcome.result) == (True, False, Action.HOLD)
    assert "recommend promote" in outcome.summary
    assert flag_keys(flags, "dry") == before
    [entry] = audit_entries(flags, "dry")
    assert (entry["dry_run"], entry["action"], entry["new_percent"]) == ("true", "promote", "10")
    [row] = latest_decision_table()
    assert (row["feature"], row["action"], row["before"], row["after"]) == (
        "dry",
        "recommend promote",
        "0%",
        "0%",
    )
    assert "error_rate" in row["slos"] and "healthy" in row["slos"]


def test_a_killed_prometheus_fails_the_run_writes_nothing_and_pushes_prom_unreachable(
    flags: redis.Redis,
    tmp_path: Path,
    prometheus_factory: Callable[..., RunningServer],
    controller_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doomed = prometheus_factory()
    monkeypatch.setenv("PROMETHEUS_BASE_URL", doomed.url)
    doomed.kill()
    config = write_config(tmp_path, {"promdown": None})
    seed_flag(flags, "promdown", 10)
    before = flag_keys(flags, "promdown")

    state = run(config)

    outcome = outcomes_of(state)["promdown"]
    assert state.is_failed()
    assert outcome.status is OutcomeStatus.PROM_UNREACHABLE
    assert "connection refused" in state.message
    assert flag_keys(flags, "promdown") == before
    assert audit_entries(flags, "promdown") == []
    assert fetch_attempts(state) == 4  # the first try and three retries
    totals = pushed_totals(controller_env["PUSHGATEWAY_URL"])
    assert totals.runs == {"prom_unreachable": 1}
    assert totals.changes == {}  # a feature that could not be judged made no decision


def test_a_killed_redis_fails_the_run(
    own_redis: RunningServer,
    controller_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, {"redisdown": None})
    seed_flag(redis.Redis.from_url(own_redis.url), "redisdown", 10)
    monkeypatch.setenv("REDIS_URL", own_redis.url)
    own_redis.kill()

    state = run(config)

    assert state.is_failed()
    assert outcomes_of(state)["redisdown"].status is OutcomeStatus.REDIS_ERROR
    assert "Redis at redis://127.0.0.1" in state.message
    assert pushed_totals(controller_env["PUSHGATEWAY_URL"]).runs == {"redis_error": 1}


class DelegatingStore:
    """The real store; subclasses add a step after reading, where a race would happen."""

    def __init__(self, inner: FlagStore) -> None:
        self.inner = inner

    def after_read(self) -> None:
        raise NotImplementedError

    def read(self, features: Sequence[str]) -> dict[str, FlagState]:
        return self.inner.read(features)

    def read_each(self, features: Sequence[str]) -> dict[str, FlagState | RolloutError]:
        states = self.inner.read_each(features)
        self.after_read()
        return states

    def apply(self, change: FlagChange) -> ApplyResult:
        return self.inner.apply(change)

    def apply_many(self, changes: Sequence[FlagChange]) -> list[ApplyResult | RolloutError]:
        return self.inner.apply_many(changes)

    def set_percent(
        self,
        feature: str,
        percent: float,
        reason: str,
        by: str = "manual",
        *,
        at: datetime,
        rewrite: bool = False,
    ) -> ApplyResult:
        return self.inner.set_percent(feature, percent, reason, by, at=at, rewrite=rewrite)

    def forget_recommendations(self, features: Sequence[str]) -> None:
        self.inner.forget_recommendations(features)


class OperatorRacingStore(DelegatingStore):
    """An operator sets the percent right after the controller read it."""

    def __init__(self, inner: FlagStore, client: redis.Redis, feature: str, percent: str) -> None:
        super().__init__(inner)
        self.client, self.feature, self.percent = client, feature, percent

    def after_read(self) -> None:
        self.client.set(f"flags:{self.feature}:rollout_percent", self.percent)


def test_a_flag_changed_between_read_and_apply_is_held_as_a_concurrent_change(
    flags: redis.Redis, tmp_path: Path
) -> None:
    config = write_config(tmp_path, {"race": None})
    seed_flag(flags, "race", 0)
    real = wire(Settings.from_env())
    racing = OperatorRacingStore(real.store, flags, "race", "50")

    with use_adapters(Adapters(racing, real.source, real.telemetry, real.redis)):
        state = run(config)

    _, hold = decided(state, "race")
    assert state.is_completed()
    assert (hold.action, hold.guard) == (Action.HOLD, "concurrent change")
    assert hold.proposed is Action.PROMOTE and "not overwritten" in hold.reason
    assert flag_keys(flags, "race")["rollout_percent"] == "50"
    assert audit_entries(flags, "race") == []


def test_a_killed_pushgateway_does_not_stop_the_decision(
    flags: redis.Redis, tmp_path: Path, pushgateway: RunningServer
) -> None:
    config = write_config(tmp_path, {"pgwdown": None})
    seed_flag(flags, "pgwdown", 0)
    pushgateway.kill()

    state = run(config)

    assert state.is_completed(), state.message
    assert decided(state, "pgwdown")[0].applied
    assert flag_keys(flags, "pgwdown")["rollout_percent"] == "10"
    assert "warning: telemetry: pushgateway unreachable" in state.message


class BarrierStore(DelegatingStore):
    """Every run waits after reading until the other run has read too, so both decide from
    the same state and race to apply."""

    def __init__(self, inner: FlagStore, barrier: threading.Barrier) -> None:
        super().__init__(inner)
        self.barrier = barrier

    def after_read(self) -> None:
        self.barrier.wait(timeout=60)


def test_two_concurrent_runs_take_at_most_one_step(flags: redis.Redis, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"twice": None})
    seed_flag(flags, "twice", 0)
    barrier = threading.Barrier(2)
    states: list[Any] = []

    def one_run() -> None:
        real = wire(Settings.from_env())
        store = BarrierStore(real.store, barrier)
        with use_adapters(Adapters(store, real.source, real.telemetry, real.redis)):
            states.append(run(config))

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(states) == 2 and all(state.is_completed() for state in states)
    decisions = sorted(
        (decision.guard or "", outcome.applied)
        for outcome, decision in (decided(state, "twice") for state in states)
    )
    assert decisions == [("", True), ("concurrent change", False)]
    assert flag_keys(flags, "twice")["rollout_percent"] == "10"
    assert len(audit_entries(flags, "twice")) == 1


def late_run_of(
    interval_seconds: int | None, config: Path, late: timedelta
) -> tuple[Any, dict[str, Any]]:
    """A flow run scheduled `late` ago, of a deployment with an interval schedule of
    `interval_seconds` (None: a run of no deployment), as a worker that came back finds it.
    The switch is on: a paused deployment's runs are skipped as paused, whatever their lateness."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.states import Scheduled

    parameters = {"dry_run": False, "config_path": str(config)}
    state = Scheduled(scheduled_time=datetime.now(UTC) - late)
    with get_client(sync_client=True) as client:
        if interval_seconds is None:
            return (
                client.create_flow_run(rollout_controller, parameters=parameters, state=state),
                parameters,
            )
        flow_id = client.create_flow(rollout_controller)
        schedule = IntervalSchedule(interval=timedelta(seconds=interval_seconds))
        deployment_id = client.create_deployment(
            flow_id,
            f"late-{interval_seconds}-{uuid.uuid4().hex[:8]}",
            schedules=[DeploymentScheduleCreate(schedule=schedule, active=True)],
            paused=False,
        )
        flow_run = client.create_flow_run_from_deployment(
            deployment_id, parameters=parameters, state=state
        )
    return flow_run, parameters


def test_a_scheduled_run_more_than_two_of_its_deployments_intervals_late_is_skipped(
    flags: redis.Redis, tmp_path: Path
) -> None:
    from prefect.flow_engine import run_flow

    config = write_config(tmp_path, {"late": None})
    seed_flag(flags, "late", 0)
    late_run, parameters = late_run_of(600, config, timedelta(minutes=25))

    # what a worker that comes back does with a missed run
    state = run_flow(rollout_controller, late_run, parameters, return_type="state")

    assert state.is_completed() and state.name == "Skipped"
    assert re.search(r"^skipped: scheduled at .* but started 0:25:\d\d late", state.message)
    assert "more than 2 x 0:10:00" in state.message  # the deployment's interval, not a variable
    assert flag_keys(flags, "late")["rollout_percent"] == "0"
    assert audit_entries(flags, "late") == []


@pytest.mark.parametrize(
    "interval_seconds", [3600, None], ids=["hourly deployment", "no deployment"]
)
def test_a_run_late_by_less_than_two_intervals_or_of_no_deployment_acts(
    flags: redis.Redis, tmp_path: Path, interval_seconds: int | None
) -> None:
    from prefect.flow_engine import run_flow

    config = write_config(tmp_path, {"late": None})
    seed_flag(flags, "late", 0)
    late_run, parameters = late_run_of(interval_seconds, config, timedelta(minutes=25))

    state = run_flow(rollout_controller, late_run, parameters, return_type="state")

    assert state.is_completed() and state.name == "Completed", state.message
    assert flag_keys(flags, "late")["rollout_percent"] == "10"


@pytest.mark.parametrize(
    ("features", "named"),
    [(["nope"], "'nope'"), (["Bad Name"], "'Bad Name'")],
    ids=["unknown feature", "invalid feature name"],
)
def test_a_configuration_error_fails_the_run_naming_the_value_and_writes_nothing(
    flags: redis.Redis, tmp_path: Path, features: list[str], named: str
) -> None:
    config = write_config(tmp_path, {"google": None})
    seed_flag(flags, "google", 0)

    state = run(config, *features)

    assert state.is_failed()
    assert state.message.startswith("configuration error:") and named in state.message
    assert flag_keys(flags, "google")["rollout_percent"] == "0"
    assert not flags.exists("rollout:audit")


def test_a_bad_environment_variable_fails_the_run_as_a_configuration_error(
    flags: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, {"google": None})
    seed_flag(flags, "google", 0)
    monkeypatch.setenv("ROLLOUT_DRY_RUN", "maybe")

    state = run(config, dry_run=None)

    assert state.is_failed()
    assert state.message == (
        "configuration error: ROLLOUT_DRY_RUN is 'maybe'; expected true or false"
    )
    assert flag_keys(flags, "google")["rollout_percent"] == "0"


def test_the_override_sets_the_percent_audited_as_manual_with_its_markdown_log_line(
    flags: redis.Redis, prefect_test_server: None, controller_env: dict[str, str]
) -> None:
    from flows.override import rollout_override

    seed_flag(flags, "override", 10)

    state = rollout_override("override", 50, "incident 42: restore", return_state=True)

    assert state.is_completed(), state.message
    assert flag_keys(flags, "override")["rollout_percent"] == "50"
    [entry] = audit_entries(flags, "override")
    assert (entry["by"], entry["reason"]) == ("manual", "incident 42: restore")
    log = Path(controller_env["ROLLOUT_AUDIT_LOG"]).read_text(encoding="utf-8")
    [line] = [line for line in log.splitlines() if "incident 42: restore" in line]
    assert "override" in line and "manual" in line and "50" in line


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("REDIS_URL", "redis://127.0.0.1:notaport/0", "REDIS_URL 'redis://127.0.0.1:notaport/0'"),
        ("REDIS_URL", "http://127.0.0.1:6379", "REDIS_URL is 'http://127.0.0.1:6379'"),
        ("ROLLOUT_AUDIT_RETENTION", "-5", "ROLLOUT_AUDIT_RETENTION is '-5'"),
    ],
    ids=["bad redis port", "not a redis url", "bad retention"],
)
def test_a_bad_setting_is_a_failed_configuration_error_run_counted_as_error(
    flags: redis.Redis,
    tmp_path: Path,
    controller_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    named: str,
) -> None:
    config = write_config(tmp_path, {"google": None})
    seed_flag(flags, "google", 50)
    monkeypatch.setenv(variable, value)

    state = run(config)

    assert state.is_failed()
    assert state.message.startswith("configuration error: ") and named in state.message
    assert flag_keys(flags, "google")["rollout_percent"] == "50"
    assert not flags.exists("rollout:audit")
    assert pushed_totals(controller_env["PUSHGATEWAY_URL"]).runs == {"error": 1}


def test_a_failed_audit_copy_is_a_warning_and_the_run_and_telemetry_stay_ok(
    flags: redis.Redis,
    tmp_path: Path,
    controller_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_config(tmp_path, {"google": None})
    seed_flag(flags, "google", 0)
    unwritable = tmp_path / "a-directory-not-a-file"
    unwritable.mkdir()
    monkeypatch.setenv("ROLLOUT_AUDIT_LOG", str(unwritable))

    state = run(config)

    assert state.is_completed(), state.message
    assert flag_keys(flags, "google")["rollout_percent"] == "10", state.message
    [entry] = audit_entries(flags, "google")  # the durable record is complete
    assert entry["action"] == "promote"
    [warning] = [line for line in state.message.splitlines() if line.startswith("warning")]
    assert warning.startswith("warning: audit copy: incomplete (google: Markdown log")
    assert "rollout audit --rebuild-log" in warning
    assert pushed_totals(controller_env["PUSHGATEWAY_URL"]).runs == {"ok": 1}


def test_the_override_refuses_a_mistyped_feature_naming_the_known_ones_and_writes_nothing(
    flags: redis.Redis, prefect_test_server: None
) -> None:
    from flows.override import rollout_override

    seed_flag(flags, "google", 50)

    state = rollout_override("googel", 0, "incident 7: roll back", return_state=True)

    assert state.is_failed()
    assert state.message.startswith("googel: not changed: feature 'googel' is not initialised")
    assert "known: " in state.message and "google" in state.message.split("known: ")[1]
    assert "rollout init googel" in state.message
    assert flags.keys("flags:googel:*") == []
    assert audit_entries(flags, "googel") == []
    assert flag_keys(flags, "google")["rollout_percent"] == "50"


@pytest.mark.parametrize(
    ("percent", "reason", "said"),
    [
        (150, "typo", "percent 150 is out of range"),
        (float("nan"), "typo", "percent nan is out of range"),
        (10, "  ", "reason is empty"),
    ],
    ids=["percent out of range", "percent not a number", "empty reason"],
)
def test_the_override_turns_a_bad_parameter_into_a_failed_run_not_an_exception(
    flags: redis.Redis, prefect_test_server: None, percent: float, reason: str, said: str
) -> None:
    from flows.override import rollout_override

    seed_flag(flags, "google", 50)

    state = rollout_override("google", percent, reason, return_state=True)

    assert state.is_failed() and state.message.startswith("google: not changed: " + said)
    assert state.type.value == "FAILED" and state.name == "Failed"
    assert audit_entries(flags, "google") == []


@pytest.mark.parametrize("percent", ["ten", True, False], ids=["a word", "true", "false"])
def test_the_override_with_a_percent_that_is_not_a_number_fails_before_running(
    flags: redis.Redis, prefect_test_server: None, percent: object
) -> None:
    from flows.override import rollout_override

    seed_flag(flags, "google", 50)

    state = rollout_override("google", percent, "typo", return_state=True)  # type: ignore[arg-type]

    assert state.is_failed() and "percent: Input should be a valid number" in state.message
    assert audit_entries(flags, "google") == []


def test_the_override_with_redis_down_is_a_failed_run_saying_so(
    own_redis: RunningServer,
    controller_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    prefect_test_server: None,
) -> None:
    from flows.override import rollout_override

    monkeypatch.setenv("REDIS_URL", own_redis.url)
    own_redis.kill()

    state = rollout_override("google", 0, "incident 7", return_state=True)

    assert state.is_failed()
    assert state.message.startswith("google: not changed: Redis failed: ")


def wait_until_error_ratio_above(prometheus_url: str, feature: str, ratio: float) -> None:
    source = PrometheusSource(prometheus_url, timeout=5)
    spec = FeatureSpec.model_validate({"name": feature, **GMAIL_PROFILE})

    def error_ratio() -> float:
        snapshot = source.fetch([spec], datetime.now(UTC))[feature]
        return getattr(snapshot, "reading", lambda _: None)("error_rate").value or 0.0

    poll(error_ratio, lambda seen: seen > ratio, timeout=20)


def fetch_attempts(state: Any) -> int:
    """How many times the run's fetch_slos task ran, read back from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    def counts() -> Mapping[str, int]:
        with get_client(sync_client=True) as client:
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
                )
            )
        return {run.name: run.run_count for run in task_runs}

    # task runs reach the API through events, which a busy server takes a moment to process
    found = poll(counts, lambda c: any(n.startswith("fetch_slos") for n in c), 30, "fetch_slos")
    return next(count for name, count in found.items() if name.startswith("fetch_slos"))


def latest_decision_table() -> list[dict[str, Any]]:
    """The rows of the newest `rollout-decisions` table artifact."""
    import json

    from prefect.artifacts import Artifact

    artifact = Artifact.get("rollout-decisions")
    assert artifact is not None
    data = artifact.data
    rows = json.loads(data) if isinstance(data, str) else data
    assert isinstance(rows, list)
    return rows
