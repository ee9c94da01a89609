"""R15 defect (docs/production.md's "Redis Sentinel" path, tested on paper): Sentinels that
require a password (`requirepass` in sentinel.conf, the default of common Sentinel
deployments such as the Bitnami chart's `auth.sentinel: true`, which uses the same password
as Redis) cannot be used at all. rollout_sdk/sentinel.py master_client gives the URL's
password to the master connections only (sentinel_kwargs carries just the timeouts), so
every Sentinel answers NOAUTH and the controller, the CLI and every service report "No
master found for 'rollout'". Neither the URL grammar nor REDIS_SENTINELS has a way to give
the Sentinels a password, and production.md does not say Sentinel auth is unsupported.

Real redis-server (password) and a real Sentinel with requirepass. Run:
.venv/bin/python -m pytest tests/review/<this file> -q
"""

from __future__ import annotations

from pathlib import Path

import redis

from deployments.servers import free_port, require_binary, start_process, start_redis
from rollout_core.redis_connection import connect

PASSWORD = "s3cret-pw"


def start_protected_sentinel(directory: Path, master_port: int):  # type: ignore[no-untyped-def]
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
        f"sentinel monitor rollout 127.0.0.1 {master_port} 1\n"
        f"sentinel auth-pass rollout {PASSWORD}\n"
        f"requirepass {PASSWORD}\n"
    )

    def ready() -> bool:
        probe = redis.Redis(port=port, password=PASSWORD, socket_timeout=1)
        try:
            return bool(probe.execute_command("SENTINEL", "MASTERS"))
        except redis.RedisError:
            return False
        finally:
            probe.close()

    argv = [require_binary("redis-server"), str(config), "--sentinel"]
    return start_process("sentinel", argv, port, directory, ready, f"127.0.0.1:{port}", 20)


def test_a_password_protected_sentinel_finds_the_master_with_the_urls_password(
    tmp_path: Path,
) -> None:
    master = start_redis(tmp_path / "redis", password=PASSWORD)
    sentinel = start_protected_sentinel(tmp_path / "sentinel", master.port)
    try:
        client = connect(f"redis+sentinel://:{PASSWORD}@{sentinel.host_port}/rollout/0")
        try:
            answer = client.ping()
        except redis.RedisError as error:  # observed: MasterNotFoundError (NOAUTH)
            answer = repr(error)[:300]
        assert answer is True, answer
    finally:
        sentinel.stop()
        master.stop()
