"""FAILING REPRO (review 9, defect R7): one malformed entry makes the audit trail unreadable.

`rollout audit` and `rollout audit FEATURE` refuse the WHOLE stream (exit 2, "time is
'notatime'") when any single entry in range has an unparsable or missing `time` (a foreign
XADD, a hand-written entry, a future format). That is the command the controller's
"outcome unknown" message tells the on-call to run to learn whether a write happened.
Wanted: every readable entry is shown, each bad one listed as such with its id.
Also seen: an entry whose new_percent is `1e400` is shown as "-> unset", not as its raw value.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import redis

ROLLOUT = Path(sys.executable).parent / "rollout"


def _rollout(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROLLOUT), *args],
        env={"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_audit_trail_survives_one_malformed_entry(redis_url: str) -> None:
    assert _rollout(redis_url, "init", "f1", "--by", "me").returncode == 0
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.xadd("rollout:audit", {"feature": "f1", "time": "notatime", "action": "promote"})
    assert _rollout(redis_url, "set", "f1", "10", "--reason", "r", "--by", "me").returncode == 0
    done = _rollout(redis_url, "audit", "f1")
    # observed: exit 2, "error: rollout:audit <id> time is 'notatime'; expected an ISO-8601..."
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0% -> 10%" in done.stdout
