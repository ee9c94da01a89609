"""The whole-pass invariants I1-I5 (issue 9) over generated cases, on fakeredis with Lua.

Each example drives one pass: Prometheus' answers through the real PrometheusSource, the
policy, the guards, the compare-and-set script and its audit entry in the real RedisFlagStore.
The cases and the oracle are in tests/pass_invariants.py; a bounded sample of the same runs
on a real redis-server in tests/integration/test_pass_invariants_redis.py.
"""

from __future__ import annotations

import fakeredis
from hypothesis import HealthCheck, given, settings

from tests.pass_invariants import Case, cases, check_invariants, run_case

SERVER = fakeredis.FakeServer()
CLIENT = fakeredis.FakeRedis(server=SERVER, decode_responses=True)


@settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(cases())
def test_every_generated_pass_keeps_the_invariants(case: Case) -> None:
    check_invariants(case, run_case(CLIENT, case))
