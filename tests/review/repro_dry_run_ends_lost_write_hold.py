"""Review repro: a DRY-RUN recommendation ends the lost-write hold.

The compare-and-set script's `append()` records every audit entry in `rollout:last_write`,
a dry run's recommendation included (cas_percent.lua: the dry-run branch calls append(), which
HSETs KEYS[9]). The lost-write check (`RedisFlagStore._lost_writes`) compares that entry with
the controller's last applied change, so any dry run of the feature after the failover (a
`rollout run --dry-run`, a shadow/dry-run deployment) writes a newer id and the next live run
promotes from the percent Redis kept, with nobody having checked `rollout audit` or re-set it.

Observed: after one dry-run recommendation the live store's read of the feature carries no
lost-write problem (promotions go through). Expected: the hold lasts until a real write (a
rollback, `rollout set --rewrite`); a recommendation changes no flag and must not end it.

Run: .venv/bin/python -m pytest tests/review/repro_dry_run_ends_lost_write_hold.py -q
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import fakeredis

from rollout_core.flags import LAST_WRITE_HASH, RedisFlagStore
from rollout_core.model import Action
from rollout_core.ports import FlagChange

AT = datetime(2025, 10, 8, 15, 0, tzinfo=UTC)


def test_a_dry_run_recommendation_does_not_end_a_lost_write_hold() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    live = RedisFlagStore(client)
    live.init("google", AT)
    first = live.set_percent("google", 5, "canary", at=AT)
    lost = live.set_percent("google", 10, "promote", at=AT + timedelta(minutes=1))
    assert live.last_applied["google"] == lost.audit_id
    # a failover lost the 5 -> 10 write
    client.set("flags:google:rollout_percent", "5")
    client.hset(LAST_WRITE_HASH, "google", f"w {first.audit_id}")
    held = live.read_each(["google"])["google"]
    assert any("Redis lost that write" in p for p in held.problems)  # type: ignore[union-attr]

    shadow = RedisFlagStore(client)  # e.g. `rollout run --dry-run`, or a dry-run deployment
    state = shadow.read(["google"])["google"]
    change = FlagChange(
        "google",
        state.percent,
        state.paused,
        10.0,
        "healthy",
        "controller",
        AT + timedelta(minutes=2),
        Action.PROMOTE,
        dry_run=True,
    )
    assert shadow.apply(change).audit_id  # a recommendation entry

    after = live.read_each(["google"])["google"]
    assert any("Redis lost that write" in p for p in after.problems)  # type: ignore[union-attr]
