"""`rollout stack`: the whole product on loopback ports, detached, with its state in one folder.

`up` starts redis-server, Prometheus (this project's alert rules, a 5 s scrape of the sample
service and the Pushgateway, alerting to Alertmanager), the Pushgateway, Alertmanager,
`prefect server start`, a process worker on `rollout-pool` with the deployments of
prefect.yaml, the alert bridge (Alertmanager's `rollout_feature` alerts become Prefect events
that trigger the abort deployment, which runs live here), and the Gmail sample service. Each
runs in its own process group and outlives the command; `<dir>/stack.json` records their
pids, so `down` stops exactly those processes.

The Prefect server and worker helpers here are also what the end-to-end tests start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from deployments.deploy import prefect_executable
from deployments.ha import HEARTBEAT_SECONDS, SENTINEL_SERVICE, create_zombie_automation
from deployments.servers import (
    RunningServer,
    ServerFailedToStart,
    free_port,
    scoped_environ,
    start_alertmanager,
    start_process,
    start_prometheus,
    start_pushgateway,
    start_redis,
    wait_for_http,
)

__all__ = [
    "POOL",
    "STACK_DIR_ENV",
    "Component",
    "ServerFailedToStart",
    "StackState",
    "StoppedComponent",
    "UpResult",
    "alive",
    "down",
    "inject",
    "prefect_client",
    "read_state",
    "replace_worker",
    "resolve_stack_dir",
    "signal_component",
    "stack_env",
    "start_component",
    "start_prefect_server",
    "start_worker",
    "stop_component",
    "stop_group",
    "stop_process_group",
    "up",
    "worker_online",
]

POOL = "rollout-pool"
STACK_DIR_ENV = "ROLLOUT_STACK_DIR"
STATE_FILE = "stack.json"
PROJECT_DIR = Path(__file__).resolve().parents[1]
PREFECT = prefect_executable()
SCRAPE_INTERVAL = "5s"
STOP_GRACE_SECONDS = 10.0
# The port an operator expects for each server; taken only when free (see _port).
USUAL_PORTS = {
    "prefect-server": 4200,
    "prometheus": 9090,
    "pushgateway": 9091,
    "alertmanager": 9093,
    "redis": 6379,
    "sample-service": 9101,
    "alert-bridge": 9095,
    "postgres": 5432,
}
ABORT_LIVE_NOTE = (
    "rollout-controller/abort runs LIVE in this stack (a playground): a firing abort_on alert "
    "rolls the feature back in Redis; the scheduled controller keeps prefect.yaml's dry_run"
)
TOPOLOGIES = ("single", "ha")
# the HA topology's Redis: primary, replica, three Sentinels
HA_REDIS_PORTS = (6379, 6380, 26379, 26380, 26381)
QUIET_PREFECT = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}


# --- processes by id ------------------------------------------------------------------------


def _process(pid: int) -> psutil.Process | None:
    """The live process `pid` (a zombie has exited: nothing reaps orphans in some containers)."""
    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else process
    except psutil.Error:
        return None


def start_time(pid: int) -> float:
    """The process' start time (psutil's create_time): with the pid it names one process, never
    a reused pid; 0 when it is gone."""
    process = _process(pid)
    try:
        return process.create_time() if process else 0.0
    except psutil.Error:
        return 0.0


def alive(pid: int, started: float = 0) -> bool:
    """The process runs, and is the one that started at `started` (when given)."""
    process = _process(pid)
    if process is None:
        return False
    try:
        return not started or abs(process.create_time() - started) < 0.01
    except psutil.Error:
        return False


def _group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (psutil has no process-group field: os.getpgid)."""
    members = []
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError):
            if process.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(process.pid) == pgid:
                members.append(process.pid)
    return members


def stop_group(pid: int, first: signal.Signals, grace: float = STOP_GRACE_SECONDS) -> bool:
    """`first` to the process group led by `pid` (started with start_new_session), SIGKILL to
    whatever is left after `grace` seconds; True when the group had live processes.
    (psutil.wait_procs would wait out the grace on a zombie no one reaps, so this polls.)"""
    if not _group_members(pid):
        return False
    for sig, wait in ((first, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _group_members(pid):
                return True
            time.sleep(0.05)
    return True


def stop_process_group(process: subprocess.Popen[bytes], first: signal.Signals) -> None:
    """stop_group for a child of this process, which is then reaped."""
    if process.poll() is None:
        stop_group(process.pid, first)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


# --- Prefect server and worker ---------------------------------------------------------------


def start_prefect_server(
    home: Path,
    port: int | None = None,
    *,
    ui: bool = True,
    extra_env: dict[str, str] | None = None,
    timeout: float = 120,
    give_up: threading.Event | None = None,
) -> RunningServer:
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME (its SQLite database);
    `url` is the API URL. About 8 s on a fresh database, 3 s on an existing one. Setting
    `give_up` ends the wait early (the caller then stops the server)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/api"
    argv = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    argv += [] if ui else ["--no-ui"]
    # its own API URL: an inherited PREFECT_API_URL (a stale shell export) would become the
    # URL the UI calls
    env = {"PREFECT_HOME": str(home), "PREFECT_API_URL": url, **QUIET_PREFECT, **(extra_env or {})}
    ready = _unless(give_up, wait_for_http(f"{url}/health"))
    return start_process("prefect-server", argv, port, home, ready, url, timeout, env)


def start_worker(
    home: Path,
    api_url: str,
    env: dict[str, str],
    pool: str = POOL,
    timeout: float = 90,
    give_up: threading.Event | None = None,
    name: str = "worker",
) -> RunningServer:
    """`prefect worker start --pool <pool>` polling every second; flow runs inherit `env`
    (the stack's REDIS_URL, PROMETHEUS_BASE_URL, PUSHGATEWAY_URL). Stop it with SIGINT: a
    worker in the background ignores SIGTERM."""
    # flow runs inherit the worker's environment: an inherited WARNING level (QUIET_PREFECT, a
    # shell's export) would keep every decision line out of the run logs in the UI
    worker_env = {
        **env,
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(home),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    argv = [PREFECT, "worker", "start", "--pool", pool, "--type", "process"]
    argv += [] if name == "worker" else ["--name", f"{name}-{os.getpid()}-{time.time_ns()}"]
    launched = datetime.now(UTC)  # the database may remember workers of an earlier stack
    with prefect_client(api_url) as client:  # one client for every readiness probe
        online = lambda: worker_online(api_url, pool, since=launched, client=client)  # noqa: E731
        ready = _unless(give_up, online)
        return start_process(name, argv, 0, home, ready, api_url, timeout, worker_env)


def _unless(give_up: threading.Event | None, probe: Callable[[], bool]) -> Callable[[], bool]:
    """A readiness probe that also answers True once `give_up` is set."""
    return lambda: (give_up is not None and give_up.is_set()) or probe()


def _post_json(url: str, body: dict[str, Any]) -> Any:
    """POST to the sample service (not Prefect: Prefect goes through Prefect's client)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read() or b"null")


def prefect_client(api_url: str) -> Any:
    """Prefect's own sync client (what `get_client(sync_client=True)` returns) for the server
    at `api_url`, whatever this process's PREFECT_API_URL says; use it in a `with` block."""
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api_url)


def worker_online(
    api_url: str, pool: str = POOL, since: datetime | None = None, client: Any = None
) -> bool:
    """A worker polls `pool` (with a heartbeat after `since`, when given)."""
    import httpx
    from prefect.client.schemas.filters import WorkerFilter, WorkerFilterLastHeartbeatTime
    from prefect.exceptions import ObjectNotFound

    heard = None
    if since is not None:
        after = WorkerFilterLastHeartbeatTime(after_=since)  # type: ignore[arg-type]
        heard = WorkerFilter(last_heartbeat_time=after)
    try:
        with client or prefect_client(api_url) as prefect:
            return bool(prefect.read_workers_for_work_pool(pool, worker_filter=heard))
    except (httpx.HTTPError, ObjectNotFound, OSError):
        return False


def _ensure_pool(api_url: str, pool: str) -> None:
    """The process work pool, created before the worker and the deploy start side by side."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with prefect_client(api_url) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))


@contextlib.contextmanager
def _prefect_api(api_url: str, home: Path) -> Iterator[None]:
    """This process and its children (`prefect deploy`) talk to the stack's server."""
    with scoped_environ({"PREFECT_API_URL": api_url, "PREFECT_HOME": str(home)}):
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: api_url}):
            yield


# --- the stack --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """One process the stack started; `started` guards against a reused pid."""

    name: str
    pid: int
    started: float  # psutil's create_time
    url: str
    log: str
    stop_signal: str = "SIGTERM"

    def is_alive(self) -> bool:
        return alive(self.pid, self.started)


@dataclass(frozen=True)
class StackState:
    """What `<dir>/stack.json` holds."""

    directory: str
    components: list[Component]
    env: dict[str, str]
    urls: dict[str, str]
    up_seconds: float = 0.0
    deployments: list[str] = field(default_factory=list)
    topology: str = "single"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> StackState:
        data = json.loads(text)
        data["components"] = [Component(**c) for c in data["components"]]
        # a stack.json written before the topology was recorded: the env tells
        data.setdefault("topology", "ha" if "REDIS_SENTINELS" in data.get("env", {}) else "single")
        return cls(**data)

    def dead(self) -> list[Component]:
        return [c for c in self.components if not c.is_alive()]

    def exports(self) -> str:
        return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in self.env.items())


def resolve_stack_dir(explicit: Path | None = None) -> Path:
    """--dir, else $ROLLOUT_STACK_DIR, else ./.stack (git-ignored)."""
    chosen = explicit or Path(os.environ.get(STACK_DIR_ENV) or ".stack")
    return chosen.expanduser().resolve()


def read_state(directory: Path) -> StackState | None:
    path = directory / STATE_FILE
    if not path.exists():
        return None
    try:
        return StackState.from_json(path.read_text(encoding="utf-8"))
    except (ValueError, TypeError, KeyError) as error:
        raise RuntimeError(
            f"{path} is not a stack state file ({error}); stop its processes by hand and delete it"
        ) from None


def _port(name: str, usual_ports: bool) -> int:
    """The operator's usual port when it is free, else any free loopback port."""
    if usual_ports:
        import socket

        with socket.socket() as probe, contextlib.suppress(OSError):
            # as the servers bind: a port in TIME_WAIT after the last `down` is free for them
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", USUAL_PORTS[name]))
            return USUAL_PORTS[name]
    return free_port()


def _component(server: RunningServer, stop_signal: str = "SIGTERM") -> Component:
    pid = server.process.pid
    return Component(
        server.name, pid, start_time(pid), server.url, str(server.log_path), stop_signal
    )


# the sample service labels its traffic by region, so a segmented rollout can be seen live
STACK_REGIONS = ("eu-canary", "eu-west", "us-east")


def _start_sample_service(directory: Path, port: int, redis_url: str) -> RunningServer:
    argv = [sys.executable, "-m", "deployments.sample_service", "--port", str(port)]
    argv += ["--providers", "google", "--redis-url", redis_url]  # a closed loop on the flag
    argv += ["--regions", ",".join(STACK_REGIONS)]
    url = f"http://127.0.0.1:{port}"
    ready = wait_for_http(f"{url}/state")
    return start_process("sample-service", argv, port, directory, ready, url, 30)


@dataclass
class UpResult:
    state: StackState
    already_up: bool = False
    notes: list[str] = field(default_factory=list)
    # the components started again on a stack partly down (the rest was left running)
    restarted_only: list[str] = field(default_factory=list)


def up(
    directory: Path,
    *,
    usual_ports: bool = True,
    ui: bool = True,
    project_dir: Path = PROJECT_DIR,
    log: Callable[[str], None] = lambda line: None,
    topology: str | None = None,
) -> UpResult:
    """Start the stack, or report the one already up. On a failure everything started so far
    is stopped and ServerFailedToStart (with the log tail) or MissingServer is raised.

    `topology="ha"`: Prefect's server on PostgreSQL, two workers, and Redis as a primary, a
    replica and three Sentinels (REDIS_URL is then a redis+sentinel:// URL). None: the
    topology of the stack in `directory`, else "single". Asking for another topology than the
    stack in `directory` has is a RuntimeError naming both.

    A stack partly down: when only workers, Redis servers or Sentinels died, only those are
    started again (a Redis server as a replica of the master the Sentinels name); otherwise
    the whole stack is stopped and started again. Either way Redis keeps its flags and audit
    (append-only file in its data folder), and the notes say what was restarted."""
    previous = read_state(directory)
    if topology is None:
        topology = previous.topology if previous is not None else "single"
    if topology not in TOPOLOGIES:
        raise RuntimeError(f"topology {topology!r} is unknown; expected one of {TOPOLOGIES}")
    notes: list[str] = []
    primary_dir = "redis-primary"
    if previous is not None:
        if previous.topology != topology:
            raise RuntimeError(_other_topology(directory, previous, topology))
        dead = previous.dead()
        if not dead:
            return UpResult(previous, already_up=True)
        names = ", ".join(f"{c.name} (pid {c.pid})" for c in dead)
        restarted = _restart_dead(directory, previous, dead)
        if restarted is not None:
            state, started_again = restarted
            notes = [f"the stack in {directory} was partly down: {names}", *started_again]
            return UpResult(state, notes=notes, restarted_only=[c.name for c in dead])
        primary_dir = _last_master_dir(previous)
        notes.append(
            f"the stack in {directory} was partly down: {names}; not only workers, Redis "
            "servers or Sentinels, so every process was stopped and started again "
            f"({', '.join(c.name for c in previous.components)}); Redis reloaded its flags and "
            "audit from its append-only file"
        )
        down(directory, remove_outside_cluster=False)
        if primary_dir != "redis-primary":  # the Sentinels' last master keeps its data
            _swap(directory / "redis" / "redis-primary", directory / "redis" / primary_dir)
    directory.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()

    def step(what: str) -> None:
        log(f"{time.perf_counter() - began:5.1f} s  {what}")

    started: list[tuple[RunningServer, str]] = []
    give_up = threading.Event()  # a failure stops the background wait for a slow server
    try:
        prefect_env: dict[str, str] = {}
        if topology == "ha":
            from deployments.ha import start_postgres

            postgres = start_postgres(directory / "postgres", _port("postgres", usual_ports))
            started.append((postgres, "SIGINT"))  # SIGINT: PostgreSQL's fast shutdown
            prefect_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = postgres.url
            step("postgresql")
        with ThreadPoolExecutor(max_workers=1) as background:
            # the Prefect server is the slow one: the others start while it migrates its db
            prefect_future = background.submit(
                start_prefect_server,
                directory / "prefect-server",
                _port("prefect-server", usual_ports),
                ui=ui,
                give_up=give_up,
                extra_env=prefect_env,
            )
            try:
                redis_server, redis_ha = _start_stack_redis(directory, usual_ports, topology)
                for server in redis_ha.servers() if redis_ha else [redis_server]:
                    started.append((server, "SIGTERM"))
                pushgateway = start_pushgateway(
                    directory / "pushgateway", _port("pushgateway", usual_ports)
                )
                started.append((pushgateway, "SIGTERM"))
                bridge_port = _port("alert-bridge", usual_ports)
                bridge_token = secrets.token_urlsafe(24)
                alertmanager = start_alertmanager(
                    directory / "alertmanager",
                    alertmanager_config_for_bridge(
                        project_dir / "observability" / "alertmanager.yml",
                        directory / "alertmanager" / "alertmanager.yml",
                        f"http://127.0.0.1:{bridge_port}/alerts",
                        bridge_token,
                    ),
                    _port("alertmanager", usual_ports),
                )
                started.append((alertmanager, "SIGTERM"))
                sample = _start_sample_service(
                    directory / "sample-service",
                    _port("sample-service", usual_ports),
                    redis_ha.url if redis_ha else redis_server.url,
                )
                started.append((sample, "SIGTERM"))
                prometheus = start_prometheus(
                    directory / "prometheus",
                    scrape_targets={
                        "sample": [sample.host_port],
                        "pushgateway": [pushgateway.host_port],
                    },
                    rule_files=[project_dir / "observability" / "prometheus-alerts.yml"],
                    scrape_interval=SCRAPE_INTERVAL,
                    evaluation_interval=SCRAPE_INTERVAL,
                    alertmanager=alertmanager.host_port,
                    port=_port("prometheus", usual_ports),
                )
                started.append((prometheus, "SIGTERM"))
                step("redis, pushgateway, alertmanager, prometheus, sample service")
            except BaseException:
                give_up.set()
                raise
            finally:
                _collect(prefect_future, "SIGTERM", started, give_up)
            prefect_server = prefect_future.result()
            step("prefect server")
            bridge = start_alert_bridge(
                directory / "alert-bridge",
                bridge_port,
                bridge_token,
                prefect_server.url,
                project_dir / "rollouts.yaml",
            )
            started.append((bridge, "SIGTERM"))
            step("alert bridge")
        env = stack_env(
            topology,
            directory,
            prefect_api_url=prefect_server.url,
            redis_url=redis_ha.url if redis_ha else redis_server.url,
            prometheus_url=prometheus.url,
            pushgateway_url=pushgateway.url,
            bridge_token=bridge_token,
            sentinel_hosts=redis_ha.sentinel_hosts if redis_ha else "",
        )
        worker_env = env  # the workers' flow runs and the operator's shell (env.sh) alike
        if redis_ha is not None:
            create_zombie_automation(prefect_server.url)
        _ensure_pool(prefect_server.url, POOL)
        with ThreadPoolExecutor(max_workers=1) as background:
            worker_future = background.submit(
                start_worker,
                directory / "prefect-worker",
                prefect_server.url,
                worker_env,
                give_up=give_up,
            )
            try:
                with _prefect_api(prefect_server.url, directory / "prefect-client"):
                    from deployments.deploy import deploy_all

                    deploy_all(project_dir, work_pool=POOL)
                make_abort_live(prefect_server.url)
                notes.append(ABORT_LIVE_NOTE)
                step("deployments from prefect.yaml (abort live)")
            except BaseException:
                give_up.set()
                raise
            finally:
                _collect(worker_future, "SIGINT", started, give_up)
            worker_future.result()
            step("worker online")
        if topology == "ha":  # the second worker: runs go on when one of them dies
            second = start_worker(
                directory / "prefect-worker-2", prefect_server.url, worker_env, name="worker-2"
            )
            started.append((second, "SIGINT"))
            step("second worker online")
        components = [_component(server, stop_signal) for server, stop_signal in started]
        urls = {
            "Prefect UI": prefect_server.url.removesuffix("/api"),
            "Prefect API": prefect_server.url,
            "Prometheus": prometheus.url,
            "Alertmanager": alertmanager.url,
            "Alert bridge": bridge.url,
            "Pushgateway": pushgateway.url,
            "Redis": redis_ha.url if redis_ha else redis_server.url,
            "Sample service": f"{sample.url}/metrics",
        }
        state = StackState(
            str(directory),
            components,
            env,
            urls,
            round(time.perf_counter() - began, 1),
            _deployment_names(prefect_server.url),
            topology,
        )
        (directory / STATE_FILE).write_text(state.to_json(), encoding="utf-8")
        (directory / "env.sh").write_text(state.exports() + "\n", encoding="utf-8")
    except BaseException:
        for server, stop_signal in reversed(started):
            stop_group(server.process.pid, signal.Signals[stop_signal])
        raise
    return UpResult(state, notes=notes)


def stack_env(
    topology: str,
    directory: Path,
    *,
    prefect_api_url: str,
    redis_url: str,
    prometheus_url: str,
    pushgateway_url: str,
    bridge_token: str,
    sentinel_hosts: str = "",
) -> dict[str, str]:
    """The environment the stack prints and writes to env.sh, and the one its workers (so
    their flow runs) get: a `rollout run --live` from the operator's shell behaves as a
    scheduled run on a worker. The HA topology adds the Sentinels, heartbeats (a run whose
    process died is marked Crashed) and the write memory (a lost write is refused)."""
    env = {
        "PREFECT_API_URL": prefect_api_url,
        "REDIS_URL": redis_url,
        "PROMETHEUS_BASE_URL": prometheus_url,
        "PUSHGATEWAY_URL": pushgateway_url,
        "ROLLOUT_AUDIT_LOG": str(directory / "rollout_log.md"),
        "ROLLOUT_BRIDGE_TOKEN": bridge_token,  # a playground's token, made per `up`
    }
    if topology == "ha":
        env["REDIS_SENTINELS"] = sentinel_hosts
        env["REDIS_SENTINEL_SERVICE"] = SENTINEL_SERVICE
        env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(HEARTBEAT_SECONDS)
        env["ROLLOUT_WRITE_MEMORY"] = "true"
    return env


def _other_topology(directory: Path, previous: StackState, asked: str) -> str:
    dead = previous.dead()
    how = "partly down" if dead else "up"
    return (
        f"the stack in {directory} is a --topology {previous.topology} stack ({how}, "
        f"REDIS_URL={previous.env.get('REDIS_URL', '?')}); you asked for --topology {asked}. "
        f"Run `rollout stack up --topology {previous.topology}` to use (or restart) it, or "
        f"`rollout stack down --dir {directory}` then `rollout stack up --topology {asked}` "
        "for the other one (its flags and audit start empty), or pass another --dir"
    )


def _port_of(component: Component) -> int:
    """The port in a component's URL (redis://127.0.0.1:6379/0, 127.0.0.1:26379)."""
    return int(component.url.rpartition(":")[2].partition("/")[0])


def _sentinels_master(state: StackState) -> int | None:
    """The port the Sentinels name as master (maybe a dead one); None when none answers."""
    from deployments.ha import sentinel_master_port

    try:
        return sentinel_master_port(state.env["REDIS_SENTINELS"])
    except (RuntimeError, KeyError, ValueError):
        return None


def _restart_dead(
    directory: Path, state: StackState, dead: list[Component]
) -> tuple[StackState, list[str]] | None:
    """Start again only the dead workers, Redis servers and Sentinels, each in its folder and
    on its port (a Redis server of the HA topology as a replica of the Sentinels' master),
    recorded in stack.json; (the state, one note per restart). None, starting nothing, when
    another component died or, for Redis, the Sentinels name no live master."""
    restartable = ("worker", "redis", "sentinel")
    if not all(c.name.startswith(restartable) for c in dead):
        return None
    master = None
    if state.topology == "ha" and any(c.name.startswith(("redis", "sentinel")) for c in dead):
        master = _sentinels_master(state)
        if master is None or any(_port_of(c) == master for c in dead):
            return None  # no master to follow: the whole stack starts again
    from deployments.ha import start_redis_node, start_sentinel

    notes = []
    for component in dead:
        home = Path(component.log).parent
        if component.name.startswith("worker"):
            api = state.env["PREFECT_API_URL"]
            server = start_worker(home, api, dict(state.env), name=component.name)
        elif component.name.startswith("sentinel") and master is not None:
            server = start_sentinel(home, master, _port_of(component))
        elif master is not None:
            server = start_redis_node(home, _port_of(component), replica_of=master)
        else:
            server = start_redis(home, _port_of(component), appendonly=True)
        fresh = _component(server, component.stop_signal)
        _record(directory, component, fresh)
        notes.append(f"restarted only {component.name}: pid {fresh.pid}")
    kept = [c.name for c in state.components if c not in dead]
    notes.append(f"left running, untouched: {', '.join(kept)}")
    updated = read_state(directory)
    assert updated is not None
    return updated, notes


def _last_master_dir(state: StackState) -> str:
    """The folder (under <dir>/redis) of the Redis server the Sentinels last named master,
    so a whole restart starts it as the primary with its data; redis-primary by default."""
    master = _sentinels_master(state) if state.topology == "ha" else None
    for component in state.components:
        if component.name.startswith("redis") and _port_of(component) == master:
            return Path(component.log).parent.name
    return "redis-primary"


def _swap(one: Path, other: Path) -> None:
    """Exchange two folders' names."""
    if not other.exists():
        return
    parked = one.with_name(one.name + ".swap")
    one.rename(parked)
    other.rename(one)
    parked.rename(other)


def alertmanager_config_for_bridge(source: Path, target: Path, url: str, token: str) -> Path:
    """A copy of alertmanager.yml whose `rollout-abort` webhook calls the bridge at `url` with
    `token`; the other receivers are kept as written (loopback placeholders)."""
    import yaml

    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    [receiver] = [r for r in config["receivers"] if r["name"] == "rollout-abort"]
    for webhook in receiver["webhook_configs"]:
        webhook["url"] = url
        webhook["http_config"]["authorization"] = {"type": "Bearer", "credentials": token}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return target


def start_alert_bridge(
    directory: Path, port: int, token: str, api_url: str, config_path: Path, timeout: float = 60
) -> RunningServer:
    """`rollout alert-bridge` on 127.0.0.1:`port`, sending events to the Prefect API."""
    argv = [sys.executable, "-m", "rollout_cli.main", "alert-bridge", "--port", str(port)]
    argv += ["--config", str(config_path)]
    url = f"http://127.0.0.1:{port}"
    env = {
        "ROLLOUT_BRIDGE_TOKEN": token,
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(directory / "prefect-home"),
        **QUIET_PREFECT,
    }
    ready = wait_for_http(f"{url}/-/healthy")
    server = start_process("alert-bridge", argv, port, directory, ready, url, timeout, env)
    server.extra["alerts_url"] = f"{url}/alerts"
    return server


def make_abort_live(
    api_url: str, name: str = "rollout-controller/abort", *, live: bool = True
) -> None:
    """The stack's abort deployment runs live (prefect.yaml ships it as a dry run)."""
    from prefect.client.schemas.actions import DeploymentUpdate

    with prefect_client(api_url) as client:
        deployment = client.read_deployment_by_name(name)
        parameters = {**(deployment.parameters or {}), "dry_run": not live}
        client.update_deployment(deployment.id, DeploymentUpdate(parameters=parameters))


def _collect(
    future: Any, stop_signal: str, started: list[tuple[RunningServer, str]], give_up: Any
) -> None:
    """Add a background start's server to `started`, so a failure stops it too. Interrupted
    while waiting (Ctrl-C): end its wait now, collect it, and let the interrupt go on."""
    try:
        started.append((future.result(), stop_signal))
    except Exception:
        pass  # it failed to start: nothing of it runs
    except BaseException:
        give_up.set()
        with contextlib.suppress(Exception):
            started.append((future.result(timeout=30), stop_signal))
        raise


def _start_stack_redis(
    directory: Path, usual_ports: bool, topology: str
) -> tuple[RunningServer, Any]:
    """The stack's Redis: one server, or (its primary, the RedisHA) for the HA topology."""
    if topology != "ha":
        return start_redis(directory / "redis", _port("redis", usual_ports), appendonly=True), None
    from deployments.ha import start_redis_ha

    ports = [_free_or_any(port, usual_ports) for port in HA_REDIS_PORTS]
    redis_ha = start_redis_ha(directory / "redis", ports)
    return redis_ha.nodes[0], redis_ha


def _free_or_any(port: int, usual_ports: bool) -> int:
    import socket

    if usual_ports:
        with socket.socket() as probe, contextlib.suppress(OSError):
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
            return port
    return free_port()


def _deployment_names(api_url: str) -> list[str]:
    with prefect_client(api_url) as client:
        deployments = client.read_deployments()  # the stack's own server: prefect.yaml's
        flows = {flow.id: flow.name for flow in client.read_flows()}
    return sorted(f"{flows.get(d.flow_id, '?')}/{d.name}" for d in deployments)


def down(directory: Path, *, remove_outside_cluster: bool = True) -> list[Component] | None:
    """Stop every process the stack started (the worker first, so no run starts mid-way),
    then remove stack.json, and the PostgreSQL cluster of the HA topology when it had to live
    outside `directory` (`<dir>/postgres/cluster-path` names it: see deployments/ha.py) unless
    `remove_outside_cluster` is False (a restart); None when no stack is up there."""
    state = read_state(directory)
    if state is None:
        return None
    order = sorted(
        state.components,
        key=lambda c: (
            not c.name.startswith("worker"),
            c.name != "sample-service",
            c.name == "postgres",
        ),
    )
    stopped = []
    for component in order:
        # the leader may be gone while its children (a flow run of the worker) still run
        if component.is_alive() or _group_members(component.pid):
            stop_group(component.pid, signal.Signals[component.stop_signal])
            stopped.append(component)
    (directory / STATE_FILE).unlink(missing_ok=True)
    (directory / "env.sh").unlink(missing_ok=True)
    pointer = directory / "postgres" / "cluster-path"
    if remove_outside_cluster and pointer.exists():
        import shutil

        shutil.rmtree(pointer.read_text(encoding="utf-8").strip(), ignore_errors=True)
        pointer.unlink()
    return stopped


def inject(
    directory: Path, changes: dict[str, float], regions: list[str] | None = None
) -> dict[str, Any]:
    """POST the traffic changes to the running sample service (only to `regions`, when
    given); its new state per provider and region."""
    state = read_state(directory)
    if state is None:
        raise RuntimeError(f"no stack is up in {directory}; start it with `rollout stack up`")
    [sample] = [c for c in state.components if c.name == "sample-service"]
    if not sample.is_alive():
        raise RuntimeError(
            f"the sample service (pid {sample.pid}) is not running; see {sample.log}, "
            "then `rollout stack down` and `rollout stack up`"
        )
    body: dict[str, Any] = dict(changes)
    if regions is not None:
        body["regions"] = regions
    result: dict[str, Any] = _post_json(f"{sample.url}/inject", body)
    return result


# --- one component at a time (the fault soak stops, freezes and restarts them) ---------------


@dataclass(frozen=True)
class StoppedComponent:
    """A component stopped by stop_component, with what starting it again needs."""

    component: Component
    argv: list[str]
    env: dict[str, str]
    cwd: str


def require_state(directory: Path) -> StackState:
    """The running stack's state; RuntimeError when no stack is up in `directory`."""
    state = read_state(directory)
    if state is None:
        raise RuntimeError(f"no stack is up in {directory}")
    return state


def _named(state: StackState, name: str) -> Component:
    found = [c for c in state.components if c.name == name]
    if not found:
        known = ", ".join(c.name for c in state.components)
        raise RuntimeError(f"the stack in {state.directory} has no {name!r}; it has {known}")
    return found[-1]


def _record(directory: Path, remove: Component | None, add: Component | None) -> StackState:
    """stack.json with `remove` taken out and `add` put in (so `down` stops what runs)."""
    state = require_state(directory)
    components = [c for c in state.components if c != remove]
    components += [add] if add is not None else []
    updated = dataclasses.replace(state, components=components)
    (directory / STATE_FILE).write_text(updated.to_json(), encoding="utf-8")
    return updated


def stop_component(
    directory: Path, name: str, first: signal.Signals | None = None
) -> StoppedComponent:
    """Stop the component `name` (its process group, with its own stop signal unless `first`
    is given, e.g. SIGKILL), keeping its command line, environment and folder to start it
    again with start_component; stack.json keeps it until then (`down` skips the dead)."""
    state = require_state(directory)
    component = _named(state, name)
    process = _process(component.pid)
    if process is None or not component.is_alive():
        raise RuntimeError(f"{name} (pid {component.pid}) is not running; see {component.log}")
    stopped = StoppedComponent(component, process.cmdline(), process.environ(), process.cwd())
    stop_group(component.pid, first or signal.Signals[component.stop_signal])
    return stopped


def signal_component(directory: Path, name: str, sig: signal.Signals) -> None:
    """Send `sig` to the component's process group (SIGSTOP freezes a server, SIGCONT thaws)."""
    state = require_state(directory)
    os.killpg(_named(state, name).pid, sig)


def start_component(directory: Path, stopped: StoppedComponent, timeout: float = 60) -> Component:
    """Start a stopped component again: the same command line, environment, folder, port and
    data (Prometheus keeps its TSDB), ready when its URL answers `/-/ready` (or, for a server
    without one, when its port accepts); stack.json then records the new process."""
    old = stopped.component
    url = old.url.rstrip("/")
    port = int(url.rpartition(":")[2].partition("/")[0]) if url.count(":") >= 2 else 0
    probe = wait_for_http(f"{url}/-/ready") if url.startswith("http") else _accepts(port)
    log_dir = Path(old.log).parent
    log_path = log_dir / f"{old.name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            stopped.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=stopped.env,
            cwd=stopped.cwd,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while not probe():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process_group(process, signal.SIGKILL)
            raise ServerFailedToStart(f"{old.name} did not start again; see {log_path}")
        time.sleep(0.05)
    fresh = Component(
        old.name, process.pid, start_time(process.pid), old.url, str(log_path), old.stop_signal
    )
    _record(directory, old, fresh)
    return fresh


def _accepts(port: int) -> Callable[[], bool]:
    import socket

    def probe() -> bool:
        with socket.socket() as connection:
            connection.settimeout(0.5)
            return connection.connect_ex(("127.0.0.1", port)) == 0

    return probe


def replace_worker(directory: Path, stopped: StoppedComponent, timeout: float = 90) -> Component:
    """A new worker on the pool in place of a stopped (killed) one, with its environment
    (what its flow runs inherit), named `worker-<n>`; recorded in stack.json."""
    state = require_state(directory)
    taken = {c.name for c in state.components}
    name = next(f"worker-{n}" for n in itertools.count(2) if f"worker-{n}" not in taken)
    home = directory / f"prefect-{name}"
    server = start_worker(
        home, state.env["PREFECT_API_URL"], dict(stopped.env), timeout=timeout, name=name
    )
    fresh = _component(server, "SIGINT")
    _record(directory, stopped.component, fresh)
    return fresh
