"""explain "reproduces" a decision today's configuration would not take: the inputs record
the policy's reading of an absent count series (0), not the reading itself (no series).

policy._evaluate_scalar turns an absent count series into 0.0 when absent_is_zero is on, and
the verdict carries that 0.0; decision_inputs records the verdict's value. So an entry made
when the series was absent says `oauth_refresh_failures 0.0`, and explain, replaying it under
a config with `absent_is_zero: false` (where live would read "no data" and hold), feeds 0.0
and gets the same promotion: "reproduces". The recorded reason itself says "(no series, read
as 0)"; the replay's does not.

Observed: reproduces true under absent_is_zero: false. Expected: differs (today: hold,
inconclusive), naming absent_is_zero (or at least the verdict of oauth_refresh_failures).
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
      - name: oauth_refresh_failures
        kind: count
        query: sum(increase(oauth_failures_total[15m]))
        max: 5
        absent_is_zero: ABSENT
"""


def test_explain_sees_that_an_absent_series_would_no_longer_read_as_zero(tmp_path: Path) -> None:
    then = CONFIG.replace("ABSENT", "true")
    today = tmp_path / "rollouts.yaml"
    today.write_text(CONFIG.replace("ABSENT", "false"), encoding="utf-8")
    at = datetime(2026, 1, 5, 10, tzinfo=UTC)
    frame = pd.DataFrame(  # the failure counter has no series: never exported yet
        [(at, "google", "error_rate", 0.002, 1000.0)],
        columns=["time", "feature", "slo", "value", "samples"],
    )
    with redis_server() as server:
        store = RedisFlagStore(redis.Redis.from_url(server.url, decode_responses=True))
        store.init("google", at - timedelta(days=1), "test")
        spec = parse_config(then).feature("google")
        outcome = run_pass([spec], store, ReplaySource(frame), at, dry_run=False)["google"]
        assert outcome.applied and outcome.audit_id is not None
        assert "no series, read as 0" in outcome.decision.reason  # type: ignore[union-attr]
        result = rollout(
            "explain", outcome.audit_id, "--config", str(today), "--json",
            env={"REDIS_URL": server.url},
        )  # fmt: skip

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["reproduces"] is False, body["replayed"]["reason"]
    assert body["replayed"]["action"] == "hold"
