"""R15 defects in Sentinel addressing (rollout_core/bootstrap.py Settings.redis_target):

1. REDIS_URL and REDIS_SENTINELS set and disagreeing is silent. The HA stack itself exports
   both (REDIS_URL=redis+sentinel://.../rollout/0 and REDIS_SENTINELS=...). An operator who
   points REDIS_URL at database 2 (or another service) gets the controller and the CLI on
   database 0 of `rollout`, while every service whose RolloutClient reads REDIS_URL reads
   database 2: the controller writes flags no service reads, without a word.
   redis_target parses REDIS_URL's path with urlsplit and `"rollout/2".isdigit()` is False,
   so the db falls to 0; the REDIS_URL service is dropped. A plain redis:// REDIS_URL naming a
   non-numeric db (`/abc`) is also silently db 0, where without Sentinels it is refused.
2. REDIS_URL's ACL username is dropped: redis://alice:pw@.../3 with REDIS_SENTINELS gives a
   master client that AUTHs as `default` with alice's password (WRONGPASS on a server with
   ACL users), while the same REDIS_URL alone authenticates as alice.
3. A bad REDIS_SENTINELS (",") or REDIS_SENTINEL_SERVICE ("roll/out") is reported as a bad
   REDIS_URL (one the operator never wrote, with "database 'out/0'"), not naming the variable.

Pure (no server is contacted). Run:
.venv/bin/python -m pytest tests/review/repro_sentinel_config_disagreement_is_silent.py -q
"""

from __future__ import annotations

import pytest

from rollout_core.bootstrap import Settings
from rollout_core.errors import ConfigError
from rollout_core.redis_connection import connect

SENTINELS = "127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381"


def target_or_error(env: dict[str, str]) -> str:
    try:
        return Settings.from_env(env).redis_target()
    except ConfigError as error:
        return f"ConfigError: {error}"


def test_a_sentinel_redis_url_naming_another_db_than_the_controller_uses_is_never_silent() -> None:
    env = {
        "REDIS_URL": f"redis+sentinel://{SENTINELS}/rollout/2",  # what the services read
        "REDIS_SENTINELS": SENTINELS,
        "REDIS_SENTINEL_SERVICE": "rollout",
    }
    got = target_or_error(env)
    # observed: redis+sentinel://.../rollout/0 (database 2 silently replaced by 0)
    assert got.endswith("/rollout/2") or got.startswith("ConfigError"), got


def test_redis_url_and_redis_sentinels_naming_different_services_is_an_error() -> None:
    env = {
        "REDIS_URL": f"redis+sentinel://{SENTINELS}/payments/0",
        "REDIS_SENTINELS": SENTINELS,
        "REDIS_SENTINEL_SERVICE": "rollout",
    }
    got = target_or_error(env)
    assert got.startswith("ConfigError") and "REDIS_URL" in got and "REDIS_SENTINEL" in got, got


def test_a_non_numeric_database_in_redis_url_is_refused_with_sentinels_as_without() -> None:
    alone = target_or_error({"REDIS_URL": "redis://127.0.0.1:6379/abc"})
    with pytest.raises(ConfigError):
        connect(alone)  # without Sentinels: refused, naming REDIS_URL
    with_sentinels = target_or_error(
        {
            "REDIS_URL": "redis://127.0.0.1:6379/abc",
            "REDIS_SENTINELS": SENTINELS,
            "REDIS_SENTINEL_SERVICE": "rollout",
        }
    )
    assert with_sentinels.startswith("ConfigError"), with_sentinels  # observed: .../rollout/0


def test_the_acl_username_in_redis_url_reaches_the_master_through_the_sentinels() -> None:
    env = {
        "REDIS_URL": "redis://alice:s3cret@127.0.0.1:6379/3",
        "REDIS_SENTINELS": SENTINELS,
        "REDIS_SENTINEL_SERVICE": "rollout",
    }
    client = connect(Settings.from_env(env).redis_target())
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs.get("password") == "s3cret" and kwargs.get("db") == 3
    assert kwargs.get("username") == "alice", kwargs.get("username")  # observed: None


@pytest.mark.parametrize(
    ("variable", "env"),
    [
        ("REDIS_SENTINELS", {"REDIS_SENTINELS": ",", "REDIS_SENTINEL_SERVICE": "rollout"}),
        (
            "REDIS_SENTINEL_SERVICE",
            {"REDIS_SENTINELS": SENTINELS, "REDIS_SENTINEL_SERVICE": "roll/out"},
        ),
    ],
)
def test_a_bad_sentinel_variable_is_reported_under_its_own_name(
    variable: str, env: dict[str, str]
) -> None:
    with pytest.raises(ConfigError) as raised:
        connect(Settings.from_env(env).redis_target())
    message = str(raised.value)
    # observed: "REDIS_URL 'redis+sentinel://,/rollout/0' is not a Redis URL (... names no
    # Sentinel ...)" and "... database 'out/0' is not a number"
    assert message.startswith(variable) or f"{variable} is" in message, message
