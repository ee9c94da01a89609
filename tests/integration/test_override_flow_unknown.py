"""The override flow never reports a write whose outcome is unknown as "nothing written"
(review 9, R5): the reply of its compare-and-set is lost and Redis stays down, so the run
fails and says the outcome is not known."""

from __future__ import annotations

from deployments.servers import RunningServer
from flows.override import rollout_override
from rollout_core.bootstrap import Adapters, use_adapters
from rollout_core.flags import RedisFlagStore
from rollout_core.redis_connection import connect
from tests.integration.conftest import prefect_test_server  # noqa: F401 (fixture)
from tests.integration.one_feature import NOW
from tests.integration.reply_dropping_proxy import reply_dropping_proxy


def test_an_override_whose_outcome_is_unknown_fails_and_says_so(
    own_redis: RunningServer,
    prefect_test_server: None,  # noqa: F811
) -> None:
    RedisFlagStore(connect(own_redis.url)).init("google", NOW)
    with reply_dropping_proxy(own_redis.port) as proxy:
        store = RedisFlagStore(connect(proxy.url))
        original = store._cas

        def run_then_stop_redis(*args: object, **kwargs: object) -> object:
            proxy.drop_next_script_reply()
            try:
                return original(*args, **kwargs)
            finally:
                own_redis.stop()

        store._cas = run_then_stop_redis  # type: ignore[method-assign]
        adapters = Adapters(store=store, source=None, telemetry=None)  # type: ignore[arg-type]
        with use_adapters(adapters):
            state = rollout_override("google", 50, "incident drill", return_state=True)
    assert proxy.dropped == 1
    assert state.is_failed(), state.message
    assert "outcome unknown" in (state.message or "")
    assert "nothing written" not in (state.message or "")
