"""Start the real servers on loopback ports, wait until they answer, stop them by process id.

Used by the test suite, the benchmarks and `rollout stack`. Each server runs in the
foreground as a child process with its data under a directory the caller owns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "APT_PACKAGES",
    "MissingServer",
    "RunningServer",
    "ServerFailedToStart",
    "free_port",
    "require_binary",
    "scoped_environ",
    "start_alertmanager",
    "start_process",
    "start_prometheus",
    "start_pushgateway",
    "start_redis",
    "wait_for_http",
]

APT_PACKAGES = {
    "redis-server": "redis-server",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-pushgateway": "prometheus-pushgateway",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
}


class MissingServer(RuntimeError):
    """A server binary is not on the PATH."""

    def __init__(self, binary: str) -> None:
        package = APT_PACKAGES.get(binary, binary)
        super().__init__(
            f"{binary} is not on the PATH; install it with "
            f"`apt-get install -y --no-install-recommends {package}` (or run `make servers`)"
        )


class ServerFailedToStart(RuntimeError):
    """A server exited or did not become ready in time; the message carries its log tail."""


def require_binary(binary: str) -> str:
    """The binary's path, or MissingServer: a missing server fails, it never skips."""
    path = shutil.which(binary)
    if path is None:
        raise MissingServer(binary)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    """A child server process on a loopback port."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    url: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL at once: an outage, as tests simulate it."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def reload(self) -> None:
        """SIGHUP: Prometheus and Alertmanager re-read their configuration and rules."""
        self.process.send_signal(signal.SIGHUP)


def start_process(
    name: str,
    argv: Sequence[str],
    port: int,
    data_dir: Path,
    ready: Callable[[], bool],
    url: str,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> RunningServer:
    """Start argv with its output in `data_dir/<name>.log` and wait until `ready()`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # a Ctrl-C in the terminal does not reach it twice
        )
    server = RunningServer(name, port, process, data_dir, log_path, url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailedToStart(
                f"{name} exited with code {process.returncode}:\n{server.log_tail()}"
            )
        with contextlib.suppress(Exception):
            if ready():
                return server
        time.sleep(0.02)
    server.kill()
    raise ServerFailedToStart(f"{name} not ready after {timeout:.0f}s:\n{server.log_tail()}")


@contextlib.contextmanager
def scoped_environ(values: dict[str, str]) -> Iterator[None]:
    """Set these environment variables for the block (and the processes it starts), then put
    back what was there."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def wait_for_http(url: str) -> Callable[[], bool]:
    """A readiness probe: the URL answers 200."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    return probe


def _redis_ping(port: int, password: str | None) -> Callable[[], bool]:
    """A readiness probe through redis-py: PING answers (with the password, when set)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    def probe() -> bool:
        client = redis.Redis(
            port=port,
            password=password,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),  # the launcher's own loop retries
        )
        try:
            return bool(client.ping())
        finally:
            client.close()

    return probe


def start_redis(
    data_dir: Path, port: int | None = None, password: str | None = None, appendonly: bool = False
) -> RunningServer:
    """redis-server on 127.0.0.1, without persistence unless `appendonly` (an append-only
    file in `data_dir`, fsync every second: a restart keeps the data); `url` is a redis://
    URL."""
    binary = require_binary("redis-server")
    port = port or free_port()
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir)]
    argv += ["--save", "", "--appendonly", "yes" if appendonly else "no"]
    argv += ["--daemonize", "no", "--logfile", ""]
    if password:
        argv += ["--requirepass", password]
    probe = _redis_ping(port, password)
    auth = f":{password}@" if password else ""
    return start_process(
        "redis", argv, port, data_dir, probe, f"redis://{auth}127.0.0.1:{port}/0", timeout=15
    )


def start_pushgateway(data_dir: Path, port: int | None = None) -> RunningServer:
    binary = require_binary("prometheus-pushgateway")
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [binary, f"--web.listen-address=127.0.0.1:{port}"]
    argv += [f"--persistence.file={data_dir / 'pgw.data'}"]
    return start_process("pushgateway", argv, port, data_dir, wait_for_http(f"{url}/-/ready"), url)


def start_prometheus(
    data_dir: Path,
    scrape_targets: dict[str, list[str]] | None = None,
    rule_files: Sequence[Path] = (),
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    alertmanager: str | None = None,
    port: int | None = None,
    honor_labels_jobs: Sequence[str] = ("pushgateway",),
    extra_args: Sequence[str] = (),
) -> RunningServer:
    """prometheus scraping `scrape_targets` ({job: ["host:port"]}), with lifecycle reloads;
    `extra_args` are added flags, e.g. `--query.max-samples=100`."""
    binary = require_binary("prometheus")
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    config = data_dir / "prometheus.yml"
    data_dir.mkdir(parents=True, exist_ok=True)
    config.write_text(
        _prometheus_config(
            scrape_targets or {},
            rule_files,
            scrape_interval,
            evaluation_interval,
            alertmanager,
            honor_labels_jobs,
        )
    )
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        *extra_args,
    ]
    server = start_process("prometheus", argv, port, data_dir, wait_for_http(f"{url}/-/ready"), url)
    server.extra["config"] = str(config)
    return server


def _prometheus_config(
    scrape_targets: dict[str, list[str]],
    rule_files: Sequence[Path],
    scrape_interval: str,
    evaluation_interval: str,
    alertmanager: str | None,
    honor_labels_jobs: Sequence[str],
) -> str:
    import yaml

    config: dict[str, object] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "scrape_configs": [
            {
                "job_name": job,
                "honor_labels": job in honor_labels_jobs,
                "static_configs": [{"targets": targets}],
            }
            for job, targets in scrape_targets.items()
        ],
    }
    if rule_files:
        config["rule_files"] = [str(path) for path in rule_files]
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return yaml.safe_dump(config, sort_keys=False)


def start_alertmanager(data_dir: Path, config_file: Path, port: int | None = None) -> RunningServer:
    """Alertmanager with clustering off (an empty cluster address), so it binds loopback only."""
    binary = require_binary("prometheus-alertmanager")
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        binary,
        f"--config.file={config_file}",
        f"--storage.path={data_dir / 'alertmanager'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    return start_process("alertmanager", argv, port, data_dir, wait_for_http(f"{url}/-/ready"), url)
