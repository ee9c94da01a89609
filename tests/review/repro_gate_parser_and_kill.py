"""FAILING REPRO (review 9, defect R2): the request-path gate still has its own parsers.

Issue 9 items 6 and 8 were fixed in `rollout_sdk.flag_values`, and the store, CLI and docs
use it ("Every key is read strictly, by the same parser as the gate"), but
`rollout_core.minimal_gate.MinimalGate` (the only RolloutGate on this branch) still parses
the percent with `float()` and the hard kill against a deny-list `{"false","0","no","off"}`:
- `redis-cli SET flags:f1:rollout_percent 1e1` (or ` 50`, `1_0`, `+50`): the controller
  holds the feature in config_error (no automatic rollback) while the gate serves 10%;
- `PROVIDER_F1_ENABLED=disabled` / `=flase` leaves the feature ON, silently.
(Brief E owns the gate; if its branch lands, re-run this file.)
"""

from __future__ import annotations

import pytest
import redis

from rollout_core.errors import InvalidFlagValue
from rollout_core.flags import RedisFlagStore
from rollout_core.minimal_gate import MinimalGate
from rollout_core.redis_connection import connect
from tests.integration.one_feature import seed


@pytest.mark.parametrize("raw", ["1e1", " 50", "1_0", "+50", "50 "])
def test_a_percent_the_store_refuses_serves_nobody_in_the_gate(redis_url: str, raw: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, raw)
    state = RedisFlagStore(connect(redis_url)).read_each(["f1"])["f1"]
    assert isinstance(state, InvalidFlagValue)  # the controller refuses it: holds, no rollback
    gate = MinimalGate(redis.Redis.from_url(redis_url, socket_timeout=0.5), environ={})
    # observed: 10.0 / 50.0 / 10.0 / 50.0 / 50.0 -- the gate serves traffic on it
    assert gate.percent("f1") == 0.0


@pytest.mark.parametrize("typo", ["disabled", "flase", "kill", "n"])
def test_a_mistyped_hard_kill_disables_the_feature(redis_url: str, typo: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "100")
    gate = MinimalGate(
        redis.Redis.from_url(redis_url, socket_timeout=0.5), environ={"PROVIDER_F1_ENABLED": typo}
    )
    # observed: True -- everybody sees the feature the operator meant to kill
    assert gate.allow("f1", {"actor_id": "u1"}) is False
