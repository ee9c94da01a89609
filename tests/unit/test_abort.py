"""The fast abort's decision: a firing `abort_on` alert is a breach by itself, the guards and
dry run still apply, and one alert episode aborts at most once (real store on fakeredis)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest

from rollout_core.abort import (
    ALERT_FIRING_EVENT,
    EPISODE_HANDLED_GUARD,
    Alert,
    InvalidAlertPayload,
    abort_proposals,
    alert_event,
    ignore_reason,
    parse_alert,
    parse_webhook,
)
from rollout_core.config import FeatureSpec, parse_config
from rollout_core.controller import apply_decisions, check_all_guards, evaluate_all
from rollout_core.errors import ConfigError
from rollout_core.flags import AUDIT_STREAM, LAST_WRITE_HASH, RedisFlagStore
from rollout_core.model import Action, SloReading, SloSnapshot
from rollout_sdk.keys import ABORT_EPISODES_HASH

NOW = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
FINGERPRINT = "3f2a9c1d5e6b7a80"
STARTS_AT = "2026-11-30T05:59:30Z"


def spec(**extra: Any) -> FeatureSpec:
    return FeatureSpec.model_validate(
        {
            "name": "google",
            "abort_on": ["GmailErrorRateFast"],
            "slos": [
                {"name": "error_rate", "ratio": {"errors": "e", "total": "t"}, "max": 0.01},
            ],
            **extra,
        }
    )


def alert(name: str = "GmailErrorRateFast", **extra: Any) -> Alert:
    fields: dict[str, Any] = {
        "name": name,
        "feature": "google",
        "status": "firing",
        "fingerprint": FINGERPRINT,
        "starts_at": STARTS_AT,
        "labels": {"alertname": name, "rollout_feature": "google", "severity": "page"},
        "value": "0.08",
    }
    fields.update(extra)
    return Alert(**fields)


def webhook(*alerts: dict[str, Any], version: Any = "4") -> dict[str, Any]:
    return {
        "version": version,
        "status": "firing",
        "receiver": "rollout-bridge",
        "alerts": list(alerts),
    }


def am_alert(status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "GmailErrorRateFast", "rollout_feature": "google", **labels},
        "annotations": {"value": "0.08"},
        "startsAt": STARTS_AT,
        "fingerprint": FINGERPRINT,
    }


@pytest.fixture
def client() -> Iterator[fakeredis.FakeRedis]:
    redis = fakeredis.FakeRedis(decode_responses=True)
    yield redis
    redis.flushall()


@pytest.fixture
def store(client: fakeredis.FakeRedis) -> RedisFlagStore:
    return RedisFlagStore(client)


def seed(client: fakeredis.FakeRedis, percent: str = "50", **keys: str) -> None:
    client.set("flags:google:rollout_percent", percent)
    client.set("flags:google:enabled", "true")
    client.set("flags:google:last_change_time", (NOW - timedelta(minutes=1)).isoformat())
    for field, value in keys.items():
        client.set(f"flags:google:{field}", value)


def abort_pass(
    store: RedisFlagStore, the_alert: Alert, reading: SloReading, *, dry_run: bool = False
) -> Any:
    """The abort run's steps, as flows/controller.py calls them."""
    specs = [spec()]
    states = store.read_each(["google"])
    snapshots = {"google": SloSnapshot("google", {"error_rate": reading})}
    proposals = evaluate_all(specs, snapshots, states)
    handled = ["google"] if store.is_episode_handled(the_alert.episode) else []
    proposals = abort_proposals(specs, proposals, states, the_alert, handled)
    decisions = check_all_guards(specs, states, proposals, NOW)
    episodes = {"google": the_alert.episode}
    return apply_decisions(store, decisions, states, NOW, dry_run, episodes=episodes)["google"]


HEALTHY = SloReading("error_rate", 0.001, 5000)
TOO_FEW = SloReading("error_rate", 0.0, 20)


def test_a_firing_listed_alert_rolls_back_to_the_safe_step_even_with_healthy_slos(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    seed(client)
    outcome = abort_pass(store, alert(), HEALTHY)
    assert outcome.applied and outcome.decision.action is Action.ROLLBACK
    assert client.get("flags:google:rollout_percent") == "10"
    names = [v.name for v in outcome.decision.verdicts]
    assert names == ["alert:GmailErrorRateFast", "error_rate"]  # the SLOs are still recorded
    [(_, entry)] = client.xrange(AUDIT_STREAM)
    assert "alert:GmailErrorRateFast firing since 2026-11-30T05:59:30Z" in entry["reason"]
    assert 'severity="page"' in entry["reason"] and "value 0.08" in entry["reason"]


def test_the_abort_rolls_back_a_feature_whose_last_write_a_failover_lost(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    seed(client)
    promoted = store.set_percent("google", 100, "ramp", at=NOW - timedelta(minutes=5))
    assert promoted.applied and store.last_applied["google"] == promoted.audit_id
    # the new master never got that promotion: it holds 50% and an older last write
    client.set("flags:google:rollout_percent", "50")
    client.hset(LAST_WRITE_HASH, "google", "an-older-write 1-0")

    outcome = abort_pass(store, alert(), HEALTHY)

    assert outcome.applied and outcome.decision.action is Action.ROLLBACK, outcome.summary
    assert client.get("flags:google:rollout_percent") == "10"
    [history] = [g for g in outcome.decision.guards if g.name == "history"]
    assert not history.blocks and "Redis lost that write" in history.message


def test_the_abort_is_not_delayed_by_dwell_cooldown_or_freeze(
    client: fakeredis.FakeRedis,
) -> None:
    seed(client, last_rollback_time=(NOW - timedelta(minutes=2)).isoformat())
    frozen = spec(freeze=[{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}])
    store = RedisFlagStore(client)
    states = store.read_each(["google"])
    snapshots = {"google": SloSnapshot("google", {"error_rate": TOO_FEW})}
    proposals = abort_proposals(
        [frozen], evaluate_all([frozen], snapshots, states), states, alert()
    )
    decision = check_all_guards([frozen], states, proposals, NOW)["google"]
    assert decision.action is Action.ROLLBACK and decision.to_percent == 10


@pytest.mark.parametrize("key", ["paused", "enabled"])
def test_a_paused_or_disabled_feature_stays_unchanged(
    store: RedisFlagStore, client: fakeredis.FakeRedis, key: str
) -> None:
    seed(client, **{key: "true" if key == "paused" else "false"})
    outcome = abort_pass(store, alert(), HEALTHY)
    assert outcome.decision.action is Action.HOLD and outcome.decision.proposed is Action.ROLLBACK
    assert client.get("flags:google:rollout_percent") == "50"
    assert not client.exists(ABORT_EPISODES_HASH)


def test_a_dry_run_only_recommends_and_keeps_the_episode_open(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    seed(client)
    outcome = abort_pass(store, alert(), HEALTHY, dry_run=True)
    assert outcome.dry_run and not outcome.applied
    assert client.get("flags:google:rollout_percent") == "50"
    [(_, entry)] = client.xrange(AUDIT_STREAM)
    assert entry["dry_run"] == "true" and entry["action"] == "rollback"
    assert not client.exists(ABORT_EPISODES_HASH)


def test_a_resent_episode_changes_nothing_more(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    seed(client)
    abort_pass(store, alert(), HEALTHY)
    assert client.get("flags:google:rollout_percent") == "10"
    again = abort_pass(store, alert(), SloReading("error_rate", 0.2, 5000))
    assert again.decision.action is Action.HOLD and again.decision.guard == EPISODE_HANDLED_GUARD
    assert client.get("flags:google:rollout_percent") == "10"  # not 10 -> 0
    assert len(client.xrange(AUDIT_STREAM)) == 1
    assert "error_rate" in again.decision.reason  # the SLOs are still read and recorded


def test_a_new_episode_of_the_same_alert_aborts_again(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    seed(client)
    abort_pass(store, alert(), HEALTHY)
    later = alert(starts_at="2026-11-30T07:00:00Z")
    assert abort_pass(store, later, HEALTHY).applied
    assert client.get("flags:google:rollout_percent") == "0"


def test_an_episode_recorded_between_read_and_write_is_a_conflict_in_the_script(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    seed(client)
    client.hset(ABORT_EPISODES_HASH, alert().episode, "elsewhere")
    specs = [spec()]
    states = store.read_each(["google"])
    snapshots = {"google": SloSnapshot("google", {"error_rate": HEALTHY})}
    proposals = abort_proposals(
        specs, evaluate_all(specs, snapshots, states), states, alert(), handled=()
    )
    decisions = check_all_guards(specs, states, proposals, NOW)
    outcome = apply_decisions(
        store, decisions, states, NOW, False, episodes={"google": alert().episode}
    )["google"]
    assert outcome.conflict and not outcome.applied
    assert "already aborted google" in outcome.decision.reason
    assert client.get("flags:google:rollout_percent") == "50"


def test_two_concurrent_aborts_write_once_and_the_other_is_a_conflict(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    seed(client)
    specs = [spec()]
    snapshots = {"google": SloSnapshot("google", {"error_rate": HEALTHY})}
    runs = []
    for _ in range(2):  # both read before either writes
        states = store.read_each(["google"])
        handled = ["google"] if store.is_episode_handled(alert().episode) else []
        proposals = abort_proposals(
            specs, evaluate_all(specs, snapshots, states), states, alert(), handled
        )
        runs.append((check_all_guards(specs, states, proposals, NOW), states))
    episodes = {"google": alert().episode}
    first, second = (
        apply_decisions(store, d, s, NOW, False, episodes=episodes)["google"] for d, s in runs
    )
    assert first.applied and second.conflict
    assert len(client.xrange(AUDIT_STREAM)) == 1


def test_an_alert_not_in_abort_on_or_for_an_unconfigured_feature_is_ignored() -> None:
    assert "not in google's abort_on (listed: GmailErrorRateFast)" in str(
        ignore_reason(spec(), alert("SomethingElse"))
    )
    assert "not configured" in str(ignore_reason(None, alert()))
    assert "resolved" in str(ignore_reason(spec(), alert(status="resolved")))
    assert ignore_reason(spec(), alert()) is None


def test_abort_on_is_validated_and_read_from_the_config() -> None:
    text = """
features:
  google:
    abort_on: [GmailErrorRateFast]
    slos: [{name: error_rate, ratio: {errors: e, total: t}, max: 0.01}]
"""
    assert parse_config(text).feature("google").abort_on == ("GmailErrorRateFast",)
    with pytest.raises(ConfigError, match="abort_on"):
        parse_config(text.replace("[GmailErrorRateFast]", "['not an alert!']"))
    with pytest.raises(ConfigError, match="abort_on"):
        parse_config(f"profiles:\n  p:\n    abort_on: [X]\n{text}")


def test_webhook_alerts_with_the_feature_label_become_alerts() -> None:
    [found] = parse_webhook(webhook(am_alert(severity="page"), {**am_alert(), "labels": {}}))
    assert found.feature == "google" and found.value == "0.08"
    assert found.episode == f"google|GmailErrorRateFast|{FINGERPRINT}|{STARTS_AT}"
    event = alert_event(found)
    assert event["event"] == ALERT_FIRING_EVENT
    assert event["resource"]["prefect.resource.id"] == "rollout.feature.google"
    assert parse_alert(event["payload"]["alert"]) == found
    [resolved] = parse_webhook(webhook(am_alert("resolved")))
    assert alert_event(resolved)["event"] == "rollout.alert.resolved"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "expected a JSON object"),
        (webhook(version="3"), "version is '3'"),
        ({"version": "4", "alerts": "x"}, "alerts is 'x'"),
        (webhook("x"), r"alerts\[0\] is 'x'"),
        (webhook({**am_alert(), "labels": {"rollout_feature": 5}}), r"alerts\[0\].labels"),
        (webhook({**am_alert(), "status": "odd"}), "expected firing or resolved"),
        (webhook({**am_alert(), "fingerprint": None}), r"alerts\[0\].fingerprint is missing"),
        (webhook(am_alert(rollout_feature="../x")), "expected a feature name"),
    ],
)
def test_a_bad_webhook_names_the_field(body: Any, message: str) -> None:
    with pytest.raises(InvalidAlertPayload, match=message):
        parse_webhook(body)


def test_a_bad_alert_parameter_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"alert\.fingerprint is missing"):
        parse_alert({"name": "A", "feature": "google", "starts_at": STARTS_AT})
    with pytest.raises(ConfigError, match="expected an alert object"):
        parse_alert("google")


def segmented_abort(client: fakeredis.FakeRedis, the_alert: Alert) -> dict[str, Any]:
    """An abort pass over google segmented by region (all at 50%, healthy), as the flow runs it."""
    from rollout_core.abort import aborted_units
    from rollout_core.config import expand_segments
    from tests.unit.test_segments import HEALTHY as HEALTHY_REGIONS
    from tests.unit.test_segments import REGIONS, segmented
    from tests.unit.test_segments import seed as seed_segments

    seed_segments(client, dict.fromkeys(REGIONS, "50"))
    store = RedisFlagStore(client)
    specs = expand_segments([segmented(order="parallel").model_copy(update={"abort_on": ("A",)})])
    names = [s.name for s in specs]
    states = store.read_each(names)
    snapshots = {
        s.name: SloSnapshot(s.name, {"error_rate": SloReading("error_rate", HEALTHY_REGIONS[r])})
        for s, r in zip(specs, REGIONS, strict=True)
    }
    episodes = {u: the_alert.episode_of(u) for u in aborted_units(specs, the_alert)}
    handled = [u for u, e in episodes.items() if store.is_episode_handled(e)]
    proposals = abort_proposals(
        specs, evaluate_all(specs, snapshots, states), states, the_alert, handled
    )
    decisions = check_all_guards(specs, states, proposals, NOW)
    apply_decisions(store, decisions, states, NOW, False, episodes=episodes)
    return {r: client.get(f"flags:google:segment:{r}:rollout_percent") for r in REGIONS}


def test_an_alert_with_a_segments_label_aborts_that_segment_only(
    client: fakeredis.FakeRedis,
) -> None:
    labelled = alert(
        "A", labels={"alertname": "A", "rollout_feature": "google", "region": "eu-west"}
    )
    percents = segmented_abort(client, labelled)
    assert percents == {"eu-canary": "50", "eu-west": "10", "us-east": "50"}
    [episode] = client.hkeys(ABORT_EPISODES_HASH)
    assert episode.startswith("google[eu-west]|A|")


def test_an_alert_without_the_segment_label_aborts_every_segment_once(
    client: fakeredis.FakeRedis,
) -> None:
    percents = segmented_abort(client, alert("A", labels={"rollout_feature": "google"}))
    assert percents == {"eu-canary": "10", "eu-west": "10", "us-east": "10"}
    assert len(client.hkeys(ABORT_EPISODES_HASH)) == 3
    again = segmented_abort(client, alert("A", labels={"rollout_feature": "google"}))
    assert again == {"eu-canary": "50", "eu-west": "50", "us-east": "50"}  # re-seeded, held
