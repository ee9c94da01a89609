"""The manual override flow (`rollout_override`, the `manual` deployment):

1. appends no line to the Markdown log (issue 10 item 14: "every audited write appends its
   line"); `rollout set` does, the override flow writes the stream entry only;
2. ends Completed "google: set to 1e-09%" while Redis holds "0" (the store rounds, the message
   reports the request): a run state that says something Redis does not hold;
3. takes a JSON `true` (`prefect deployment run ... -p percent=true`) as 1% and applies it.

Against real Redis and a real Prefect server (private PREFECT_HOME).

    .venv/bin/python tests/review/repro_override_flow_reports_and_logs_untruths.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.getcwd())
from tests.review._support import redis_server, verdict

RUN = """
import sys
from flows.override import rollout_override
state = rollout_override("google", float(sys.argv[1]) if sys.argv[1] != "true" else True,
                         "review", return_state=True)
print(state.type.value, state.message)
"""


def main() -> int:
    from deployments.stack import start_prefect_server

    home = Path(tempfile.mkdtemp(prefix="review-prefect-"))
    log_path = home / "rollout_log.md"
    prefect = start_prefect_server(home, ui=False)
    redis = redis_server()
    env = {**os.environ, "PREFECT_API_URL": prefect.url, "PREFECT_HOME": str(home),
           "REDIS_URL": redis.url, "ROLLOUT_AUDIT_LOG": str(log_path),
           "PREFECT_LOGGING_LEVEL": "ERROR"}  # fmt: skip
    try:
        subprocess.run([".venv/bin/rollout", "init", "google"], env=env, check=True)
        lines_before = len(log_path.read_text().splitlines())
        outputs = []
        for percent in ("40", "0.000000001", "true"):
            done = subprocess.run(
                [".venv/bin/python", "-c", RUN, percent], env=env, capture_output=True, text=True
            )
            held = subprocess.run(
                ["redis-cli", "-u", redis.url, "GET", "flags:google:rollout_percent"],
                capture_output=True, text=True,
            ).stdout.strip()  # fmt: skip
            outputs.append(f"percent={percent}: {done.stdout.strip()} | Redis holds {held!r}")
        added = len(log_path.read_text().splitlines()) - lines_before
        print("\n".join(outputs))
        return verdict(
            added == 3 and "1e-09%" not in outputs[1] and "COMPLETED" not in outputs[2],
            f"{added} Markdown line(s) for 3 audited override runs; " + "; ".join(outputs),
            "3 Markdown lines; a message that reports what Redis holds (0%, or a refusal of a "
            "percent finer than the gate's 0.01%); a boolean percent refused",
        )
    finally:
        redis.stop()
        prefect.stop()


if __name__ == "__main__":
    sys.exit(main())
