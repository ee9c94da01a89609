"""R15 defect: a controller change whose reply was lost and that the read-back found applied
(ApplyResult.recovered, e.g. the primary killed mid-write after the replica had it) is not
put in the store's write memory: RedisFlagStore._apply_result records `last_applied`, but
_apply_after_lost_reply returns its ApplyResult without doing so. That change is then never
saved to `rollout-last-applied`, and a later failover that loses it is not refused: the
write memory has a hole exactly where failovers happen (a lost reply).

Second test: the same recovered result never went through `_confirmed` (no WAIT 1 after the
read-back), so it comes back `unconfirmed=False` while no replica has it: the run gives no
durability warning and the counter does not count it, for precisely the write most at risk.

Real redis-server behind the project's reply-dropping proxy. Run:
.venv/bin/python -m pytest tests/review/<this file> -q
"""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import redis

from deployments.ha import start_redis_node
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


def test_a_recovered_change_no_replica_has_is_reported_unconfirmed(tmp_path: Path) -> None:
    primary = start_redis_node(tmp_path / "primary")
    replica = start_redis_node(tmp_path / "replica", replica_of=primary.port)
    try:
        with reply_dropping_proxy(primary.port) as proxy:
            client = redis.Redis(port=proxy.port, decode_responses=True, socket_timeout=1.0)
            store = RedisFlagStore(client, wait_timeout_ms=200)
            store.init("google", AT)
            state = store.read(["google"])["google"]
            change = FlagChange(
                "google", state.percent, state.paused, 10, "canary healthy", "controller", AT,
                Action.PROMOTE, expected_raw=state.raw,
            )  # fmt: skip
            os.kill(replica.process.pid, signal.SIGSTOP)  # connected, acknowledges nothing
            try:
                proxy.drop_next_script_reply()
                result = store.apply(change)
                plain = store.set_percent("google", 50, "ramp", at=AT)  # same store, no loss
            finally:
                os.kill(replica.process.pid, signal.SIGCONT)
        assert result.recovered and result.applied, result
        assert plain.applied and plain.unconfirmed  # a plain write is checked with WAIT 1
        assert result.unconfirmed, "recovered, never confirmed, reported as confirmed"
    finally:
        replica.stop()
        primary.stop()
