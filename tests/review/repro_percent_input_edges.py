"""FAILING REPRO (review 9, defect R11, minor): percent input edges between the CLI, the
shared parser, the store's rounding and the Lua scripts.

- `rollout set f1 0.0000001` prints "f1: 100% -> 1e-07%" but stores "0" (the store rounds to 6
  decimals); `rollout set f1 99.9999999` stores "100": a full rollout from a value under 100.
  Wanted: refuse more than 6 decimals, or print what was stored.
- `rollout_sdk.flag_values` uses `\\d`, which in Python matches every Unicode digit: "５０"
  (full-width) and "٥" (Arabic-Indic) are valid percents to the store, CLI and gate, but not to
  the Lua scripts' `%d` (ASCII), so a change from "５０" is audited but `last_percent` is not
  recorded. Wanted: ASCII digits only (`[0-9]`), as the grammar comment says.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import redis

from rollout_sdk.flag_values import parse_percent_value
from tests.integration.one_feature import seed

ROLLOUT = Path(sys.executable).parent / "rollout"


def _rollout(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROLLOUT), *args],
        env={"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rollout_set_says_what_it_stored(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "100")
    done = _rollout(redis_url, "set", "f1", "0.0000001", "--reason", "r", "--by", "me")
    stored = client.get("flags:f1:rollout_percent")
    # observed: exit 0, "f1: 100% -> 1e-07% (audit ...)", stored "0"
    assert done.returncode != 0 or f"-> {stored}%" in done.stdout, (done.stdout, stored)


def test_only_ascii_digits_are_a_percent() -> None:
    # observed: 50.0 and 5.0
    assert parse_percent_value("５０") is None
    assert parse_percent_value("٥") is None
