"""`rollout explain` on entries it cannot honestly read, and on ids that are not ids.

1. An entry written by a newer version (`"v": "99.0.0"`) whose SLO rows carry one more
   column: DecisionInputs.from_json reads column 8 as the error kind, so the SLO becomes a
   "query error: b:0.0008: recorded" and explain reports, confidently, "differs" with a
   verdict that was never recorded (inconclusive). The version is recorded precisely so
   that this can be checked.
   Expected: exit 2 saying the entry is from a newer version (or a warning and no verdict).
2. An entry whose recorded percent is "NaN": decoded without validation, replayed as
   "hold to nan%". Expected: refused as undecodable, like any other corrupt inputs.
3. A malformed AUDIT_ID (`garbage`): Redis' "Invalid stream ID" becomes "Redis ... failed;
   check the server log and REDIS_URL" with exit 1, blaming the infrastructure for a typo.
   Expected: exit 2 naming the expected form (e.g. 1767600000000-0).
4. A controller entry older than recorded inputs is refused with a message that contradicts
   itself ("(promote by controller) ... only the controller's changes ... do").
"""

from __future__ import annotations

import json
from pathlib import Path

import redis

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
RULES = {"ladder": [0.0, 10.0, 50.0, 100.0], "safe_percent": 10.0, "dwell": 900.0,
         "cooldown": 3600.0, "freeze": 0}  # fmt: skip
GUARD_NAMES = ("not_initialised", "disabled", "paused", "history", "dwell", "cooldown", "freeze")
GUARDS = [[name, False] for name in GUARD_NAMES]


def inputs(version: str, percent: object, row: list[object]) -> str:
    body = {
        "v": version, "h": "0123456789abcdef",
        "f": [percent, True, True, False, None, None, None],
        "s": [row], "g": GUARDS, "c": RULES, "d": ["promote", "promote", 10.0],
    }  # fmt: skip
    return json.dumps(body, separators=(",", ":"))


def add(client: redis.Redis, text: str) -> str:
    fields = {
        "time": "2026-01-05T10:00:00Z", "feature": "google", "old_percent": "0",
        "new_percent": "10", "reason": "Initial canary 0% -> 10%", "by": "controller",
        "dry_run": "false", "action": "promote", "inputs": text,
    }  # fmt: skip
    return str(client.xadd("rollout:audit", fields))  # type: ignore[arg-type]


def explain(url: str, config: Path, entry: str) -> tuple[int, str, str]:
    result = rollout("explain", entry, "--config", str(config), "--json", env={"REDIS_URL": url})
    return result.exit_code, result.stdout, result.stderr


def test_explain_does_not_misread_an_entry_from_a_newer_version(tmp_path: Path) -> None:
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    row = ["error_rate", "ratio", 0.002, 1000.0, 0.01, 200, "healthy", "b:0.0008"]
    with redis_server() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        code, out, err = explain(server.url, config, add(client, inputs("99.0.0", 0.0, row)))

    if code == 0:
        body = json.loads(out)
        assert "query error" not in json.dumps(body), body["differences"]
        assert body["reproduces"] is True, body["differences"]
    else:
        assert code == 2 and "99.0.0" in err, (code, err)


def test_explain_refuses_inputs_whose_percent_is_not_a_number(tmp_path: Path) -> None:
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    row = ["error_rate", "ratio", 0.002, 1000.0, 0.01, 200, "healthy"]
    with redis_server() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        code, out, _ = explain(server.url, config, add(client, inputs("0.1.0", "NaN", row)))

    assert code == 2, (code, out)
    assert "nan%" not in out.lower()


def test_a_malformed_audit_id_is_bad_input_not_a_redis_failure(tmp_path: Path) -> None:
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    with redis_server() as server:
        redis.Redis.from_url(server.url).xadd("rollout:audit", {"time": "x"})
        code, _, err = explain(server.url, config, "garbage")

    assert code == 2, (code, err)
    assert "failed" not in err and "server log" not in err, err


def test_a_controller_entry_from_before_inputs_existed_is_not_called_an_operator_entry(
    tmp_path: Path,
) -> None:
    """4. A controller entry written before decision inputs existed (every entry of a trail
    older than issue 14): "audit entry X (promote by controller) records no decision inputs:
    only the controller's changes and recommendations do", which contradicts itself.
    Expected: say the entry predates recorded inputs (no inputs to replay), exit 2."""
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    with redis_server() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        fields = {
            "time": "2025-10-08T15:00:00Z", "feature": "google", "old_percent": "0",
            "new_percent": "10", "reason": "Initial canary", "by": "controller",
            "dry_run": "false", "action": "promote",
        }  # fmt: skip
        entry = str(client.xadd("rollout:audit", fields))  # type: ignore[arg-type]
        code, _, err = explain(server.url, config, entry)

    assert code == 2, err
    assert "only the controller's changes" not in err, err
