"""FAILING REPRO (review 9, defect R1): the compare-and-set is not all-or-nothing.

cas_percent.lua checks the type of the audit stream before writing, but not of the other
controller-owned keys it writes after the flag keys (rollout:recommendations HDEL,
rollout:features SADD, rollout:last_write HSET). Redis never rolls a script back, so when one of
them holds the wrong type (a stray `redis-cli SET rollout:last_write x`) the percent, last_percent
and last_change_time are written, the script then fails, and:
- no audit entry is written (rollout:recommendations, rollout:features), breaking I4;
- the pass reports redis_error with the percent unchanged, while Redis holds the new one (I5).
audited_write.lua (rollout set/pause/resume/audience/init) has the same shape.
"""

from __future__ import annotations

import pytest
import redis

from deployments.servers import RunningServer
from rollout_core.flags import RedisFlagStore
from rollout_core.redis_connection import connect
from tests.review._harness import NOW, audit_of, one_pass, ratio_spec, seed

BREACH = ratio_spec("vector(400)", "vector(2000)")  # 20% errors over 2,000 requests


@pytest.mark.parametrize(
    "owned_key", ["rollout:recommendations", "rollout:features", "rollout:last_write"]
)
def test_a_wrong_typed_controller_key_writes_nothing_or_everything(
    redis_url: str, prometheus_factory, owned_key: str
) -> None:
    prometheus: RunningServer = prometheus_factory()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "100")
    client.set(owned_key, "stray string")

    outcome = one_pass(redis_url, prometheus.url, BREACH)

    held = client.get("flags:f1:rollout_percent")
    entries = audit_of(client)
    # observed: held == "10", entries == [] (or one entry for last_write), outcome redis_error
    # with outcome.percent 100: a flag write with no audit entry, reported as not applied
    assert (held == "100" and entries == []) or (held == "10" and len(entries) == 1), (
        f"Redis holds {held}% with {len(entries)} audit entr(y/ies); outcome {outcome.summary}"
    )
    assert outcome.percent == float(held), f"pass reports {outcome.percent}%, Redis holds {held}%"


def test_rollout_set_over_a_wrong_typed_registry_leaves_no_half_write(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "10")
    client.set("rollout:last_write", "stray string")
    store = RedisFlagStore(connect(redis_url))
    with pytest.raises(Exception) as raised:
        store.set_paused("f1", True, "incident", "oncall", NOW)
    # observed: an error is raised, yet paused is "true" and the audit entry is written
    assert client.get("flags:f1:paused") == "false", (
        f"set_paused raised {raised.value!r} but wrote paused={client.get('flags:f1:paused')}"
    )
