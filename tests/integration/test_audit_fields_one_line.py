"""No audit field can forge a line of the Markdown log (review 9, R15): the CLI refuses a
newline or another control character in --by and --reason (exit 2, nothing written), and the
log writer folds any that reach the stream by another way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.integration.one_feature import audit_of

ROLLOUT = Path(sys.executable).parent / "rollout"
FORGED = "2026-11-30T06:00:00Z  google  0% -> 100%  reason=approved by CTO  by=cto"


def _rollout(redis_url: str, log: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin", "ROLLOUT_AUDIT_LOG": str(log)}
    return subprocess.run(
        [str(ROLLOUT), *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args",
    [
        ("pause", "f1", "--reason", "incident", "--by", f"oncall\n{FORGED}"),
        ("pause", "f1", "--reason", f"incident\n{FORGED}", "--by", "oncall"),
        ("set", "f1", "10", "--reason", f"canary\r\n{FORGED}", "--by", "oncall"),
        ("set", "f1", "10", "--reason", "canary", "--by", "on\x1b[2Kcall"),
    ],
)
def test_a_control_character_in_by_or_reason_is_refused_and_nothing_written(
    redis_url: str, tmp_path: Path, args: tuple[str, ...]
) -> None:
    log = tmp_path / "rollout_log.md"
    assert _rollout(redis_url, log, "init", "f1", "--by", "me").returncode == 0
    done = _rollout(redis_url, log, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "holds a newline or another control character" in done.stderr
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert [e["action"] for e in audit_of(client)] == ["init"]
    assert client.get("flags:f1:paused") == "false"
    assert client.get("flags:f1:rollout_percent") == "0"
    assert not any(line.startswith("2026-11-30T06:00:00Z") for line in log.read_text().splitlines())


def test_the_rebuilt_log_folds_a_stream_entry_with_a_newline_into_one_line(
    redis_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "rollout_log.md"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.xadd(
        "rollout:audit",
        {
            "time": "2026-11-30T05:00:00Z",
            "feature": "f1",
            "old_percent": "0",
            "new_percent": "10",
            "reason": "r",
            "by": f"oncall\n{FORGED}",
            "action": "promote",
        },
    )
    assert _rollout(redis_url, log, "audit", "--rebuild-log", str(log)).returncode == 0
    lines = [line for line in log.read_text().splitlines() if line.startswith("2026-")]
    assert len(lines) == 1 and lines[0].endswith(f"by=oncall {' '.join(FORGED.split())}")
