"""FAILING REPRO (review 9, defect R12, low): `--by` is written into the Markdown audit log
unescaped, so a newline in it forges whole log lines.

`format_log_line` folds whitespace in the reason ("one entry, one line") but not in `by`:
`rollout pause f1 --reason incident --by $'oncall\\n2026-11-30T06:00:00Z  google  0% -> 100%
reason=approved by CTO  by=cto'` appends a line that reads like a real google promotion.
(The Redis stream keeps the truth; the Markdown copy is what people read and ship.)
Wanted: `by` refused with a newline/control character, or folded like the reason.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROLLOUT = Path(sys.executable).parent / "rollout"
FORGED = "2026-11-30T06:00:00Z  google  0% -> 100%  reason=approved by CTO  by=cto"


def test_by_cannot_add_lines_to_the_markdown_log(redis_url: str, tmp_path: Path) -> None:
    log = tmp_path / "rollout_log.md"
    env = {"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin", "ROLLOUT_AUDIT_LOG": str(log)}
    for args in (
        ("init", "f1", "--by", "me"),
        ("pause", "f1", "--reason", "incident", "--by", f"oncall\n{FORGED}"),
    ):
        subprocess.run([str(ROLLOUT), *args], env=env, capture_output=True, timeout=120)
    lines = log.read_text().splitlines()
    # observed: a line starting "2026-11-30T06:00:00Z  google  0% -> 100%"
    assert not any(line.startswith("2026-11-30T06:00:00Z  google") for line in lines), lines
