"""The HA topology's servers on loopback: PostgreSQL for Prefect, Redis primary + replica +
three Sentinels, and the failover moves the soak and the end-to-end test make.

PostgreSQL refuses to run as root, so as root it runs as the `postgres` user (`runuser`);
its binaries live in /usr/lib/postgresql/<version>/bin, off the PATH. Sentinel is
`redis-server <conf> --sentinel` with a config file it may rewrite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from deployments.servers import (
    MissingServer,
    RunningServer,
    ServerFailedToStart,
    free_port,
    require_binary,
    start_process,
)

__all__ = [
    "HEARTBEAT_SECONDS",
    "SENTINEL_SERVICE",
    "ZOMBIE_AUTOMATION",
    "RedisHA",
    "create_zombie_automation",
    "fail_over_stack",
    "postgres_bin",
    "sentinel_master_port",
    "start_postgres",
    "start_redis_ha",
    "start_redis_node",
    "start_sentinel",
]

SENTINEL_SERVICE = "rollout"
# flow runs send a heartbeat this often (Prefect's minimum); a run silent for
# HEARTBEAT_SECONDS + ZOMBIE_GRACE_SECONDS (its worker died with it) is marked Crashed
HEARTBEAT_SECONDS = 30
ZOMBIE_GRACE_SECONDS = 15
ZOMBIE_AUTOMATION = "rollout: crash flow runs whose heartbeats stopped"
# a dead master is declared down after this long; Sentinel's failover then takes ~1-2 s more
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def postgres_bin(name: str) -> str:
    """The path of a PostgreSQL server binary (initdb, postgres, createdb), newest version."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise MissingServer("postgresql")
    return path


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses root: run as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def start_postgres(
    data_dir: Path, port: int | None = None, database: str = "prefect"
) -> RunningServer:
    """PostgreSQL on 127.0.0.1 (trust auth, user `prefect`), its cluster initialised into
    `data_dir/data` on first start, with `database` created; `url` is the asyncpg URL Prefect
    takes (PREFECT_SERVER_DATABASE_CONNECTION_URL)."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(data_dir, "postgres")
        data_dir = _reachable_by_postgres(data_dir)
    cluster = data_dir / "data"
    if not (cluster / "PG_VERSION").exists():
        initdb = [postgres_bin("initdb"), "-D", str(cluster), "-U", "prefect", "--auth=trust"]
        subprocess.run(_as_postgres(initdb), check=True, capture_output=True, timeout=120)
    argv = _as_postgres(
        [
            postgres_bin("postgres"),
            "-D",
            str(cluster),
            "-p",
            str(port),
            "-k",
            str(data_dir),
            "-h",
            "127.0.0.1",
            "-c",
            "max_connections=200",
            "-c",
            "fsync=off",
        ]
    )
    url = f"postgresql+asyncpg://prefect@127.0.0.1:{port}/{database}"
    log_dir = data_dir / "log"
    log_dir.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(log_dir, "postgres")

    def ready() -> bool:
        probe = [postgres_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "prefect"]
        return subprocess.run(probe, capture_output=True, timeout=5).returncode == 0

    server = start_process("postgres", argv, port, log_dir, ready, url, timeout=60)
    create = [postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "prefect"]
    made = subprocess.run([*create, database], capture_output=True, text=True, timeout=30)
    if made.returncode != 0 and "already exists" not in made.stderr:
        server.kill()
        raise ServerFailedToStart(f"createdb {database} failed: {made.stderr.strip()}")
    return server


def _reachable_by_postgres(data_dir: Path) -> Path:
    """`data_dir`, or when the postgres user cannot reach it (a parent such as pytest's
    /tmp/pytest-of-root is private to root), a folder under /tmp it owns, named in
    `data_dir/cluster-path` so the next start finds the same cluster."""
    probe = ["runuser", "-u", "postgres", "--", "test", "-w", str(data_dir)]
    if subprocess.run(probe, capture_output=True, timeout=10).returncode == 0:
        return data_dir
    pointer = data_dir / "cluster-path"
    if pointer.exists() and Path(pointer.read_text().strip()).is_dir():
        return Path(pointer.read_text().strip())
    elsewhere = Path(tempfile.mkdtemp(prefix="rollout-postgres-"))
    shutil.chown(elsewhere, "postgres")
    pointer.write_text(str(elsewhere))
    return elsewhere


def start_redis_node(
    data_dir: Path, port: int | None = None, replica_of: int | None = None
) -> RunningServer:
    """redis-server on 127.0.0.1 with an append-only file in `data_dir` (fsync every second:
    a restart keeps the flags and the audit), a replica of 127.0.0.1:`replica_of` when given.
    A replica reads only after its first sync, so readiness waits for the link."""
    binary = require_binary("redis-server")
    port = port or free_port()
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir)]
    argv += ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]
    argv += ["--daemonize", "no", "--logfile", ""]
    # a full sync starts at once (the default waits 5 s for more replicas to join)
    argv += ["--repl-diskless-sync-delay", "0"]
    if replica_of is not None:
        argv += ["--replicaof", "127.0.0.1", str(replica_of)]

    def ready() -> bool:
        client = _direct(port)
        try:
            info = client.info("replication")
            return replica_of is None or info.get("master_link_status") == "up"
        finally:
            client.close()

    name = "redis-replica" if replica_of is not None else "redis-primary"
    return start_process(
        name, argv, port, data_dir, ready, f"redis://127.0.0.1:{port}/0", timeout=60
    )


def start_sentinel(data_dir: Path, master_port: int, port: int | None = None) -> RunningServer:
    """A Sentinel watching 127.0.0.1:`master_port` as SENTINEL_SERVICE (quorum 2 of 3)."""
    binary = require_binary("redis-server")
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "sentinel.conf"  # Sentinel rewrites it: it must be writable
    config.write_text(
        "\n".join(
            [
                f"port {port}",
                "bind 127.0.0.1",
                f"dir {data_dir}",
                f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {master_port} 2",
                f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {SENTINEL_SERVICE} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {SENTINEL_SERVICE} 1",
                "",
            ]
        )
    )

    def ready() -> bool:
        client = _direct(port)
        try:
            return bool(client.execute_command("SENTINEL", "MASTERS"))
        finally:
            client.close()

    return start_process(
        "sentinel", [binary, str(config), "--sentinel"], port, data_dir, ready,
        f"127.0.0.1:{port}", timeout=20,
    )  # fmt: skip


def create_zombie_automation(api_url: str) -> None:
    """Prefect's documented zombie-run automation, also armed by the Pending and Running
    states: a flow run whose heartbeats stop, or never start (its worker and process were
    killed), is set Crashed, which frees its deployment concurrency slot; the next scheduled
    run then proceeds on another worker. Idempotent by name."""
    from prefect.automations import Automation, ChangeFlowRunState, EventTrigger, Posture
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        with contextlib.suppress(ValueError):
            if Automation.read(name=ZOMBIE_AUTOMATION):
                return
        Automation(
            name=ZOMBIE_AUTOMATION,
            trigger=EventTrigger(
                # Pending and Running too: a run whose worker dies before its first heartbeat
                # reaches the API would otherwise hold its concurrency slot for ever
                after={
                    "prefect.flow-run.Pending",
                    "prefect.flow-run.Running",
                    "prefect.flow-run.heartbeat",
                },
                expect={
                    "prefect.flow-run.Pending",
                    "prefect.flow-run.Running",
                    "prefect.flow-run.heartbeat",
                    "prefect.flow-run.Completed",
                    "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled",
                    "prefect.flow-run.Crashed",
                },
                match={"prefect.resource.id": ["prefect.flow-run.*"]},
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(seconds=HEARTBEAT_SECONDS + ZOMBIE_GRACE_SECONDS),
            ),
            actions=[
                ChangeFlowRunState(
                    state=StateType.CRASHED,
                    message="no heartbeat: the worker running it died; marked Crashed",
                )
            ],
        ).create()


def _direct(port: int) -> redis.Redis:
    return redis.Redis(
        port=port,
        socket_connect_timeout=0.5,
        socket_timeout=2,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


@dataclass
class RedisHA:
    """A primary, a replica and three Sentinels; `url` is the redis+sentinel:// URL."""

    directory: Path
    nodes: list[RunningServer]
    sentinels: list[RunningServer]
    failovers: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def sentinel_hosts(self) -> str:
        return ",".join(s.host_port for s in self.sentinels)

    @property
    def url(self) -> str:
        return f"redis+sentinel://{self.sentinel_hosts}/{SENTINEL_SERVICE}/0"

    def master_port(self) -> int:
        """The port the Sentinels name as master now."""
        for sentinel in self.sentinels:
            if not sentinel.is_running():
                continue
            with contextlib.suppress(redis.RedisError):
                client = _direct(sentinel.port)
                try:
                    _, port = client.execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE
                    )
                    return int(port)
                finally:
                    client.close()
        raise RuntimeError("no Sentinel answers")

    def node(self, port: int) -> RunningServer:
        [found] = [n for n in self.nodes if n.port == port]
        return found

    def fail_over(self, timeout: float = 30.0) -> tuple[int, int]:
        """Kill the primary (SIGKILL), wait until the Sentinels promote the replica, restart
        the old primary as a replica of the new one; (old port, new port)."""
        old = self.master_port()
        self.node(old).kill()
        deadline = time.monotonic() + timeout
        new = old
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):
                new = self.master_port()
            if new != old and _role(new) == "master":
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"no failover from 127.0.0.1:{old} within {timeout:.0f} s")
        self.nodes.remove(self.node(old))
        self.nodes.append(start_redis_node(self.directory / f"redis-{old}", old, replica_of=new))
        self.failovers += 1
        self.log.append(f"failover {old} -> {new}")
        return old, new

    def wait_for_master(self, port: int, timeout: float = 30.0) -> None:
        """Until the Sentinels name 127.0.0.1:`port` as master and it says so itself."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):
                if self.master_port() == port and _role(port) == "master":
                    self.failovers += 1
                    return
            time.sleep(0.1)
        raise RuntimeError(f"127.0.0.1:{port} was not promoted within {timeout:.0f} s")

    def wait_replicated(self, timeout: float = 30.0) -> None:
        """Until the master has a connected replica (after a failover's restart)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, RuntimeError):
                client = _direct(self.master_port())
                try:
                    if int(client.info("replication").get("connected_slaves", 0)) >= 1:
                        return
                finally:
                    client.close()
            time.sleep(0.1)
        raise RuntimeError("the master has no connected replica")

    def stop(self) -> None:
        for server in [*self.sentinels, *self.nodes]:
            server.stop()

    def servers(self) -> list[RunningServer]:
        return [*self.nodes, *self.sentinels]


def _role(port: int) -> str:
    client = _direct(port)
    try:
        return str(client.info("replication").get("role"))
    except redis.RedisError:
        return "down"
    finally:
        client.close()


def start_redis_ha(directory: Path, ports: Sequence[int] = ()) -> RedisHA:
    """Primary, replica (synced) and three Sentinels on loopback; stops what it started if a
    part fails. `ports`: primary, replica, three Sentinels (any free one where absent)."""
    chosen = list(ports) + [free_port() for _ in range(5 - len(ports))]
    started: list[RunningServer] = []
    try:
        primary = start_redis_node(directory / "redis-primary", chosen[0])
        started.append(primary)
        replica = start_redis_node(directory / "redis-replica", chosen[1], replica_of=primary.port)
        started.append(replica)
        sentinels = []
        for index, port in enumerate(chosen[2:5]):
            sentinel = start_sentinel(directory / f"sentinel-{index}", primary.port, port)
            started.append(sentinel)
            sentinels.append(sentinel)
    except BaseException:
        for server in started:
            server.kill()
        raise
    ha = RedisHA(directory, [primary, replica], sentinels)
    _wait_sentinels_agree(ha)
    return ha


def _wait_sentinels_agree(ha: RedisHA, timeout: float = 20.0) -> None:
    """Until every Sentinel knows the replica and the other two Sentinels (a failover needs
    both)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        agreed = 0
        for sentinel in ha.sentinels:
            with contextlib.suppress(redis.RedisError):
                client = _direct(sentinel.port)
                try:
                    [master] = client.execute_command("SENTINEL", "MASTERS")
                    fields = (
                        master
                        if isinstance(master, dict)
                        else dict(zip(master[::2], master[1::2], strict=True))
                    )
                    if int(fields["num-slaves"]) >= 1 and int(fields["num-other-sentinels"]) >= 2:
                        agreed += 1
                finally:
                    client.close()
        if agreed == len(ha.sentinels):
            return
        time.sleep(0.2)
    raise ServerFailedToStart("the Sentinels did not discover the replica and each other in time")


def sentinel_master_port(sentinels: str) -> int:
    """The master's port as the first answering Sentinel of `host:port,host:port` names it."""
    for address in sentinels.split(","):
        port = int(address.rpartition(":")[2])
        with contextlib.suppress(redis.RedisError):
            client = _direct(port)
            try:
                _, master = client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE
                )
                return int(master)
            finally:
                client.close()
    raise RuntimeError(f"no Sentinel of {sentinels} answers")


def fail_over_stack(directory: Path, timeout: float = 30.0) -> tuple[int, int]:
    """On a running `--topology ha` stack: SIGKILL the Redis primary, wait until the Sentinels
    promote the replica, restart the old primary as its replica, and record the new process
    in stack.json (so `rollout stack down` stops it); (old port, new port)."""
    import signal

    from deployments.stack import STATE_FILE, _component, read_state, stop_group

    state = read_state(directory)
    if state is None or "REDIS_SENTINELS" not in state.env:
        raise RuntimeError(f"no --topology ha stack is up in {directory}")
    sentinels = state.env["REDIS_SENTINELS"]
    old = sentinel_master_port(sentinels)
    [primary] = [c for c in state.components if c.url == f"redis://127.0.0.1:{old}/0"]
    stop_group(primary.pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    new = old
    while new == old or _role(new) != "master":
        if time.monotonic() > deadline:
            raise RuntimeError(f"no failover from 127.0.0.1:{old} within {timeout:.0f} s")
        time.sleep(0.1)
        with contextlib.suppress(RuntimeError):
            new = sentinel_master_port(sentinels)
    restarted = start_redis_node(Path(primary.log).parent, old, replica_of=new)
    components = [c for c in state.components if c is not primary]
    components.append(_component(restarted))
    updated = dataclasses.replace(state, components=components)
    (directory / STATE_FILE).write_text(updated.to_json(), encoding="utf-8")
    return old, new
