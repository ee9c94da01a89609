"""`rollout explain` on a fast-abort entry says "differs" and blames a configuration change
that never happened.

The abort path (tasks/controller.add_alert_verdict -> rollout_core.abort.abort_proposals) adds
the firing alert as a pseudo-SLO verdict `alert:<name>` (a breach, limit NaN) and the entry's
inputs record it. explain replays the inputs through `evaluate_all`, which judges only the
configured SLOs: the alert's breach is dropped, the replay proposes whatever the (healthy)
SLOs say, and the differences read "SLO 'alert:GmailErrorRateFast' is no longer configured"
with the config hash unchanged. Every fast abort that beat the SLO window (the reason the fast
path exists), the decisions an SRE most wants explained, is reported as not reproducible:
here explain says today's controller would have promoted to 100%.

Observed: reproduces false; replayed a hold (or promote); a difference naming the alert as an
unconfigured SLO. Expected: reproduces true (same config, same code, same inputs).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import redis

from rollout_core import controller
from rollout_core.abort import Alert, abort_proposals
from rollout_core.config import parse_config
from rollout_core.flags import RedisFlagStore
from rollout_core.model import SloReading, SloSnapshot
from tests.review._support import redis_server, rollout

CONFIG = """
features:
  google:
    abort_on: [GmailErrorRateFast]
    dwell: 15m
    slos:
      - name: error_rate
        ratio:
          errors: sum(increase(e_total[5m]))
          total: sum(increase(t_total[5m]))
        max: 0.01
        min_samples: 200
"""


def test_explain_reproduces_a_fast_abort_written_by_the_abort_path(tmp_path: Path) -> None:
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    spec = parse_config(CONFIG).feature("google")
    with redis_server() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        store = RedisFlagStore(client)
        store.init("google", datetime(2026, 1, 6, 8, tzinfo=UTC), "test")
        client.set("flags:google:rollout_percent", "50")
        now = datetime(2026, 1, 6, 9, tzinfo=UTC)
        # the SLO window has not caught up yet: healthy; the fast alert fires
        readings = {"error_rate": SloReading("error_rate", 0.001, 1000.0)}
        snapshots = {"google": SloSnapshot("google", readings, now)}
        states = controller.read_states(store, ["google"])
        alert = Alert(
            "GmailErrorRateFast", "google", "firing", "fp1", "2026-01-06T08:59:00Z",
            {"alertname": "GmailErrorRateFast", "rollout_feature": "google"}, "0.09",
        )  # fmt: skip
        proposals = controller.evaluate_all([spec], snapshots, states)
        proposals = abort_proposals([spec], proposals, states, alert)
        decisions = controller.check_all_guards([spec], states, proposals, now)
        outcome = controller.apply_decisions(
            store, decisions, states, now, False, episodes={"google": alert.episode}
        )["google"]
        assert outcome.applied and outcome.decision is not None
        assert str(outcome.decision.action) == "rollback"

        result = rollout(
            "explain", str(outcome.audit_id), "--config", str(config), "--json",
            env={"REDIS_URL": server.url},
        )  # fmt: skip

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["recorded"]["action"] == "rollback"
    assert body["replayed"]["action"] == "rollback", body["differences"]
    assert body["reproduces"] is True, body["differences"]
