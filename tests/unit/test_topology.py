"""Sentinel addressing, the durability warning and the lost-write refusal, without servers
(the real Sentinel failover is in tests/integration/test_redis_sentinel.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import fakeredis
import pytest

from rollout_core.bootstrap import Settings
from rollout_core.config import FeatureSpec
from rollout_core.controller import FeatureOutcome, OutcomeStatus, run_pass, unconfirmed_warning
from rollout_core.errors import ConfigError
from rollout_core.flags import LAST_WRITE_HASH, RedisFlagStore
from rollout_core.model import Action, FlagState
from rollout_core.redis_connection import RETRIES, confirm_replicated, connect, describe
from rollout_core.telemetry import Totals, registry_for
from rollout_core.urls import redact_url
from rollout_sdk.sentinel import SentinelAddress, parse_sentinel_url, sentinel_url
from tests.error_rate_source import ErrorRateSource

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def test_a_sentinel_url_names_the_sentinels_the_service_the_db_and_the_password() -> None:
    address = parse_sentinel_url("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380/rollout/2")
    assert address == SentinelAddress(
        (("10.0.0.1", 26379), ("10.0.0.2", 26380)), "rollout", 2, "s3cret", None
    )
    assert address.redacted() == "redis+sentinel://:****@10.0.0.1:26379,10.0.0.2:26380/rollout/2"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis+sentinel://10.0.0.1/rollout", "not host:port"),
        ("redis+sentinel://10.0.0.1:26379/", "names no service"),
        ("redis+sentinel:///rollout/0", "names no Sentinel"),
        ("redis+sentinel://10.0.0.1:26379/rollout/x", "is not a number"),
    ],
)
def test_a_bad_sentinel_url_is_refused_with_the_expected_form(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as error:
        parse_sentinel_url(url)
    assert "redis+sentinel://[user:password@]host:port" in str(error.value)


def test_redis_sentinels_and_the_service_make_the_controllers_redis_target() -> None:
    settings = Settings.from_env(
        {
            "REDIS_URL": "redis://default:pw@ignored:6379/3",
            "REDIS_SENTINELS": "127.0.0.1:26379, 127.0.0.1:26380",
            "REDIS_SENTINEL_SERVICE": "rollout",
        }
    )
    assert settings.redis_target() == sentinel_url(
        "127.0.0.1:26379,127.0.0.1:26380", "rollout", 3, "pw", "default"
    )
    assert Settings.from_env({}).redis_target() == "redis://127.0.0.1:6379/0"


def test_sentinels_without_a_service_name_are_a_config_error_naming_the_variable() -> None:
    settings = Settings.from_env({"REDIS_SENTINELS": "127.0.0.1:26379"})
    with pytest.raises(ConfigError, match="REDIS_SENTINEL_SERVICE is unset"):
        settings.redis_target()


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"REDIS_SENTINELS": "127.0.0.1"}, "REDIS_SENTINELS"),
        ({"REDIS_URL": "redis+sentinel://127.0.0.1:26379/"}, "REDIS_URL"),
        ({"ROLLOUT_REDIS_WAIT_MS": "0"}, "ROLLOUT_REDIS_WAIT_MS"),
    ],
)
def test_a_bad_sentinel_setting_is_a_config_error_naming_it(
    environ: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(environ)


SENTINELS = "127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381"


def target_or_error(environ: dict[str, str]) -> str:
    try:
        return Settings.from_env(environ).redis_target()
    except ConfigError as error:
        return f"ConfigError: {error}"


def test_the_database_of_a_sentinel_redis_url_is_honoured_with_redis_sentinels_set() -> None:
    environ = {
        "REDIS_URL": f"redis+sentinel://{SENTINELS}/rollout/2",  # what the services read
        "REDIS_SENTINELS": SENTINELS,
        "REDIS_SENTINEL_SERVICE": "rollout",
    }
    assert target_or_error(environ) == f"redis+sentinel://{SENTINELS}/rollout/2"


@pytest.mark.parametrize(
    ("redis_url", "complaint"),
    [
        (f"redis+sentinel://{SENTINELS}/payments/0", "names the Sentinel service 'payments'"),
        ("redis+sentinel://10.0.0.9:26379/rollout/0", "names other Sentinels than"),
    ],
)
def test_redis_url_and_redis_sentinels_naming_different_masters_is_an_error_naming_both(
    redis_url: str, complaint: str
) -> None:
    environ = {
        "REDIS_URL": redis_url,
        "REDIS_SENTINELS": SENTINELS,
        "REDIS_SENTINEL_SERVICE": "rollout",
    }
    got = target_or_error(environ)
    assert got.startswith("ConfigError: REDIS_URL") and complaint in got, got
    assert "REDIS_SENTINEL" in got and "unset REDIS_SENTINELS" in got, got


def test_a_non_numeric_database_in_redis_url_is_refused_with_sentinels_as_without() -> None:
    for environ in (
        {"REDIS_URL": "redis://127.0.0.1:6379/abc"},
        {
            "REDIS_URL": "redis://127.0.0.1:6379/abc",
            "REDIS_SENTINELS": SENTINELS,
            "REDIS_SENTINEL_SERVICE": "rollout",
        },
    ):
        got = target_or_error(environ)
        assert got.startswith("ConfigError: REDIS_URL is") and "'abc' is not a number" in got
    with pytest.raises(ConfigError, match="'abc' is not a number"):
        connect("redis://127.0.0.1:6379/abc")  # redis-py alone would use database 0


def test_the_acl_user_of_redis_url_reaches_the_master_through_the_sentinels() -> None:
    environ = {
        "REDIS_URL": "redis://alice:s3cret@127.0.0.1:6379/3",
        "REDIS_SENTINELS": SENTINELS,
        "REDIS_SENTINEL_SERVICE": "rollout",
    }
    client = connect(Settings.from_env(environ).redis_target())
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs.get("username"), kwargs.get("password"), kwargs.get("db")) == (
        "alice",
        "s3cret",
        3,
    )
    assert describe(client) == f"redis+sentinel://alice:****@{SENTINELS}/rollout/3"


@pytest.mark.parametrize(
    ("variable", "environ"),
    [
        ("REDIS_SENTINELS", {"REDIS_SENTINELS": ",", "REDIS_SENTINEL_SERVICE": "rollout"}),
        (
            "REDIS_SENTINEL_SERVICE",
            {"REDIS_SENTINELS": SENTINELS, "REDIS_SENTINEL_SERVICE": "roll/out"},
        ),
    ],
)
def test_a_bad_sentinel_variable_is_reported_under_its_own_name(
    variable: str, environ: dict[str, str]
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ).redis_target()
    assert str(raised.value).startswith(f"{variable} is "), raised.value


def test_the_sentinel_password_goes_to_the_sentinels_only_and_is_never_shown() -> None:
    environ = {
        "REDIS_URL": "redis://:master-pw@127.0.0.1:6379/0",
        "REDIS_SENTINELS": SENTINELS,
        "REDIS_SENTINEL_SERVICE": "rollout",
        "REDIS_SENTINEL_PASSWORD": "sentinel-pw",
    }
    settings = Settings.from_env(environ)
    assert "sentinel-pw" not in repr(settings)
    target = settings.redis_target()
    assert parse_sentinel_url(target).sentinel_password == "sentinel-pw"
    client = connect(target)
    assert client.connection_pool.connection_kwargs["password"] == "master-pw"
    sentinels = client.connection_pool.sentinel_manager.sentinels
    assert {s.connection_pool.connection_kwargs.get("password") for s in sentinels} == {
        "sentinel-pw"
    }
    shown = describe(client) + redact_url(target) + parse_sentinel_url(target).redacted()
    assert "sentinel-pw" not in shown and "master-pw" not in shown, shown
    assert describe(client).endswith("/rollout/0?sentinel_password=****")
    # the same password in REDIS_URL's query, with a redis+sentinel:// REDIS_URL alone
    alone = Settings.from_env(
        {"REDIS_URL": f"redis+sentinel://{SENTINELS}/rollout/0", "REDIS_SENTINEL_PASSWORD": "x"}
    )
    assert parse_sentinel_url(alone.redis_target()).sentinel_password == "x"


def test_sentinel_connections_get_the_callers_retry_budget() -> None:
    client = connect(f"redis+sentinel://{SENTINELS}/rollout/0")
    assert client.connection_pool.connection_kwargs["retry"].get_retries() == RETRIES
    for sentinel in client.connection_pool.sentinel_manager.sentinels:
        # redis-py's default would be 10 retries per unreachable Sentinel
        assert sentinel.connection_pool.connection_kwargs["retry"].get_retries() == RETRIES
        assert sentinel.connection_pool.connection_kwargs["socket_timeout"] == 5.0


def test_a_sentinel_client_and_its_write_copy_both_follow_the_service() -> None:
    client = connect("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/rollout/1")
    store = RedisFlagStore(client)
    for each in (client, store.writer):
        assert describe(each) == "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/rollout/1"
    assert store.writer.connection_pool.service_name == "rollout"
    assert store.writer.connection_pool is not client.connection_pool


def test_a_server_without_replicas_is_not_waited_for() -> None:
    assert confirm_replicated(fakeredis.FakeRedis(), 10) is None


def test_the_run_warns_of_each_unconfirmed_change_by_name() -> None:
    outcomes = {
        "google": FeatureOutcome("google", OutcomeStatus.OK, applied=True, unconfirmed=True),
        "outlook": FeatureOutcome("outlook", OutcomeStatus.OK, applied=True),
    }
    warning = unconfirmed_warning(outcomes)
    assert warning is not None and "google" in warning and "outlook" not in warning
    assert unconfirmed_warning({"outlook": outcomes["outlook"]}) is None


def test_unconfirmed_writes_are_pushed_as_a_counter_per_feature() -> None:
    totals = Totals(changes={("google", str(Action.PROMOTE)): 1}, unconfirmed={"google": 2})
    value = registry_for(totals).get_sample_value(
        "rollout_controller_unconfirmed_writes_total", {"feature": "google"}
    )
    assert value == 2


def test_a_read_older_than_the_controllers_last_write_holds_that_features_promotions_only() -> None:
    store = RedisFlagStore(
        fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    )
    store.init("google", T0)
    store.init("outlook", T0)
    written = store.set_percent("google", 10, "ramp", at=T0)
    assert written.applied and written.audit_id
    assert store.last_applied["google"] == written.audit_id
    # a failover to a replica that never got the write: the hash points at an older entry
    store.client.hset(LAST_WRITE_HASH, "google", "old-write 1-0")
    states = store.read_each(["google", "outlook"])
    google, outlook = states["google"], states["outlook"]
    assert isinstance(google, FlagState) and isinstance(outlook, FlagState)
    [problem] = google.problems  # what a corrupt history key does: promotions hold
    assert "Redis lost that write" in problem and written.audit_id in problem
    assert "rollout set google PERCENT --rewrite" in problem
    assert not outlook.problems
    # the operator's new write is newer than the remembered one: decided on again
    store.set_percent("google", 0, "re-set after the failover", at=T0)
    google = store.read_each(["google"])["google"]
    assert isinstance(google, FlagState) and not google.problems


def lost_promotion(store: RedisFlagStore) -> None:
    """google public at 10%, then a promotion to 50% the failover lost (Redis kept 10%)."""
    store.init("google", T0)
    store.set_audience("google", internal_only=False, reason="public", by="t", at=T0)
    store.set_percent("google", 10, "ramp", at=T0)
    kept = store.client.hget(LAST_WRITE_HASH, "google")
    store.set_percent("google", 50, "ramp", at=T0 + timedelta(minutes=20))
    store.client.set("flags:google:rollout_percent", "10")  # what the new master holds
    store.client.hset(LAST_WRITE_HASH, "google", kept)


ERROR_RATE_SPEC = FeatureSpec.model_validate(
    {
        "name": "google",
        "slos": [{"name": "error_rate", "ratio": {"errors": "e", "total": "t"}, "max": 0.01}],
    }
)


def test_a_breach_after_a_lost_write_is_rolled_back_with_the_loss_as_a_warning() -> None:
    store = RedisFlagStore(fakeredis.FakeRedis(decode_responses=True))
    lost_promotion(store)
    outcome = run_pass(
        [ERROR_RATE_SPEC], store, ErrorRateSource(0.2), T0 + timedelta(hours=1), False
    )
    outcome = outcome["google"]
    assert outcome.status is OutcomeStatus.OK and outcome.applied, outcome.summary
    assert outcome.result is Action.ROLLBACK
    assert store.client.get("flags:google:rollout_percent") == "0"  # lowered at once
    assert outcome.decision is not None
    [history] = [g for g in outcome.decision.guards if g.name == "history"]
    assert not history.blocks and "Redis lost that write" in history.message
    # the rollback is a newer write: the feature is decided on again
    state = store.read_each(["google"])["google"]
    assert isinstance(state, FlagState) and not state.problems


def test_a_healthy_reading_after_a_lost_write_holds_the_promotion_naming_the_loss() -> None:
    store = RedisFlagStore(fakeredis.FakeRedis(decode_responses=True))
    lost_promotion(store)
    outcome = run_pass(
        [ERROR_RATE_SPEC], store, ErrorRateSource(0.001), T0 + timedelta(hours=2), False
    )
    outcome = outcome["google"]
    assert outcome.status is OutcomeStatus.OK and not outcome.applied, outcome.summary
    assert outcome.decision is not None and outcome.decision.guard == "history"
    assert outcome.decision.proposed is Action.PROMOTE
    assert "Redis lost that write" in outcome.decision.reason
    assert store.client.get("flags:google:rollout_percent") == "10"


def test_a_failed_configuration_still_counts_through_the_sentinels() -> None:
    from rollout_core.bootstrap import error_telemetry

    sink = error_telemetry(
        {
            "REDIS_SENTINELS": "127.0.0.1:26379",
            "REDIS_SENTINEL_SERVICE": "rollout",
            "ROLLOUT_DRY_RUN": "maybe",  # the bad value that failed the run
        }
    )
    assert sink is not None
    assert describe(sink._redis) == "redis+sentinel://127.0.0.1:26379/rollout/0"


def test_an_unknown_topology_is_refused_before_anything_starts(tmp_path: Path) -> None:
    from deployments.stack import up

    with pytest.raises(RuntimeError, match="topology 'cluster' is unknown; expected one of"):
        up(tmp_path / "stack", topology="cluster")
    assert not (tmp_path / "stack").exists()
