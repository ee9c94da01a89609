"""The write memory's names: one per Redis target however REDIS_URL spells it, no secret in
them, and the pre-normalisation name still recalled (Prefect's Variables read through a fake
here; tests/integration/test_write_memory.py reads the real ones)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pytest

import tasks.write_memory as write_memory
from tasks.write_memory import MEMORY_PREFIX, memory_target, memory_variable_name, recall_writes

PLAIN_SPELLINGS = [
    "redis://127.0.0.1:6379",
    "redis://127.0.0.1:6379/0",
    "redis://127.0.0.1",
    "redis://127.0.0.1/",
    "REDIS://127.0.0.1:6379/0",
    "redis://127.0.0.1:6379?db=0",
    "redis://:s3cret@127.0.0.1:6379/0",
    "redis://127.0.0.1:6379/0?socket_timeout=5&health_check_interval=10",
    " redis://127.0.0.1:6379/0 ",
]
SENTINEL_SPELLINGS = [
    "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381/rollout/0",
    "redis+sentinel://127.0.0.1:26381,127.0.0.1:26379,127.0.0.1:26380/rollout",
    "redis+sentinel://:pw@127.0.0.1:26380,127.0.0.1:26379,127.0.0.1:26381/rollout/0",
    "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381/rollout/0"
    "?sentinel_password=sp",
]


def legacy_name(target: str, unit: str) -> str:
    """The name the write memory gave before the normalisation (the target as written)."""
    return MEMORY_PREFIX + hashlib.sha256(f"{target}\n{unit}".encode()).hexdigest()[:40]


@pytest.mark.parametrize("spelling", PLAIN_SPELLINGS)
def test_every_spelling_of_one_redis_is_one_target(spelling: str) -> None:
    assert memory_target(spelling) == "redis://127.0.0.1:6379/0"
    assert memory_variable_name(spelling, "google") == memory_variable_name(
        "redis://127.0.0.1:6379/0", "google"
    )


@pytest.mark.parametrize("spelling", SENTINEL_SPELLINGS)
def test_every_spelling_of_one_sentinel_service_is_one_target(spelling: str) -> None:
    expected = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381/rollout/0"
    assert memory_target(spelling) == expected


def test_the_host_is_lower_cased_but_never_resolved() -> None:
    assert memory_target("redis://Redis.Example.COM/0") == "redis://redis.example.com:6379/0"
    assert memory_target("redis://localhost") != memory_target("redis://127.0.0.1")


def test_the_username_is_kept_and_the_password_dropped() -> None:
    assert memory_target("redis://alice:pw1@h:7000/2") == "redis://alice@h:7000/2"
    assert memory_target("redis://alice:pw2@h:7000/2") == "redis://alice@h:7000/2"
    assert memory_target("redis://bob:pw1@h:7000/2") != memory_target("redis://alice:pw1@h:7000/2")
    # a lone userinfo is treated as a password (as redact_url does): never in the target
    assert memory_target("redis://s3cret@h") == "redis://h:6379/0"


def test_another_database_port_host_scheme_or_service_is_another_target() -> None:
    base = "redis://h:6379/0"
    others = [
        "redis://h:6379/1",
        "redis://h:6380/0",
        "redis://g:6379/0",
        "rediss://h:6379/0",
        "redis+sentinel://h:26379/rollout/0",
    ]
    assert len({memory_target(url) for url in [base, *others]}) == len(others) + 1
    assert memory_target("redis://h/0?db=1") == "redis://h:6379/1"  # as redis-py reads it
    assert memory_target("redis+sentinel://h:26379/rollout/1") != memory_target(
        "redis+sentinel://h:26379/other/1"
    )


def test_a_unix_socket_target_makes_its_database_explicit() -> None:
    assert memory_target("unix:///run/redis.sock?password=x") == "unix:///run/redis.sock?db=0"
    assert memory_target("unix:///run/redis.sock?db=3") == "unix:///run/redis.sock?db=3"


def test_a_target_that_does_not_parse_is_kept_as_written_without_its_password() -> None:
    assert memory_target("redis://:pw@h/notadb") == "redis://:****@h/notadb"
    assert "pw" not in memory_target("redis+sentinel://:pw@h/bad name/0")


@dataclass
class StoreWithMemory:
    last_applied: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Prefect's Variables, by name: what _read_many finds."""
    variables: dict[str, Any] = {}

    def read_many(names: list[str]) -> dict[str, Any]:
        return {name: variables[name] for name in names if name in variables}

    monkeypatch.setattr(write_memory, "_read_many", read_many)
    return variables


def test_a_write_saved_before_the_upgrade_is_recalled_from_its_as_written_name(
    saved: dict[str, Any],
) -> None:
    as_written = "redis://127.0.0.1:6379"
    saved[legacy_name(as_written, "google")] = {"audit_id": "1700000000000-0"}
    store = StoreWithMemory()
    recall_writes.fn(store, as_written, ["google"])
    assert store.last_applied == {"google": "1700000000000-0"}


def test_the_newer_of_the_normalised_and_the_as_written_memory_is_recalled(
    saved: dict[str, Any],
) -> None:
    as_written = "redis://127.0.0.1"
    saved[legacy_name(as_written, "google")] = {"audit_id": "1700000000000-0"}
    saved[memory_variable_name(as_written, "google")] = {"audit_id": "1700000000001-0"}
    saved[legacy_name(as_written, "outlook")] = {"audit_id": "1700000000005-0"}
    saved[memory_variable_name(as_written, "outlook")] = {"audit_id": "1700000000002-0"}
    store = StoreWithMemory()
    recall_writes.fn(store, as_written, ["google", "outlook"])
    assert store.last_applied == {"google": "1700000000001-0", "outlook": "1700000000005-0"}


def test_a_write_saved_under_one_spelling_is_recalled_under_another(
    saved: dict[str, Any],
) -> None:
    saved[memory_variable_name("redis://127.0.0.1:6379/0", "google")] = {"audit_id": "7-0"}
    store = StoreWithMemory()
    recall_writes.fn(store, "redis://:pw@127.0.0.1", ["google"])
    assert store.last_applied == {"google": "7-0"}
