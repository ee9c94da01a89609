"""The fast abort's writes on a real redis-server: a scheduled pass and an abort pass that read
the same flags race to write (one write, the other a concurrent-change hold, one audit entry),
and two abort runs of one alert episode write once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from rollout_core.abort import Alert, abort_proposals
from rollout_core.config import FeatureSpec
from rollout_core.controller import FeatureOutcome, apply_decisions, check_all_guards, evaluate_all
from rollout_core.flags import RedisFlagStore
from rollout_core.model import Action, SloReading, SloSnapshot
from rollout_core.redis_connection import connect
from rollout_sdk.keys import ABORT_EPISODES_HASH
from tests.integration.conftest import audit_entries, seed_flag

NOW = datetime.now(UTC)
SPEC = FeatureSpec.model_validate(
    {
        "name": "google",
        "abort_on": ["GmailErrorRateFast"],
        "slos": [{"name": "error_rate", "ratio": {"errors": "e", "total": "t"}, "max": 0.01}],
    }
)
HEALTHY = {"google": SloSnapshot("google", {"error_rate": SloReading("error_rate", 0.001, 5000)})}
ALERT = Alert(
    name="GmailErrorRateFast",
    feature="google",
    status="firing",
    fingerprint="c0ffee",
    starts_at="2026-11-30T06:00:00Z",
    labels={"alertname": "GmailErrorRateFast", "rollout_feature": "google"},
    value="0.04",
)


def decide(store: RedisFlagStore, abort: bool) -> tuple[Any, Any]:
    """Read and decide as a run does, without writing yet."""
    states = store.read_each(["google"])
    proposals = evaluate_all([SPEC], HEALTHY, states)
    if abort:
        handled = ["google"] if store.is_episode_handled(ALERT.episode) else []
        proposals = abort_proposals([SPEC], proposals, states, ALERT, handled)
    return check_all_guards([SPEC], states, proposals, NOW), states


def write(store: RedisFlagStore, decided: tuple[Any, Any], abort: bool) -> FeatureOutcome:
    decisions, states = decided
    episodes = {"google": ALERT.episode} if abort else None
    return apply_decisions(store, decisions, states, NOW, False, episodes=episodes)["google"]


def test_a_scheduled_promotion_and_an_abort_from_the_same_read_write_once(redis_url: str) -> None:
    client = connect(redis_url)
    seed_flag(client, "google", 50, changed_ago=timedelta(hours=2))
    scheduled_store, abort_store = RedisFlagStore(connect(redis_url)), RedisFlagStore(client)
    scheduled, abort = decide(scheduled_store, abort=False), decide(abort_store, abort=True)
    assert scheduled[0]["google"].action is Action.PROMOTE
    assert abort[0]["google"].action is Action.ROLLBACK
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(write, abort_store, abort, True)
        second = pool.submit(write, scheduled_store, scheduled, False)
        outcomes = [first.result(), second.result()]
    applied = [o for o in outcomes if o.applied]
    held = [o for o in outcomes if o.conflict]
    assert len(applied) == 1 and len(held) == 1
    assert held[0].decision.guard == "concurrent change"
    assert len(audit_entries(client, "google")) == 1
    assert client.get("flags:google:rollout_percent") == f"{applied[0].decision.to_percent:g}"


def test_two_abort_runs_of_one_episode_write_once(redis_url: str) -> None:
    client: redis.Redis = connect(redis_url)
    seed_flag(client, "google", 50, changed_ago=timedelta(hours=2))
    stores = [RedisFlagStore(connect(redis_url)) for _ in range(2)]
    decided = [decide(store, abort=True) for store in stores]  # both read before either writes
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(
            pool.map(lambda pair: write(pair[0], pair[1], True), zip(stores, decided, strict=True))
        )
    assert sorted((o.applied, o.conflict) for o in outcomes) == [(False, True), (True, False)]
    assert client.get("flags:google:rollout_percent") == "10"
    assert len(audit_entries(client, "google")) == 1
    assert client.hexists(ABORT_EPISODES_HASH, ALERT.episode)
    again = write(stores[0], decide(stores[0], abort=True), True)  # a resend, after the abort
    assert again.decision.action is Action.HOLD and not again.applied
    assert client.get("flags:google:rollout_percent") == "10"
