"""The write memory (tasks/write_memory.py) on a real redis-server and Prefect's test server:
runs that overlap never put back an older write, and it saves whatever the number and length
of the feature names (one small Variable per Redis target and unit)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from urllib.parse import urlsplit

import pytest

from rollout_core.flags import LAST_WRITE_HASH, RedisFlagStore
from rollout_core.model import FlagState
from rollout_core.redis_connection import connect
from tasks.write_memory import (
    MEMORY_PREFIX,
    MEMORY_TAG,
    Recalled,
    forget_all_writes,
    memory_variable_name,
    recall_writes,
    remember_writes,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
SENTINEL_TARGET = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381/rollout/0"


@pytest.fixture
def memory(prefect_test_server: None) -> Iterator[None]:
    forget_all_writes()
    yield
    forget_all_writes()


@dataclass
class StoreWithMemory:
    """What the tasks read of a store: its `last_applied` memory."""

    last_applied: dict[str, str] = field(default_factory=dict)


def lose_writes_after(redis_url: str, kept_audit_id: str | None) -> None:
    """A failover lost google's writes after `kept_audit_id`: Redis's last write is that one."""
    connect(redis_url).hset(LAST_WRITE_HASH, "google", f"x {kept_audit_id}")


def assert_run_holds_google(redis_url: str, target: str) -> RedisFlagStore:
    """The next run, recalling the memory under `target`, holds google naming the loss."""
    later = RedisFlagStore(connect(redis_url))
    recall_writes.fn(later, target, ["google"])
    state = later.read_each(["google"])["google"]
    assert isinstance(state, FlagState), state
    assert any("Redis lost that write" in problem for problem in state.problems), state
    return later


def test_an_overlapping_run_never_replaces_a_newer_remembered_write_with_an_older_one(
    redis_url: str, memory: None
) -> None:
    from prefect.variables import Variable

    target = redis_url
    first = RedisFlagStore(connect(redis_url))
    first.init("google", T0)
    w1 = first.set_percent("google", 10, "ramp", at=T0)
    assert remember_writes.fn(first, target, Recalled()) is None  # an earlier run saved w1

    scheduled = RedisFlagStore(connect(redis_url))  # the scheduled controller run
    abort = RedisFlagStore(connect(redis_url))  # the abort run, on the other worker
    scheduled_knew = recall_writes.fn(scheduled, target, ["google"])
    abort_knew = recall_writes.fn(abort, target, ["google"])
    assert scheduled.last_applied["google"] == w1.audit_id
    w2 = abort.set_percent("google", 0, "abort: GmailErrorRateFast", at=T0 + timedelta(minutes=1))
    assert w2.applied and w2.audit_id
    remember_writes.fn(abort, target, abort_knew)
    remember_writes.fn(scheduled, target, scheduled_knew)  # held google; finishes last

    saved = Variable.get(memory_variable_name(target, "google"))
    assert saved["audit_id"] == w2.audit_id, saved
    # a failover now loses w2: the run after it holds google's promotions, naming the loss
    lose_writes_after(redis_url, w1.audit_id)
    assert_run_holds_google(redis_url, target)


def test_a_write_saved_under_one_spelling_of_redis_url_is_recalled_under_another(
    redis_url: str, memory: None
) -> None:
    port = urlsplit(redis_url).port
    spelled = f"redis://127.0.0.1:{port}"
    respelled = f"REDIS://:****@127.0.0.1:{port}/0?socket_timeout=5"  # as redact_url shows it
    first = RedisFlagStore(connect(redis_url))
    first.init("google", T0)
    w1 = first.set_percent("google", 10, "ramp", at=T0)
    w2 = first.set_percent("google", 50, "ramp", at=T0 + timedelta(hours=1))
    assert remember_writes.fn(first, spelled, Recalled()) is None
    # a failover loses w2; the operator has meanwhile respelled REDIS_URL
    lose_writes_after(redis_url, w1.audit_id)
    assert assert_run_holds_google(redis_url, respelled).last_applied["google"] == w2.audit_id


def test_a_memory_saved_before_the_upgrade_is_recalled_and_the_next_save_is_normalised(
    redis_url: str, memory: None
) -> None:
    from prefect.variables import Variable

    port = urlsplit(redis_url).port
    as_written = f"redis://127.0.0.1:{port}"  # the pre-upgrade name: the target as written
    legacy = MEMORY_PREFIX + sha256(f"{as_written}\ngoogle".encode()).hexdigest()[:40]
    Variable.set(
        legacy,
        {"target": as_written, "unit": "google", "audit_id": "1796026000001-0"},
        tags=[MEMORY_TAG],
    )
    upgraded = StoreWithMemory()
    knew = recall_writes.fn(upgraded, as_written, ["google"])
    assert upgraded.last_applied == {"google": "1796026000001-0"}

    upgraded.last_applied["google"] = "1796026000002-0"  # the run's own newer write
    assert remember_writes.fn(upgraded, as_written, knew) is None
    saved = Variable.get(memory_variable_name(as_written, "google"))
    assert memory_variable_name(as_written, "google") != legacy
    assert saved == {
        "target": f"redis://127.0.0.1:{port}/0",
        "unit": "google",
        "audit_id": "1796026000002-0",
    }
    respelled = StoreWithMemory()
    recall_writes.fn(respelled, f"redis://127.0.0.1:{port}/0", ["google"])
    assert respelled.last_applied == {"google": "1796026000002-0"}


def test_an_older_write_saved_last_never_replaces_a_newer_one_of_the_same_feature(
    memory: None,
) -> None:
    from prefect.variables import Variable

    newer = StoreWithMemory({"google": "1796026000002-0"})
    older = StoreWithMemory({"google": "1796026000001-0"})
    remember_writes.fn(newer, SENTINEL_TARGET, Recalled())
    remember_writes.fn(older, SENTINEL_TARGET, Recalled())
    saved = Variable.get(memory_variable_name(SENTINEL_TARGET, "google"))
    assert saved["audit_id"] == "1796026000002-0"


def test_the_writes_are_saved_and_recalled_however_many_and_long_the_feature_names(
    memory: None,
) -> None:
    from prefect import flow

    long_names = {
        f"checkout-service-feature-{n:05d}-with-a-long-descriptive-name[eu-west-{n}]": (
            f"1796026{n:06d}-0"
        )
        for n in range(250)  # over 5,000 characters together; more than one API page
    }

    @flow
    def save(store: StoreWithMemory) -> str | None:
        return remember_writes(store, SENTINEL_TARGET, Recalled())  # as the controller does

    assert save(StoreWithMemory(dict(long_names))) is None
    later = StoreWithMemory()
    knew = recall_writes.fn(later, SENTINEL_TARGET, [*long_names, "never-written"])
    assert later.last_applied == long_names
    assert knew.known == long_names and knew.warning is None
    # another Redis target shares nothing with this one
    elsewhere = StoreWithMemory()
    recall_writes.fn(elsewhere, "redis://127.0.0.1:6379/0", list(long_names))
    assert elsewhere.last_applied == {}


def test_a_write_memory_prefect_refuses_is_a_warning_naming_the_unsaved_write(
    memory: None,
) -> None:
    from prefect import flow

    # Prefect refuses a Variable value over 5,000 characters: a (silly) 6,000-character unit
    # name makes it refuse this one entry, and only this one
    huge = "g" * 6000

    @flow
    def save(store: StoreWithMemory) -> str | None:
        return remember_writes(store, SENTINEL_TARGET, Recalled())

    warning = save(StoreWithMemory({huge: "1796026000001-0", "google": "1796026000002-0"}))
    assert warning is not None and "write memory not saved for ggg" in warning
    assert "1796026000001-0" in warning and "cannot refuse" in warning
    assert "google" not in warning.replace(huge, "")
    later = StoreWithMemory()
    recall_writes.fn(later, SENTINEL_TARGET, ["google"])
    assert later.last_applied == {"google": "1796026000002-0"}
