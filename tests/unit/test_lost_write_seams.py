"""The lost-write hold at its seams: a dry run's recommendation does not end it (it writes no
flag), and the command a segment's hold names is one the CLI accepts."""

from __future__ import annotations

import re
import shlex
from datetime import timedelta

import fakeredis

from rollout_core.flags import LAST_WRITE_HASH, RedisFlagStore
from rollout_core.model import Action
from rollout_core.ports import FlagChange
from tests.unit.test_cli import AT, Cli, cli  # noqa: F401  (the fixture)


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


def test_the_fix_a_segments_lost_write_hold_names_is_a_command_the_cli_accepts(
    cli: Cli,  # noqa: F811
) -> None:
    assert cli("init", "google", "--segment-by", "region", "--segments", "eu,us").exit_code == 0
    store = RedisFlagStore(cli.redis)
    first = store.set_percent("google[eu]", 5, "canary", at=AT)
    applied = store.set_percent("google[eu]", 10, "promote", at=AT)
    assert applied.applied and store.last_applied["google[eu]"] == applied.audit_id
    # a failover lost the 5 -> 10 write: Redis holds the earlier write as the unit's last one
    cli.redis.set("flags:google:segment:eu:rollout_percent", "5")
    cli.redis.hset(LAST_WRITE_HASH, "google[eu]", f"w {first.audit_id}")

    problems = store.read_each(["google[eu]"])["google[eu]"].problems  # type: ignore[union-attr]
    message = next(p for p in problems if "Redis lost that write" in p)
    suggested = re.search(r"`(rollout set [^`]*)`", message)
    assert suggested is not None, message
    args = shlex.split(suggested.group(1).replace("PERCENT", "5"))[1:]

    result = cli(*args)

    assert result.exit_code == 0, f"{args}: {result.stderr}"
    state = store.read_each(["google[eu]"])["google[eu]"]
    assert not any("Redis lost that write" in p for p in state.problems)  # type: ignore[union-attr]


def test_a_features_hold_names_both_routes_out_and_a_segments_only_the_cli() -> None:
    from rollout_core.flags import lost_write_problem

    feature = lost_write_problem("google", "w 1-0", "2-0")
    segment = lost_write_problem("google[eu]", "w 1-0", "2-0")
    assert "`rollout set google PERCENT --rewrite" in feature
    assert "rollout-override/manual, rewrite=true" in feature
    assert "--segment eu --rewrite" in segment
    assert "rollout-override" not in segment  # the override flow takes whole features only
