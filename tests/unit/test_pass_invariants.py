"""The whole-pass invariants I1-I5 (issue 9) over generated cases, on fakeredis with Lua.

Each example drives one pass: Prometheus' answers through the real PrometheusSource, the
policy, the guards, the compare-and-set script and its audit entry in the real RedisFlagStore.
The cases and the oracle are in tests/pass_invariants.py; a bounded sample of the same runs
on a real redis-server in tests/integration/test_pass_invariants_redis.py.
"""

from __future__ import annotations

import fakeredis
from hypothesis import HealthCheck, given, settings

from rollout_core.config import FeatureSpec
from rollout_core.flags import FIELDS
from rollout_sdk.keys import flag_key
from tests.pass_invariants import FEATURE, Case, cases, check_invariants, run_case

SERVER = fakeredis.FakeServer()
CLIENT = fakeredis.FakeRedis(server=SERVER, decode_responses=True)


@settings(
    max_examples=2500,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(cases())
def test_every_generated_pass_keeps_the_invariants(case: Case) -> None:
    check_invariants(case, run_case(CLIENT, case))


def test_a_breach_rolls_back_while_another_slos_query_times_out() -> None:
    # found by the invariant suite (I2): one query's client timeout failed the whole pass
    spec = FeatureSpec.model_validate(
        {
            "name": FEATURE,
            "slos": [
                {"name": "slo0", "ratio": {"errors": "e", "total": "t"}, "max": 0.01},
                {"name": "slo1", "query": "p95", "max": 0.5},
            ],
        }
    )
    flags = {field: None for field in FIELDS} | {"rollout_percent": "100", "enabled": "true"}
    answers = {"e": ("value", 400.0), "t": ("value", 2000.0), "p95": ("client_timeout", None)}
    case = Case(spec, answers, flags, race=None, dry_run=False, hard_kill=None)

    seen = run_case(CLIENT, case)

    check_invariants(case, seen)
    assert seen.after[flag_key(FEATURE, "rollout_percent")] == "10"
    assert seen.outcome.decision is not None
    latency = seen.outcome.decision.verdicts[1]
    assert latency.error is not None and latency.error.transient
    assert "slo1 transient query error: unreachable: no answer within 10s" in latency.message


def test_a_hard_killed_feature_that_breaches_is_still_rolled_back() -> None:
    # I2 and the hard kill: PROVIDER_<FEATURE>_ENABLED lives in the services' environment and
    # the controller does not read it; a breach rolls back whatever it says (always safe)
    spec = FeatureSpec.model_validate(
        {
            "name": FEATURE,
            "slos": [{"name": "slo0", "ratio": {"errors": "e", "total": "t"}, "max": 0.01}],
        }
    )
    flags = {field: None for field in FIELDS} | {"rollout_percent": "50", "enabled": "true"}
    answers = {"e": ("value", 400.0), "t": ("value", 2000.0)}
    for kill in ("false", "disabled", "flase"):
        case = Case(spec, answers, flags, race=None, dry_run=False, hard_kill=kill)

        seen = run_case(CLIENT, case)

        check_invariants(case, seen)
        assert seen.after[flag_key(FEATURE, "rollout_percent")] == "10"
