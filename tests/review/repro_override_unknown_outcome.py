"""FAILING REPRO (review 9, defect R8): the override flow reports an unknown write as
"already at N%, nothing written" and Completes.

`flows/override.py` checks `result.conflict` and `result.applied` only. When the reply of
its compare-and-set is lost and Redis stays unreachable, `RedisFlagStore.set_percent`
returns `unknown=True` (the CLI's `rollout set` says "outcome unknown" and exits 1), but the
override flow - the Prefect UI's Run button - logs "google: already at 0%, nothing written"
and ends Completed, although the write may have happened (here it did).
"""

from __future__ import annotations

from deployments.servers import RunningServer
from flows.override import rollout_override
from rollout_core.bootstrap import Adapters, use_adapters
from rollout_core.flags import RedisFlagStore
from rollout_core.redis_connection import connect
from tests.integration.conftest import prefect_test_server  # noqa: F401 (fixture)
from tests.integration.reply_dropping_proxy import reply_dropping_proxy
from tests.integration.one_feature import NOW


def test_an_override_whose_outcome_is_unknown_does_not_complete_as_nothing_written(
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
        with use_adapters(Adapters(store=store, source=None, telemetry=None)):  # type: ignore[arg-type]
            state = rollout_override("google", 50, "incident drill", return_state=True)
    # observed: Completed, "google: already at 50%, nothing written"
    assert proxy.dropped == 1
    assert not state.is_completed(), state.message
    assert "nothing written" not in (state.message or ""), state.message
