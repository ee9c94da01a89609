"""Review repro: the lost-write hold of a SEGMENT names a fix the CLI refuses.

`lost_write_problem` formats the unit name into the commands it suggests, so a segment's hold
says ``rollout set google[eu] PERCENT --rewrite ...`` and ``rollout audit google[eu]``; the CLI
takes a segment as ``--segment eu`` and rejects `google[eu]` as a feature name (exit 2). The
operator following the message cannot end the hold with it.

Observed: the suggested `rollout set` exits 2 ("feature name 'google[eu]' is invalid"), the hold
stays. Expected: the message names `rollout set google PERCENT --segment eu --rewrite ...`
(and `rollout audit google ...` for the segment), which ends the hold.

Run: .venv/bin/python -m pytest tests/review/repro_lost_write_segment_fix.py -q
"""

from __future__ import annotations

import re
import shlex

from rollout_core.flags import LAST_WRITE_HASH, RedisFlagStore
from tests.unit.test_cli import AT, Cli, cli  # noqa: F401  (the fixture)


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
