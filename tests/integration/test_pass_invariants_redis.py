"""A bounded sample of the whole-pass invariants I1-I5 (issue 9) on a real redis-server.

The same cases and oracle as tests/unit/test_pass_invariants.py (tests/pass_invariants.py),
so the compare-and-set script, its audit entry and the history keys are checked against the
Redis that production runs, not only fakeredis' Lua.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings

from tests.pass_invariants import ANSWERED, Case, cases, check_invariants, run_case


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    real = redis.Redis.from_url(redis_url, decode_responses=True)
    yield real
    real.close()


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases(answers=ANSWERED))
def test_every_sampled_pass_keeps_the_invariants_on_a_real_redis(
    client: redis.Redis, case: Case
) -> None:
    check_invariants(case, run_case(client, case))
