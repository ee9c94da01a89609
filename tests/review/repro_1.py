"""Review of int3, item 1 (the load-time quantile check): a percent typed for a quantile is
NOT refused when the aggregation is written the way PromQL users usually write it.

`_QUANTILE_LITERAL` needs the function name followed directly by `(`, and matches it
case-sensitively. PromQL also accepts, for the `quantile` aggregation operator:
- the grouping clause before the parameters: `quantile by (route) (95, ...)`,
  `quantile without (instance) (95, ...)` (the form the Prometheus docs show first);
- the operator in any case: `QUANTILE(95, ...)`, `Quantile by (x) (95, ...)` (aggregation
  operators are keywords, looked up lower-cased by the PromQL lexer);
- a parenthesised literal: `histogram_quantile((95), ...)`.
Each is valid PromQL (promtool, the real parser, accepts it) and asks for the 9500th
percentile: Prometheus answers +Inf, which the policy reads as no data, so the feature's
latency SLO never judges anything: exactly what the check exists to refuse at load.

Run: .venv/bin/python -m pytest tests/review/repro_1.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from rollout_core.config import load_config
from rollout_core.errors import ConfigError

CONFIG = """\
features:
  google:
    promote_without_traffic: true
    slos:
      - name: latency_p95
        query: {query}
        max: 0.5
"""

TYPOS = [
    "quantile by (route) (95, rate(action_latency_seconds_sum[5m]))",
    "quantile without (instance) (95, rate(action_latency_seconds_sum[5m]))",
    "QUANTILE(95, rate(action_latency_seconds_sum[5m]))",
    "Quantile by (route) (95, rate(action_latency_seconds_sum[5m]))",
    "histogram_quantile((95), sum by (le) (rate(action_latency_seconds_bucket[5m])))",
]


def promtool_accepts(query: str, tmp_path: Path) -> None:
    """The real PromQL parser accepts the query (so it is a user's query, not garbage)."""
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


@pytest.mark.parametrize("query", TYPOS)
def test_a_percent_typed_for_a_quantile_is_refused_however_the_aggregation_is_spelled(
    tmp_path: Path, query: str
) -> None:
    promtool_accepts(query, tmp_path)
    path = tmp_path / "rollouts.yaml"
    path.write_text(CONFIG.format(query=json.dumps(query)), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"SLO 'latency_p95': .*95.* a quantile is between 0"):
        load_config(path)


def test_control_the_same_file_with_0_95_loads_and_with_the_plain_spelling_is_refused(
    tmp_path: Path,
) -> None:
    """Holds today: the file is otherwise valid, and the check works for the plain spelling."""
    path = tmp_path / "rollouts.yaml"
    path.write_text(CONFIG.format(query='"quantile(0.95, m)"'), encoding="utf-8")
    load_config(path)
    path.write_text(CONFIG.format(query='"quantile(95, m)"'), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"SLO 'latency_p95': quantile\(95, \.\.\.\)"):
        load_config(path)
