"""The kill switch on a real Prefect server: `rollout controller pause|resume|status`, audited in
the real Redis stream, and a paused controller that stays paused across `rollout deploy`, a
`rollout serve` restart, an interrupted deploy and a busy server.

Each test sets the switch it starts from, so the order of the tests does not matter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from typer.testing import CliRunner, Result

from deployments.kill_switch import CONTROLLER_DEPLOYMENT, SCHEDULE_SLUG, SwitchState, read_switch
from deployments.stack import POOL
from rollout_cli.main import app
from tests.e2e.conftest import REPO_ROOT, Stack
from tests.integration.conftest import audit_entries
from tests.integration.traffic import poll

pytestmark = pytest.mark.e2e


@pytest.fixture
def operator_env(
    prefect_client_env: str, stack: Stack, deployed: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[redis.Redis]:
    """The operator's shell: PREFECT_API_URL and REDIS_URL of the test servers, USER alice."""
    monkeypatch.setenv("REDIS_URL", stack.redis.url)
    monkeypatch.setenv("USER", "alice")
    client = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    yield client
    client.close()


def rollout(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def switch() -> SwitchState:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return read_switch(client)


def set_switch(*, schedule_active: bool, paused: bool = False) -> SwitchState:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = read_switch(client)
        for schedule in state.schedules:
            client.update_deployment_schedule(
                state.deployment_id, schedule.id, active=schedule_active
            )
        if paused:
            client.pause_deployment(state.deployment_id)
        else:
            client.resume_deployment(state.deployment_id)
        return read_switch(client)


def controller_entries(client: redis.Redis) -> list[dict[str, str]]:
    return audit_entries(client, "controller")


def test_controller_pause_makes_the_schedule_inactive_and_is_audited(
    operator_env: redis.Redis,
) -> None:
    before = set_switch(schedule_active=True)
    audited = len(controller_entries(operator_env))

    result = rollout("controller", "pause", "--reason", "incident 4711")

    after = switch()
    assert result.exit_code == 0, result.output
    assert "PAUSED" in result.stdout
    assert [(s.id, s.slug, s.active) for s in after.schedules] == [
        (before.schedules[0].id, SCHEDULE_SLUG, False)
    ]
    entry = controller_entries(operator_env)[audited]
    assert entry["action"] == "controller-pause" and entry["by"] == "alice"
    assert entry["reason"] == f"{CONTROLLER_DEPLOYMENT} paused: incident 4711"
    assert entry["dry_run"] == "false"


def test_controller_pause_cancels_the_runs_already_due_so_no_worker_starts_them(
    operator_env: redis.Redis,
) -> None:
    from datetime import UTC, datetime, timedelta

    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    state = set_switch(schedule_active=True)
    overdue = datetime.now(UTC) - timedelta(minutes=5)  # Late: the worker was down
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(
            state.deployment_id, state=Scheduled(scheduled_time=overdue)
        )

    result = rollout("controller", "pause", "--reason", "incident 4712")

    assert result.exit_code == 0, result.output
    with get_client(sync_client=True) as client:
        after = client.read_flow_run(run.id)
        handed = client.get_scheduled_flow_runs_for_work_pool(
            POOL, scheduled_before=datetime.now(UTC) + timedelta(minutes=1)
        )
    assert after.state is not None and after.state.is_cancelled(), after.state
    assert "kill switch" in (after.state.message or "")
    assert run.id not in {r.flow_run.id for r in handed}


def test_a_controller_run_that_starts_while_the_switch_is_off_is_skipped_and_writes_nothing(
    operator_env: redis.Redis,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    from flows.controller import PAUSED_REASON, rollout_controller

    state = set_switch(schedule_active=True)
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(state.deployment_id)
    set_switch(schedule_active=False)  # switched off after the run was handed to a worker
    before = {key: operator_env.get(key) for key in operator_env.scan_iter("flags:*")}

    final = run_flow(rollout_controller, flow_run=run, parameters={}, return_type="state")

    assert final.is_completed() and final.name == "Skipped", final
    assert final.message == PAUSED_REASON
    assert {key: operator_env.get(key) for key in operator_env.scan_iter("flags:*")} == before


def test_controller_resume_makes_the_schedule_active_and_unpauses_the_deployment(
    operator_env: redis.Redis,
) -> None:
    set_switch(schedule_active=False, paused=True)
    audited = len(controller_entries(operator_env))

    result = rollout("controller", "resume", "--by", "bob")

    after = switch()
    assert result.exit_code == 0, result.output
    assert "RUNNING" in result.stdout
    assert not after.deployment_paused and [s.active for s in after.schedules] == [True]
    entry = controller_entries(operator_env)[audited]
    assert (entry["action"], entry["by"]) == ("controller-resume", "bob")


def test_controller_status_shows_the_schedule_and_runs_as_json_and_audits_a_read(
    operator_env: redis.Redis,
) -> None:
    set_switch(schedule_active=False)
    audited = len(controller_entries(operator_env))

    result = rollout("controller", "status", "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["deployment"] == CONTROLLER_DEPLOYMENT
    assert document["switched_off"] is True and document["deployment_paused"] is False
    [schedule] = document["schedules"]
    assert (schedule["slug"], schedule["interval_seconds"], schedule["active"]) == (
        SCHEDULE_SLUG,
        600.0,
        False,
    )
    assert isinstance(document["runs"], list)
    entry = controller_entries(operator_env)[audited]
    assert entry["action"] == "controller-status"
    assert entry["reason"] == f"read only: {CONTROLLER_DEPLOYMENT} paused"


def test_controller_status_in_text_names_the_interval_and_the_pause(
    operator_env: redis.Redis,
) -> None:
    set_switch(schedule_active=False)

    result = rollout("controller", "status")

    assert result.exit_code == 0, result.output
    assert f"{CONTROLLER_DEPLOYMENT}: PAUSED (schedule {SCHEDULE_SLUG} inactive)" in result.stdout
    assert f"schedule {SCHEDULE_SLUG}: every 600 s, inactive" in result.stdout


def test_controller_commands_refuse_an_unknown_or_malformed_deployment_with_exit_2(
    operator_env: redis.Redis,
) -> None:
    audited = len(controller_entries(operator_env))

    unknown = rollout("controller", "pause", "--deployment", "rollout-controller/nope")
    malformed = rollout("controller", "status", "--deployment", "every-10-minutes")

    assert unknown.exit_code == 2 and "no deployment 'rollout-controller/nope'" in unknown.output
    assert malformed.exit_code == 2 and "is not flow/deployment" in malformed.output
    assert len(controller_entries(operator_env)) == audited  # nothing happened, nothing audited


def test_controller_pause_without_prefect_api_url_exits_2_and_unreachable_exits_1(
    operator_env: redis.Redis,
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.servers import free_port

    with temporary_settings({PREFECT_API_URL: ""}):
        unset = rollout("controller", "pause")
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        down = rollout("controller", "pause")

    assert unset.exit_code == 2 and "PREFECT_API_URL is not set" in unset.output
    assert down.exit_code == 1 and "did not answer" in down.output


def test_a_paused_controller_stays_paused_across_rollout_deploy(
    operator_env: redis.Redis,
) -> None:
    before = set_switch(schedule_active=True)
    assert rollout("controller", "pause").exit_code == 0

    report = rollout("deploy", "--project-dir", str(REPO_ROOT))

    after = switch()
    assert report.exit_code == 0, report.output
    assert f"kept switched off as before: {CONTROLLER_DEPLOYMENT}" in report.output
    assert [(s.id, s.active) for s in after.schedules] == [(before.schedules[0].id, False)]


def test_an_interrupted_deploy_still_restores_the_pause(
    operator_env: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C once `prefect deploy` has re-activated the schedule: the finally pauses it again."""
    import deployments.deploy as deploy_module

    set_switch(schedule_active=False, paused=True)
    real_run = subprocess.run

    def deploy_then_interrupt(*args: Any, **kwargs: Any) -> Any:
        real_run(*args, **kwargs)
        assert not switch().deployment_paused  # the plain deploy lifted the pause
        raise KeyboardInterrupt

    monkeypatch.setattr(deploy_module.subprocess, "run", deploy_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        deploy_module.deploy_all(REPO_ROOT)

    after = switch()
    assert after.deployment_paused and [s.active for s in after.schedules] == [False]


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_a_deploy_killed_by_sigterm_or_sighup_still_restores_the_pause(
    operator_env: redis.Redis, monkeypatch: pytest.MonkeyPatch, number: signal.Signals
) -> None:
    import deployments.deploy as deploy_module

    set_switch(schedule_active=False, paused=True)
    real_run = subprocess.run
    previous = signal.getsignal(number)

    def deploy_then_signal(*args: Any, **kwargs: Any) -> Any:
        real_run(*args, **kwargs)
        assert not switch().deployment_paused  # the plain deploy lifted the pause
        os.kill(os.getpid(), number)  # as systemd, `timeout` or a closed ssh session would
        raise AssertionError("the signal did not interrupt the deploy")

    monkeypatch.setattr(deploy_module.subprocess, "run", deploy_then_signal)
    with pytest.raises(SystemExit) as stopped:
        deploy_module.deploy_all(REPO_ROOT)

    after = switch()
    assert stopped.value.code == 128 + number
    assert after.deployment_paused and [s.active for s in after.schedules] == [False]
    assert signal.getsignal(number) == previous


def test_a_failed_restore_raises_kill_switch_off_naming_the_deployment_and_the_fix(
    operator_env: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    import deployments.deploy as deploy_module

    set_switch(schedule_active=False, paused=True)

    def api_gone(client: Any, before: list[SwitchState]) -> list[str]:
        raise httpx.ConnectError("connection refused")

    monkeypatch.setattr(deploy_module, "restore_pauses", api_gone)
    with pytest.raises(deploy_module.KillSwitchOff) as raised:
        deploy_module.deploy_all(REPO_ROOT)
    report = rollout("deploy", "--project-dir", str(REPO_ROOT))

    message = str(raised.value)
    assert message.startswith(f"THE KILL SWITCH IS OFF: {CONTROLLER_DEPLOYMENT}")
    assert f"rollout controller pause --deployment {CONTROLLER_DEPLOYMENT}" in message
    assert report.exit_code == 1 and "error: THE KILL SWITCH IS OFF" in report.output
    assert not switch().deployment_paused  # the deploy lifted the pause: what it warns of
    set_switch(schedule_active=False)  # what the operator does next


def test_deploy_finds_the_paused_controller_on_a_server_with_more_than_a_page_of_deployments(
    operator_env: redis.Redis,
) -> None:
    """Deployments named before `every-10-minutes` fill the server's default page of 200."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("busy-server-filler")
        for number in range(205):
            client.create_deployment(flow_id=flow_id, name=f"a-filler-{number:03d}")
        assert all(d.name != "every-10-minutes" for d in client.read_deployments())
    set_switch(schedule_active=False)

    report = rollout("deploy", "--project-dir", str(REPO_ROOT))

    assert report.exit_code == 0, report.output
    assert [s.active for s in switch().schedules] == [False]


@pytest.mark.parametrize(
    ("schedule_active", "paused"),
    [(False, True), (True, False)],
    ids=["switched-off-stays-off", "switched-on-stays-on"],
)
def test_rollout_serve_keeps_the_switch_as_it_was_across_a_start_and_a_sigterm(
    operator_env: redis.Redis,
    prefect_client_env: str,
    stack: Stack,
    schedule_active: bool,
    paused: bool,
) -> None:
    """A real `rollout serve` process: it starts, serves, and is stopped by SIGTERM as systemd
    stops it. A paused controller stays paused; a running one is not paused by the stop (a
    restart must not switch it off either). Same schedule, slug and id throughout."""
    before = set_switch(schedule_active=schedule_active, paused=paused)
    updated_before = switch_with_update()[1]
    env = {**os.environ, **stack.env, "PREFECT_API_URL": prefect_client_env}
    serve = subprocess.Popen(
        [sys.executable, "-m", "rollout_cli.main", "serve", "--config", str(stack.config_path)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # serving: the runner has registered the deployment and polls it for runs (only then
        # does it handle SIGTERM; earlier, the signal's default action would end it unseen)
        served = poll(
            switch_with_update,
            lambda s: s[1] > updated_before and s[2] is not None and s[2] > updated_before,
            120,
            "serve to apply and poll",
        )[0]
    finally:
        serve.send_signal(signal.SIGTERM)
        output = serve.communicate(timeout=60)[0].decode(errors="replace")
    stopped = switch()
    set_switch(schedule_active=False)  # leave no schedule running for the other tests
    assert "serving rollout-controller" in output, output
    for state in (served, stopped):
        assert state.deployment_paused is paused, output
        assert [(s.id, s.slug, s.active) for s in state.schedules] == [
            (before.schedules[0].id, SCHEDULE_SLUG, schedule_active)
        ]


def test_serve_builds_an_active_schedule_when_the_switch_is_on_and_keeps_it_active(
    operator_env: redis.Redis,
) -> None:
    """What serve registers at start (RunnerDeployment.apply, as the runner does): on stays on."""
    from prefect.client.orchestration import get_client

    from deployments.serve import served_deployments

    before = set_switch(schedule_active=True)
    with get_client(sync_client=True) as client:
        controller, override = served_deployments(client, interval_seconds=600)
    controller.apply()
    override.apply()

    after = switch()
    assert not after.deployment_paused
    assert [(s.id, s.slug, s.active) for s in after.schedules] == [
        (before.schedules[0].id, SCHEDULE_SLUG, True)
    ]
    set_switch(schedule_active=False)  # leave no schedule running for the other tests


def switch_with_update() -> tuple[SwitchState, Any, Any]:
    """The switch, when the deployment was last updated, and when a runner last polled it."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(CONTROLLER_DEPLOYMENT)
        return read_switch(client), deployment.updated, deployment.last_polled
