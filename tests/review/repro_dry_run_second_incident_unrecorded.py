"""FAILING REPRO (review 9, defect R15): in a dry run, a breach that clears and comes back is
not recorded again.

Item 11's de-duplication keeps "<action> <old> <new>" of the last recommendation in
rollout:recommendations and clears it only on an applied change; a hold never clears it. So a
shadow-mode controller records "recommend rollback 100% -> 10%" for the first incident, holds
while it recovers, and records NOTHING for a second incident an hour later (same
"rollback 100 10"): the audit trail used to judge the controller before going live shows one
incident where there were two. Wanted: only a recommendation repeated pass after pass without
interruption is suppressed; a hold (or any different decision) ends the run of repeats.
"""

from __future__ import annotations

import redis

from deployments.servers import RunningServer
from tests.integration.one_feature import audit_of, one_pass, ratio_spec, seed


def test_a_second_incident_is_recommended_again_in_a_dry_run(
    redis_url: str, prometheus_factory
) -> None:
    prometheus: RunningServer = prometheus_factory()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "100")
    breach = ratio_spec("vector(400)", "vector(2000)")
    recovered = ratio_spec("vector(0)", "vector(100)")  # a hold: too few requests to judge
    for specs in (breach, recovered, breach):
        one_pass(redis_url, prometheus.url, specs, dry_run=True)
    recommendations = [e for e in audit_of(client) if e["action"] == "rollback"]
    # observed: 1
    assert len(recommendations) == 2, recommendations
