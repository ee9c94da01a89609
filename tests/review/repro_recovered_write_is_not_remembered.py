"""R15 defect: a controller change whose reply was lost and that the read-back found applied
(ApplyResult.recovered, e.g. the primary killed mid-write after the replica had it) is not
put in the store's write memory: RedisFlagStore._apply_result records `last_applied`, but
_apply_after_lost_reply returns its ApplyResult without doing so. That change is then never
saved to `rollout-last-applied`, and a later failover that loses it is not refused: the
write memory has a hole exactly where failovers happen (a lost reply).

Real redis-server behind the project's reply-dropping proxy. Run:
.venv/bin/python -m pytest tests/review/<this file> -q
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import redis

from deployments.servers import start_redis
from rollout_core.flags import RedisFlagStore
from rollout_core.model import Action
from rollout_core.ports import FlagChange
from rollout_core.redis_connection import connect
from tests.integration.reply_dropping_proxy import reply_dropping_proxy

AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def test_a_change_recovered_after_a_lost_reply_is_remembered_like_any_applied_change(
    tmp_path: Path,
) -> None:
    server = start_redis(tmp_path / "redis")
    try:
        with reply_dropping_proxy(server.port) as proxy:
            # short timeouts: the read-back waits past the write's deadline (socket timeout)
            client = redis.Redis(port=proxy.port, decode_responses=True, socket_timeout=1.0)
            store = RedisFlagStore(client)
            store.init("google", AT)
            state = store.read(["google"])["google"]
            change = FlagChange(
                "google", state.percent, state.paused, 10, "canary healthy", "controller", AT,
                Action.PROMOTE, expected_raw=state.raw,
            )  # fmt: skip
            proxy.drop_next_script_reply()
            result = store.apply(change)
        assert result.recovered and result.applied and result.audit_id, result
        assert connect(server.url).get("flags:google:rollout_percent") == "10"
        # observed: {} (a plainly applied change would be here)
        assert store.last_applied.get("google") == result.audit_id, store.last_applied
    finally:
        server.stop()
