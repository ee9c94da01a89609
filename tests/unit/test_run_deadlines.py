"""Backstops behind each query's own deadline (review 9, R8): the fetch task and the whole
controller run time out before the next scheduled run is due, so a hung Prometheus can never
make the deployment's CANCEL_NEW limit cancel the runs that would roll back."""

from __future__ import annotations

from pathlib import Path

import yaml

from flows.controller import RUN_TIMEOUT_SECONDS, rollout_controller
from tasks.controller import FETCH_TIMEOUT_SECONDS, fetch_slos, fetch_slos_with_backoff

PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"


def _controller_interval() -> float:
    document = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    [controller] = [
        d
        for d in document["deployments"]
        if d["entrypoint"].endswith(":rollout_controller") and d.get("schedules")
    ]
    return min(float(s["interval"]) for s in controller["schedules"])


def test_the_controller_run_times_out_before_the_next_scheduled_run() -> None:
    assert rollout_controller.timeout_seconds == RUN_TIMEOUT_SECONDS
    assert _controller_interval() > RUN_TIMEOUT_SECONDS


def test_each_fetch_try_has_a_timeout_within_the_run_timeout() -> None:
    assert fetch_slos.timeout_seconds == FETCH_TIMEOUT_SECONDS
    assert fetch_slos_with_backoff(0.5).timeout_seconds == FETCH_TIMEOUT_SECONDS
    assert (fetch_slos.retries + 1) * FETCH_TIMEOUT_SECONDS < RUN_TIMEOUT_SECONDS
