"""The flag store's seams against a real redis-server: a corrupt history key (it holds
promotions only), a change an operator makes with redis-cli between the read and the write,
a lost reply (through a proxy that drops exactly one), features that are not initialised,
retention, the registry and the change channel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from deployments.ha import start_redis_node
from deployments.servers import RunningServer, require_binary
from rollout_core.config import FeatureSpec
from rollout_core.controller import OutcomeStatus, apply_decisions, run_pass
from rollout_core.flags import AUDIT_STREAM, LAST_WRITE_HASH, RedisFlagStore
from rollout_core.guards import check_guards
from rollout_core.model import Action, Decision, FlagState
from rollout_core.ports import FlagChange
from rollout_core.redis_connection import connect
from rollout_sdk.keys import CHANGES_CHANNEL, FEATURES_REGISTRY
from tests.error_rate_source import ErrorRateSource
from tests.integration.reply_dropping_proxy import ReplyDroppingProxy, reply_dropping_proxy

pytestmark = pytest.mark.integration

AT = datetime(2025, 10, 8, 15, 0, tzinfo=UTC)
ROLLOUT = Path(sys.executable).with_name("rollout")


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = connect(redis_url)
    yield client
    client.close()


@pytest.fixture
def store(client: redis.Redis) -> RedisFlagStore:
    store = RedisFlagStore(client)
    store.init("google", AT)
    return store


@pytest.fixture
def proxy(redis_server: RunningServer, redis_url: str) -> Iterator[ReplyDroppingProxy]:
    with reply_dropping_proxy(redis_server.port) as proxy:
        yield proxy


def redis_cli(url: str, *args: str) -> None:
    subprocess.run([require_binary("redis-cli"), "-u", url, *args], check=True, timeout=10)


def rollout(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": url, "USER": "alice"}
    return subprocess.run(
        [str(ROLLOUT), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def promotion(state: FlagState, new: float = 10) -> FlagChange:
    return FlagChange(
        state.feature,
        state.percent,
        state.paused,
        new,
        "canary healthy",
        "controller",
        AT,
        Action.PROMOTE,
        expected_raw=state.raw,
    )


@pytest.mark.parametrize(
    "operator_command",
    [
        ("SET", "flags:google:enabled", "false"),
        ("SET", "flags:google:internal_only", "false"),  # an audience flip
        ("DEL", "flags:google:internal_only"),
    ],
)
def test_a_redis_cli_change_between_read_and_write_makes_a_promotion_a_conflict(
    store: RedisFlagStore, client: redis.Redis, redis_url: str, operator_command: tuple[str, ...]
) -> None:
    state = store.read(["google"])["google"]
    redis_cli(redis_url, *operator_command)
    entries = client.xlen(AUDIT_STREAM)

    result = store.apply(promotion(state))

    assert result.conflict and not result.applied
    assert client.get("flags:google:rollout_percent") == "0"
    assert client.xlen(AUDIT_STREAM) == entries


def test_the_controller_holds_a_promotion_when_enabled_was_switched_off_meanwhile(
    store: RedisFlagStore, client: redis.Redis, redis_url: str
) -> None:
    states = store.read_each(["google"])
    decision = Decision("google", Action.PROMOTE, 0, 10, ("canary healthy",))
    redis_cli(redis_url, "SET", "flags:google:enabled", "false")

    outcome = apply_decisions(store, {"google": decision}, states, AT, dry_run=False)["google"]

    assert outcome.decision is not None and outcome.decision.guard == "concurrent change"
    assert "flags:google:enabled changed since it was read" in outcome.decision.reason
    assert client.get("flags:google:rollout_percent") == "0"


def test_a_lost_reply_does_not_turn_rollout_set_into_nothing_written(
    store: RedisFlagStore, client: redis.Redis, proxy: ReplyDroppingProxy
) -> None:
    proxy.drop_next_script_reply()

    result = rollout(proxy.url, "set", "google", "10", "--reason", "canary")

    assert proxy.dropped == 1
    assert result.returncode == 0, result.stderr
    (entry_id, fields) = client.xrevrange(AUDIT_STREAM, count=1)[0]
    assert result.stdout.startswith(f"google: 0% -> 10% (audit {entry_id})")
    assert "read back on a new connection: written" in result.stdout
    assert client.get("flags:google:rollout_percent") == "10"
    assert (fields["action"], fields["by"], fields["new_percent"]) == ("promote", "alice", "10")
    assert client.xlen(AUDIT_STREAM) == 2  # init and this change: never resent


def test_a_lost_reply_does_not_turn_the_controllers_change_into_a_concurrent_change(
    redis_url: str, client: redis.Redis, proxy: ReplyDroppingProxy
) -> None:
    RedisFlagStore(client).init("google", AT)
    RedisFlagStore(client).init("slack", AT)
    via_proxy = connect(proxy.url)
    store = RedisFlagStore(via_proxy)
    states = store.read_each(["google", "slack"])
    decisions = {
        name: Decision(name, Action.PROMOTE, 0, 10, ("canary healthy",))
        for name in ("google", "slack")
    }
    proxy.drop_next_script_reply()

    outcomes = apply_decisions(store, decisions, states, AT, dry_run=False)

    assert proxy.dropped == 1
    for name in ("google", "slack"):
        outcome = outcomes[name]
        assert outcome.status is OutcomeStatus.OK and outcome.applied, outcome.summary
        assert outcome.decision is not None and outcome.decision.guard is None
        assert client.get(f"flags:{name}:rollout_percent") == "10"
        _, _, audit_id = client.hget(LAST_WRITE_HASH, name).partition(" ")
        assert outcome.audit_id == audit_id
    via_proxy.close()


def test_a_change_recovered_after_a_lost_reply_is_remembered_like_any_applied_change(
    client: redis.Redis, proxy: ReplyDroppingProxy
) -> None:
    RedisFlagStore(client).init("google", AT)
    # short timeouts: the read-back waits past the write's deadline (its socket timeout)
    store = RedisFlagStore(connect_short(proxy.port))
    state = store.read(["google"])["google"]
    proxy.drop_next_script_reply()

    result = store.apply(promotion(state))

    assert proxy.dropped == 1
    assert result.recovered and result.applied and result.audit_id, result
    assert client.get("flags:google:rollout_percent") == "10"
    # the store's write memory: a failover that loses this change is refused later
    assert store.last_applied.get("google") == result.audit_id, store.last_applied


def test_a_recovered_change_no_replica_acknowledged_is_reported_unconfirmed(
    tmp_path: Path,
) -> None:
    primary = start_redis_node(tmp_path / "primary")
    replica = start_redis_node(tmp_path / "replica", replica_of=primary.port)
    try:
        with reply_dropping_proxy(primary.port) as proxy:
            store = RedisFlagStore(connect_short(proxy.port), wait_timeout_ms=200)
            store.init("google", AT)
            state = store.read(["google"])["google"]
            os.kill(replica.process.pid, signal.SIGSTOP)  # connected, acknowledges nothing
            try:
                proxy.drop_next_script_reply()
                recovered = store.apply(promotion(state))
                plain = store.set_percent("google", 50, "ramp", at=AT)  # no loss: WAIT 1
            finally:
                os.kill(replica.process.pid, signal.SIGCONT)
            assert recovered.recovered and recovered.applied, recovered
            assert plain.applied and plain.unconfirmed
            assert recovered.unconfirmed, "recovered, never confirmed, reported as confirmed"
            assert "no replica acknowledged it within 200 ms" in recovered.message

            # with the replica answering, the same recovery is confirmed by WAIT 1
            store.wait_timeout_ms = 10_000  # generous: a loaded machine acknowledges slowly
            state = store.read(["google"])["google"]
            proxy.drop_next_script_reply()
            again = store.apply(promotion(state, 100))
        assert again.recovered and again.applied and not again.unconfirmed, again
    finally:
        replica.stop()
        primary.stop()


def connect_short(port: int) -> redis.Redis:
    """A client whose write deadline (its socket timeout) is short, so a read-back is quick."""
    return redis.Redis(port=port, decode_responses=True, socket_timeout=1.0)


def test_while_redis_is_gone_after_a_lost_reply_the_outcome_is_unknown(
    own_redis: RunningServer,
) -> None:
    client = connect(own_redis.url)
    RedisFlagStore(client).init("google", AT)
    with reply_dropping_proxy(own_redis.port) as proxy:
        store = RedisFlagStore(connect(proxy.url))
        state = store.read(["google"])["google"]
        proxy.drop_next_script_reply()
        original = store._cas

        def run_then_stop_redis(*args: object, **kwargs: object) -> object:
            try:
                return original(*args, **kwargs)
            finally:
                own_redis.stop()

        store._cas = run_then_stop_redis  # type: ignore[method-assign]
        result = store.apply(promotion(state))

    assert proxy.dropped == 1
    assert result.unknown and not result.applied and not result.conflict
    assert "outcome unknown" in result.message and "`rollout audit google`" in result.message


def test_a_mistyped_feature_exits_2_names_the_known_ones_and_writes_nothing(
    store: RedisFlagStore, client: redis.Redis, redis_url: str
) -> None:
    keys = sorted(client.keys("*"))
    for args in (
        ("set", "googel", "0", "--reason", "incident"),
        ("pause", "googel"),
        ("audience", "googel", "public"),
    ):
        result = rollout(redis_url, *args)
        assert result.returncode == 2, result.stderr
        assert "feature 'googel' is not initialised" in result.stderr
        assert "known: google; run `rollout init googel` if it is new" in result.stderr
    assert sorted(client.keys("*")) == keys


def test_the_audit_stream_is_trimmed_approximately_to_the_retention(client: redis.Redis) -> None:
    store = RedisFlagStore(client, audit_retention=50)
    store.init("google", AT)
    for step in range(400):
        store.set_paused("google", step % 2 == 0, "flap", "alice", AT)
    length = client.xlen(AUDIT_STREAM)
    assert 50 <= length < 401 - 50  # approximate: whole stream nodes are dropped
    assert client.xrevrange(AUDIT_STREAM, count=1)[0][1]["action"] in ("pause", "resume")


def test_every_audited_change_publishes_the_feature_and_registers_it(
    store: RedisFlagStore, client: redis.Redis
) -> None:
    listener = client.pubsub()
    listener.subscribe(CHANGES_CHANNEL)
    assert listener.get_message(timeout=5)["type"] == "subscribe"

    store.init("slack", AT)
    store.set_paused("google", True, "incident", "alice", AT)
    store.set_paused("google", True, "incident", "alice", AT)  # no change: nothing published
    store.apply(promotion(store.read(["slack"])["slack"]))

    heard = []
    while (message := listener.get_message(timeout=1)) is not None:
        heard.append(message["data"])
    listener.close()
    assert heard == ["slack", "google", "slack"]
    assert client.smembers(FEATURES_REGISTRY) == {"google", "slack"}


def ratio_spec(name: str) -> FeatureSpec:
    return FeatureSpec.model_validate(
        {
            "name": name,
            "slos": [
                {
                    "name": "error_rate",
                    "ratio": {"errors": f"errors_{name}", "total": f"total_{name}"},
                    "max": 0.01,
                    "min_samples": 100,
                }
            ],
        }
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("last_percent", "fifty"),
        ("last_change_time", "yesterday"),
        ("last_rollback_time", "2025-13-45"),
        ("internal_only", "maybe"),
    ],
)
def test_a_corrupt_history_key_does_not_block_a_rollback(
    client: redis.Redis, redis_url: str, key: str, value: str
) -> None:
    store = RedisFlagStore(client)
    store.init("google", AT)
    store.set_percent("google", 100, "full rollout", "alice", at=AT)
    redis_cli(redis_url, "SET", f"flags:google:{key}", value)

    outcome = run_pass(
        [ratio_spec("google")], store, ErrorRateSource(0.2, 2000), AT, dry_run=False
    )["google"]

    assert outcome.status is OutcomeStatus.OK and outcome.applied, outcome.summary
    assert outcome.decision is not None and outcome.decision.action is Action.ROLLBACK
    assert client.get("flags:google:rollout_percent") == "10"
    assert f"warning: flags:google:{key} is {value!r}" in outcome.decision.reason


def test_a_corrupt_history_key_holds_a_promotion_naming_it(client: redis.Redis) -> None:
    store = RedisFlagStore(client)
    store.init("google", AT)
    client.set("flags:google:last_percent", "fifty")
    state = store.read(["google"])["google"]
    decision = check_guards(
        ratio_spec("google"),
        state,
        Decision("google", Action.PROMOTE, 0, 10, ("all SLOs healthy",)),
        AT,
    )
    assert (decision.action, decision.guard) == (Action.HOLD, "history")
    assert "flags:google:last_percent is 'fifty'" in decision.reasons[0]


@pytest.mark.parametrize("key", ["rollout_percent", "enabled", "paused"])
def test_a_corrupt_key_a_rollback_needs_holds_the_feature_as_a_config_error(
    client: redis.Redis, key: str
) -> None:
    store = RedisFlagStore(client)
    store.init("google", AT)
    store.set_percent("google", 50, "ramp", "alice", at=AT)
    client.set(f"flags:google:{key}", "garbled")
    outcome = run_pass(
        [ratio_spec("google")], store, ErrorRateSource(0.2, 2000), AT, dry_run=False
    )["google"]
    assert outcome.status is OutcomeStatus.CONFIG_ERROR
    assert f"flags:google:{key} is 'garbled'" in (outcome.error or "")


def test_a_dry_run_controller_appends_an_unchanged_recommendation_once(
    store: RedisFlagStore, client: redis.Redis
) -> None:
    spec = ratio_spec("google")
    store.set_percent("google", 50, "ramp", "alice", at=AT)
    entries = client.xlen(AUDIT_STREAM)
    for _ in range(3):
        outcome = run_pass([spec], store, ErrorRateSource(0.2, 2000), AT, dry_run=True)["google"]
        assert outcome.dry_run and outcome.decision is not None
        assert outcome.decision.action is Action.ROLLBACK
    assert client.xlen(AUDIT_STREAM) == entries + 1
    assert client.get("flags:google:rollout_percent") == "50"


def test_switching_an_absent_audience_to_public_changes_nothing(
    store: RedisFlagStore, client: redis.Redis, redis_url: str
) -> None:
    store.set_percent("google", 50, "ramp", "alice", at=AT)
    redis_cli(redis_url, "DEL", "flags:google:internal_only")
    entries = client.xlen(AUDIT_STREAM)
    result = rollout(redis_url, "audience", "google", "public")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "google: audience already public; nothing written\n"
    assert client.get("flags:google:rollout_percent") == "50"
    assert client.xlen(AUDIT_STREAM) == entries


def test_rollout_set_repairs_a_percent_written_wrong_with_redis_cli(
    store: RedisFlagStore, client: redis.Redis, redis_url: str
) -> None:
    redis_cli(redis_url, "SET", "flags:google:rollout_percent", "fifty")
    result = rollout(redis_url, "set", "google", "10", "--reason", "repair")
    assert result.returncode == 0, result.stderr
    assert client.get("flags:google:rollout_percent") == "10"
    fields = client.xrevrange(AUDIT_STREAM, count=1)[0][1]
    assert (fields["old_percent"], fields["new_percent"], fields["by"]) == ("fifty", "10", "alice")
