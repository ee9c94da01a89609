"""Review of int3, item 1 (the load-time quantile check): valid PromQL asking for p95 is
REFUSED at load because `_QUANTILE_LITERAL` scans the raw text, comments and string literals
included.

PromQL has `#` comments (to the end of the line) and string literals. A multi-line query in a
YAML block scalar that keeps the old, wrong spelling in a comment ("# was
histogram_quantile(95, ...)") or a label_replace whose replacement text mentions a quantile is
valid (promtool accepts it), asks for p95, and yet the whole rollouts file is refused: every
entry point (rollout run/serve/backtest/tune/explain, the deployed flow) stops on it.

Run: .venv/bin/python -m pytest tests/review/repro_2.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from rollout_core.config import load_config

CONFIG = """\
features:
  google:
    promote_without_traffic: true
    slos:
      - name: latency_p95
        query: {query}
        max: 0.5
"""

COMMENTED = (
    "# p95 (was histogram_quantile(95, ...) until the incident of 2026-11-29)\n"
    "histogram_quantile(0.95, sum by (le) (rate(action_latency_seconds_bucket[5m])))\n"
)
STRING = (
    "label_replace(histogram_quantile(0.95, sum by (le) (rate(action_latency_seconds_bucket[5m]))),"
    ' "note", "quantile(99, raw)", "", "")'
)


def promtool_accepts(query: str, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not on the PATH"
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "groups:\n- name: r\n  rules:\n  - record: r\n    expr: " + json.dumps(query) + "\n",
        encoding="utf-8",
    )
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("query", [COMMENTED, STRING], ids=["comment", "string-literal"])
def test_a_valid_p95_query_mentioning_a_quantile_in_a_comment_or_string_loads(
    tmp_path: Path, query: str
) -> None:
    promtool_accepts(query, tmp_path)
    path = tmp_path / "rollouts.yaml"
    path.write_text(CONFIG.format(query=json.dumps(query)), encoding="utf-8")
    config = load_config(path)  # raises ConfigError today: "histogram_quantile(95, ...) asks ..."
    assert config.feature("google").slos[0].query == query
