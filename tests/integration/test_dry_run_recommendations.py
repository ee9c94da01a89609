"""A dry run records every incident (review 9, R11): only a recommendation repeated pass after
pass is suppressed; a hold in between ends the run of repeats, so a second incident with the
same recommendation is recorded again."""

from __future__ import annotations

import redis

from deployments.servers import RunningServer
from tests.integration.one_feature import audit_of, one_pass, ratio_spec, seed

BREACH = ratio_spec("vector(400)", "vector(2000)")
RECOVERED = ratio_spec("vector(0)", "vector(100)")  # a hold: too few requests to judge


def _rollbacks(client: redis.Redis) -> list[dict[str, str]]:
    return [e for e in audit_of(client) if e["action"] == "rollback"]


def test_a_second_incident_is_recommended_again_in_a_dry_run(
    redis_url: str, prometheus_factory
) -> None:
    prometheus: RunningServer = prometheus_factory()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "100")
    for specs in (BREACH, RECOVERED, BREACH):
        one_pass(redis_url, prometheus.url, specs, dry_run=True)
    assert len(_rollbacks(client)) == 2
    assert all(e["dry_run"] == "true" for e in audit_of(client))
    assert client.get("flags:f1:rollout_percent") == "100"


def test_an_unbroken_run_of_the_same_recommendation_is_recorded_once(
    redis_url: str, prometheus_factory
) -> None:
    prometheus: RunningServer = prometheus_factory()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "100")
    for _ in range(3):
        one_pass(redis_url, prometheus.url, BREACH, dry_run=True)
    assert len(_rollbacks(client)) == 1
