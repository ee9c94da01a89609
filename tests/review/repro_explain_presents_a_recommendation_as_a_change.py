"""`rollout explain` on a dry-run recommendation presents it as a change that was made.

The audit trail marks dry-run entries as recommendations (`recommend 0% -> 10%`,
`dry_run=true`: "the audit trail lied" was one of the original system's flaws). explain reads
the same entry and prints "recorded: promote 0% -> 10%", and its JSON `recorded` has no
dry_run: nothing tells the reader the flag was never changed.

Observed: "recorded: promote 0% -> 10%"; `recorded` without dry_run. Expected: the recorded
side says it was a recommendation (e.g. "recorded: recommend promote 0% -> 10% (dry run)"
and `"dry_run": true`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import redis

from rollout_core.config import parse_config
from rollout_core.controller import run_pass
from rollout_core.flags import RedisFlagStore
from rollout_core.replay import ReplaySource
from tests.review._support import redis_server, rollout

CONFIG = """
features:
  google:
    slos:
      - name: error_rate
        ratio:
          errors: sum(increase(e_total[5m]))
          total: sum(increase(t_total[5m]))
        max: 0.01
        min_samples: 200
"""


def test_explain_says_a_dry_run_entry_was_a_recommendation(tmp_path: Path) -> None:
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    spec = parse_config(CONFIG).feature("google")
    at = datetime(2026, 1, 5, 10, tzinfo=UTC)
    frame = pd.DataFrame(
        [(at, "google", "error_rate", 0.002, 1000.0)],
        columns=["time", "feature", "slo", "value", "samples"],
    )
    with redis_server() as server:
        store = RedisFlagStore(redis.Redis.from_url(server.url, decode_responses=True))
        store.init("google", at - timedelta(days=1), "test")
        outcome = run_pass([spec], store, ReplaySource(frame), at, dry_run=True)["google"]
        assert outcome.dry_run and outcome.audit_id is not None
        env = {"REDIS_URL": server.url}
        text = rollout("explain", outcome.audit_id, "--config", str(config), env=env)
        body = rollout("explain", outcome.audit_id, "--config", str(config), "--json", env=env)

    assert text.exit_code == 0 and body.exit_code == 0, (text.output, body.output)
    assert "recorded: promote" not in text.stdout, text.stdout
    assert json.loads(body.stdout)["recorded"].get("dry_run") is True
