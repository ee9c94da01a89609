"""The flag store on Redis: DESIGN §4 keys, read in one round trip, changed by atomic Lua.

Operators keep writing plain strings with `redis-cli SET flags:google:paused "true"`; every
value is parsed strictly by `rollout_sdk.flag_values` (the gate's parser too). A bad percent,
`enabled` or `paused` is an InvalidFlagValue naming the key; a bad history or audience key
only holds promotions (`FlagState.problems`), and so does a read older than the last change
this store applied (a failover lost it). Percent changes go through one compare-and-set
script that compares every key the decision read; init, pause and audience through one
audited-write script. Both append to the `rollout:audit` stream in the same atomic step,
trim it approximately, record the write id, register the feature and publish its name.

Writes are never retried blindly: they go through a client without retries, and a write whose
reply was lost is read back on a fresh connection by its write id (applied, not applied, or,
while Redis stays unreachable, unknown).
"""

from __future__ import annotations

import functools
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, TypeVar, cast

import redis

from rollout_core.config import FEATURE_NAME_PATTERN, validate_feature_name, validate_unit_name
from rollout_core.errors import ConfigError, FlagStoreError, InvalidFlagValue, RolloutError
from rollout_core.model import Action, FlagState
from rollout_core.ports import ApplyResult, FlagChange
from rollout_core.redis_connection import (
    WAIT_TIMEOUT_MS,
    confirm_replicated,
    describe,
    fresh_client,
    store_error,
    without_retries,
)
from rollout_sdk.flag_values import (
    PERCENT_EXPECTED,
    is_servable_percent,
    parse_bool_value,
    parse_percent_value,
)
from rollout_sdk.keys import (
    ABORT_EPISODES_HASH,
    AUDIT_STREAM,
    CHANGES_CHANNEL,
    FEATURES_REGISTRY,
    SEGMENT_BY_FIELD,
    SEGMENT_FALLBACK_FIELD,
    SEGMENTS_FIELD,
    flag_key,
    overrides_key,
    split_unit,
    unit_key,
)

__all__ = [
    "AUDIT_STREAM",
    "DEFAULT_AUDIT_RETENTION",
    "FIELDS",
    "LAST_WRITE_HASH",
    "RECOMMENDATIONS_HASH",
    "SEED",
    "FeatureNotInitialised",
    "RedisFlagStore",
    "WriteResult",
    "flag_key",
    "format_percent_value",
    "format_time",
    "lost_write_problem",
    "parse_bool",
    "parse_flag_state",
    "parse_percent",
    "parse_time",
]

FIELDS = (
    "enabled",
    "internal_only",
    "rollout_percent",
    "paused",
    "last_change_time",
    "last_percent",
    "last_rollback_time",
)
# a segment's state (`google[eu-west]`) also reads its feature's paused (flags:google:paused)
SEGMENT_STATE_FIELDS = (*FIELDS, "feature_paused")
# the order of the compare-and-set script's KEYS[1..7]
_CAS_FIELDS = (
    "rollout_percent",
    "enabled",
    "internal_only",
    "paused",
    "last_change_time",
    "last_percent",
    "last_rollback_time",
)
# controller-owned: feature -> "<write id> <audit entry id>" of its last audited write
LAST_WRITE_HASH = "rollout:last_write"
# controller-owned: feature -> "<action> <old> <new>" of its last dry-run recommendation,
# cleared by an applied change and by a dry-run hold (so only a run of repeats is suppressed)
RECOMMENDATIONS_HASH = "rollout:recommendations"
DEFAULT_AUDIT_RETENTION = 100_000
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
# what `init` writes where absent: a new feature goes to internal actors first, at 0%
SEED = {"enabled": "true", "internal_only": "true", "rollout_percent": "0", "paused": "false"}
# how far back a read-back looks for a write id the last-write hash no longer holds
_READ_BACK_ENTRIES = 1000
# a write's deadline on Redis's clock: its socket timeout (or this, without one), a margin, and
# a little per script of a pipeline; a script run later refuses the write (EXPIRED)
_DEFAULT_WRITE_TIMEOUT_SEC = 5.0
_DEADLINE_MARGIN_SEC = 1.0
_DEADLINE_PER_CALL_SEC = 0.005
_UNCONFIRMED_RISK = "a failover now could lose it"


class FeatureNotInitialised(ConfigError):
    """A write to a feature whose rollout_percent key is absent; nothing was written."""

    def __init__(self, feature: str, known: Sequence[str] | None) -> None:
        listed = "unknown (Redis did not answer)" if known is None else ", ".join(known) or "none"
        parent, segment = split_unit(feature)
        init = parent if segment is None else f"{parent} --config rollouts.yaml"
        super().__init__(
            f"feature {feature!r} is not initialised ({unit_key(feature, 'rollout_percent')} is "
            f"absent); known: {listed}; run `rollout init {init}` if it is new"
        )
        self.feature, self.known = feature, tuple(known or ())


def parse_bool(key: str, raw: str) -> bool:
    value = parse_bool_value(raw)
    if value is None:
        raise InvalidFlagValue(key, raw, '"true" or "false"')
    return value


def parse_percent(key: str, raw: str) -> float:
    """A finite decimal in 0..100; "10", "10.0" and "0.5" parse, "abc", "nan", "1e1" do not."""
    value = parse_percent_value(raw)
    if value is None:
        raise InvalidFlagValue(key, raw, PERCENT_EXPECTED)
    return value


def parse_time(key: str, raw: str) -> datetime:
    """ISO-8601, returned in UTC; a time without an offset is read as UTC."""
    try:
        if not _ISO_TIME.match(raw):
            raise ValueError(raw)
        at = datetime.fromisoformat(raw)
    except ValueError:
        expected = "an ISO-8601 UTC time such as 2025-10-08T15:00:00Z"
        raise InvalidFlagValue(key, raw, expected) from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def format_percent_value(percent: float) -> str:
    """The canonical stored form: "10", "0.5", never "10.0" nor "1e-05"."""
    if not math.isfinite(percent) or not 0 <= percent <= 100:
        raise ConfigError(f"percent {percent!r} is out of range; expected {PERCENT_EXPECTED}")
    return f"{percent:.6f}".rstrip("0").rstrip(".")


def format_time(at: datetime) -> str:
    """`2025-10-08T15:00:00Z`; a naive time is taken to be UTC already."""
    utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return utc.isoformat(timespec="seconds").replace("+00:00", "Z")


def fields_of(unit: str) -> tuple[str, ...]:
    """The fields a feature's (or a segment's) state is read from."""
    return FIELDS if split_unit(unit)[1] is None else SEGMENT_STATE_FIELDS


def parse_flag_state(feature: str, raw: Mapping[str, str | None]) -> FlagState:
    """A FlagState from the raw values by field name (None = absent), parsing each strictly.

    A bad percent, `enabled` or `paused` raises InvalidFlagValue (the feature holds); a bad
    history or audience key is recorded in `problems` and read as absent, so it holds
    promotions only.
    """
    problems: list[str] = []

    def lenient(field: str, parse: Callable[[str, str], Any], default: Any) -> Any:
        text = raw.get(field)
        if text is None:
            return default
        try:
            return parse(unit_key(feature, field), text)
        except InvalidFlagValue as error:
            problems.append(f"{error}; fix or delete the key")
            return default

    def strict(field: str, parse: Callable[[str, str], Any], default: Any) -> Any:
        text = raw.get(field)
        return default if text is None else parse(unit_key(feature, field), text)

    # keys a rollback needs raise; the others are read leniently, collecting their problems
    percent = strict("rollout_percent", parse_percent, 0.0)
    enabled = strict("enabled", parse_bool, True)
    paused = strict("paused", parse_bool, False)
    paused = strict("feature_paused", parse_bool, False) or paused  # a segment's feature
    internal_only = lenient("internal_only", parse_bool, False)
    last_change_time = lenient("last_change_time", parse_time, None)
    last_percent = lenient("last_percent", parse_percent, None)
    last_rollback_time = lenient("last_rollback_time", parse_time, None)
    return FlagState(
        feature=feature,
        percent=percent,
        enabled=enabled,
        internal_only=internal_only,
        paused=paused,
        last_change_time=last_change_time,
        last_percent=last_percent,
        last_rollback_time=last_rollback_time,
        exists=raw.get("rollout_percent") is not None,
        raw=tuple((field, raw.get(field)) for field in fields_of(feature)),
        problems=tuple(problems),
    )


@dataclass(frozen=True)
class WriteResult:
    """What an audited write did: the fields it wrote (none: already so) and the percents.

    `recovered`: the reply was lost and a read-back found the write applied (the fields are
    then the ones asked for). `unknown`: Redis stayed unreachable; `message` says what to run.
    """

    written: tuple[str, ...]
    audit_id: str | None
    old_percent: float | None
    new_percent: float | None
    unknown: bool = False
    recovered: bool = False
    message: str = ""
    unconfirmed: bool = False  # applied, but no replica acknowledged it in time

    @property
    def is_change(self) -> bool:
        return bool(self.written)


_Result = TypeVar("_Result", ApplyResult, WriteResult)


@cache
def _script(name: str) -> str:
    """A write script's text with the shared prelude (percent grammar, write deadline, type
    checks) in front: Redis scripts cannot import, so one file is prepended to each."""
    folder = resources.files("rollout_core") / "lua"
    prelude = (folder / "prelude.lua").read_text(encoding="utf-8")
    return prelude + (folder / name).read_text(encoding="utf-8")


class RedisFlagStore:
    """The FlagStore port on Redis, plus the operator's audited writes.

    `client` serves reads (with its small retry budget); writes go through a copy of it
    without retries. `audit_retention`: the stream is trimmed to about this many entries.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        audit_retention: int = DEFAULT_AUDIT_RETENTION,
        wait_timeout_ms: int = WAIT_TIMEOUT_MS,
    ) -> None:
        if isinstance(audit_retention, bool) or not isinstance(audit_retention, int):
            raise ConfigError(f"audit retention {audit_retention!r} is not a whole number")
        if audit_retention < 1:
            raise ConfigError(
                f"audit retention {audit_retention} is invalid; expected a whole number of "
                "entries of 1 or more, e.g. 100000"
            )
        self._client = client
        self._writer = without_retries(client)
        self._retention = str(audit_retention)
        self._cas = self._writer.register_script(_script("cas_percent.lua"))
        self._audited_write = self._writer.register_script(_script("audited_write.lua"))
        self._override = self._writer.register_script(_script("override.lua"))
        self._registry_checked = False
        self.wait_timeout_ms = wait_timeout_ms  # WAIT 1 <ms> after a write, when replicas exist
        # feature -> the audit id of the last change this store applied: a later read that
        # finds an older last write (a failover lost it) is refused, never acted on
        self.last_applied: dict[str, str] = {}

    @property
    def client(self) -> redis.Redis:
        return self._client

    @property
    def writer(self) -> redis.Redis:
        """The client every write goes through: same server, no retries."""
        return self._writer

    @property
    def audit_retention(self) -> int:
        return int(self._retention)

    def read(self, features: Sequence[str]) -> dict[str, FlagState]:
        states = self.read_each(features)
        for state in states.values():
            if isinstance(state, RolloutError):
                raise state
        return {feature: state for feature, state in states.items() if isinstance(state, FlagState)}

    def read_each(self, features: Sequence[str]) -> dict[str, FlagState | RolloutError]:
        names = [validate_unit_name(feature) for feature in features]
        keys = [unit_key(feature, field) for feature in names for field in fields_of(feature)]
        values = self._call("reading flags", self._client.mget, keys) if keys else []
        lost = self._lost_writes(names)
        states: dict[str, FlagState | RolloutError] = {}
        start = 0
        for feature in names:
            fields = fields_of(feature)
            raw = dict(zip(fields, values[start : start + len(fields)], strict=True))
            start += len(fields)
            try:
                state = parse_flag_state(feature, raw)
            except RolloutError as exc:
                states[feature] = exc
                continue
            if feature in lost:  # holds promotions only, as a corrupt history key does
                state = replace(state, problems=(*state.problems, lost[feature]))
            states[feature] = state
        return states

    def _lost_writes(self, features: Sequence[str]) -> dict[str, str]:
        """Features whose last write in Redis is older than the last change this store
        applied, with the problem to record: the master lost it (a failover before a replica
        had it), so what was read is older than what the controller last wrote. Promoting
        from it is refused; a rollback still goes through (a compare-and-set on what Redis
        holds that only lowers exposure, and a newer write that ends the refusal)."""
        remembered = {f: self.last_applied[f] for f in features if f in self.last_applied}
        if not remembered:
            return {}
        recorded = self._call(
            "reading the last writes", self._client.hmget, LAST_WRITE_HASH, list(remembered)
        )
        lost = {}
        for (feature, mine), theirs in zip(remembered.items(), recorded, strict=True):
            audit_id = str(theirs or "").partition(" ")[2]
            if _stream_id(audit_id) < _stream_id(mine):
                lost[feature] = lost_write_problem(feature, audit_id, mine)
        return lost

    def known_features(self) -> list[str]:
        """Every initialised feature, sorted: the `rollout:features` registry, or, while it is
        empty (a store initialised before it existed), every rollout_percent key (SCAN)."""
        members: set[str] = self._call(
            "reading the feature registry", self._client.smembers, FEATURES_REGISTRY
        )
        names = members or self._scan_features()
        return sorted(name for name in names if FEATURE_NAME_PATTERN.fullmatch(name))

    def _scan_features(self) -> set[str]:
        pattern = flag_key("*", "rollout_percent")
        keys: list[str] = self._call(
            "listing features", lambda: list(self._client.scan_iter(match=pattern, count=1000))
        )
        return {key[len("flags:") : -len(":rollout_percent")] for key in keys}

    def _ensure_registry(self) -> None:
        """Before the first write: a store from before the registry gets it filled from its
        rollout_percent keys, so one new feature never hides the older ones."""
        if self._registry_checked:
            return
        if not self._call("reading the feature registry", self._client.exists, FEATURES_REGISTRY):
            found = sorted(n for n in self._scan_features() if FEATURE_NAME_PATTERN.fullmatch(n))
            if found:
                self._call(
                    "filling the feature registry", self._writer.sadd, FEATURES_REGISTRY, *found
                )
        self._registry_checked = True

    def _connect_writer(self, doing: str, calls: int = 1) -> int:
        """Connect before sending a write, so a refused connection is a plain "nothing was
        sent" error; only a write that was sent can have an unknown outcome. The deadline of
        the write (ms, Redis's clock): its socket timeout and a margin from Redis's TIME now."""
        pool = self._writer.connection_pool
        try:
            connection = pool.get_connection()
            pool.release(connection)
            seconds, micros = self._writer.time()
        except redis.RedisError as exc:
            raise store_error(self._client, exc, doing) from exc
        timeout = pool.connection_kwargs.get("socket_timeout") or _DEFAULT_WRITE_TIMEOUT_SEC
        allowance = timeout + _DEADLINE_MARGIN_SEC + _DEADLINE_PER_CALL_SEC * calls
        return int(seconds) * 1000 + int(micros) // 1000 + int(allowance * 1000)

    def is_episode_handled(self, episode: str) -> bool:
        """True when this alert episode already aborted its feature (`rollout:abort:episodes`)."""
        doing = "reading abort episodes"
        return bool(self._call(doing, self._client.hexists, ABORT_EPISODES_HASH, episode))

    def raw_values(self, feature: str) -> dict[str, str | None]:
        """The raw strings of a feature's flag keys (None = absent), unparsed."""
        feature = validate_unit_name(feature)
        fields = fields_of(feature)
        keys = [unit_key(feature, field) for field in fields]
        values = self._call(f"reading {feature}", self._client.mget, keys)
        return dict(zip(fields, values, strict=True))

    def _not_initialised(self, feature: str) -> FeatureNotInitialised:
        try:
            known: list[str] | None = self.known_features()
        except FlagStoreError:
            known = None
        return FeatureNotInitialised(feature, known)

    def apply(self, change: FlagChange) -> ApplyResult:
        self._ensure_registry()
        doing = f"applying {_describe_change(change)}"
        write_id = _write_id(self._connect_writer(doing))
        keys, args = self._cas_call(change, write_id)
        try:
            reply = self._cas(keys, args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            recovered = self._apply_after_lost_reply(change, write_id, exc, doing)
            return cast(ApplyResult, self._confirmed([recovered])[0])
        except redis.RedisError as exc:
            raise store_error(self._client, exc, doing) from exc
        return cast(ApplyResult, self._confirmed([self._apply_result(change, reply)])[0])

    def apply_many(self, changes: Sequence[FlagChange]) -> list[ApplyResult | RolloutError]:
        """Every change's compare-and-set in one pipelined round trip (plus one SCRIPT EXISTS).

        Not a transaction: each script is atomic on its own, so a conflict or a bad value in
        one feature leaves the others' writes alone. When the connection fails mid-way, each
        change is read back by its write id on a fresh connection: applied, not applied (an
        error for that feature) or, while Redis stays unreachable, unknown.
        """
        if not changes:
            return []
        self._ensure_registry()
        doing = f"applying {len(changes)} change(s) ({', '.join(c.feature for c in changes)})"
        deadline = self._connect_writer(doing, len(changes))
        write_ids = [_write_id(deadline) for _ in changes]
        calls = [self._cas_call(c, w) for c, w in zip(changes, write_ids, strict=True)]
        pipe = self._writer.pipeline(transaction=False)
        for keys, args in calls:
            self._cas(keys, args, client=pipe)
        pipe.info("replication")  # whether to WAIT for a replica after, in the same round trip
        try:
            *replies, replication = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            read_back: list[ApplyResult | RolloutError] = []
            for change, write_id in zip(changes, write_ids, strict=True):
                try:
                    doing = f"applying {change.feature}"
                    read_back.append(self._apply_after_lost_reply(change, write_id, exc, doing))
                except RolloutError as error:  # read back: not applied (that feature only)
                    read_back.append(error)
            return self._confirmed(read_back)
        except redis.RedisError as exc:
            raise store_error(self._client, exc, doing) from exc
        results: list[ApplyResult | RolloutError] = []
        for change, reply in zip(changes, replies, strict=True):
            if isinstance(reply, redis.RedisError):
                results.append(store_error(self._client, reply, f"applying {change.feature}"))
                continue
            try:
                results.append(self._apply_result(change, reply))
            except RolloutError as error:
                results.append(error)
        return self._confirmed(results, replication)

    def _confirmed(self, results: list[Any], replication: Any = None) -> list[Any]:
        """After writes that changed Redis: WAIT for one replica (when the master has any);
        writes none acknowledged come back marked `unconfirmed`, with a message."""

        def waited_for(result: Any) -> bool:
            return isinstance(result, ApplyResult | WriteResult) and _wrote(result)

        if not any(waited_for(r) and not r.unconfirmed for r in results):
            return results
        if confirm_replicated(self._writer, self.wait_timeout_ms, replication) is not False:
            return results
        note = (
            f"applied, unconfirmed: no replica acknowledged it within {self.wait_timeout_ms} ms "
            f"(WAIT 1); {_UNCONFIRMED_RISK}"
        )
        return [
            replace(r, unconfirmed=True, message=f"{r.message}; {note}" if r.message else note)
            if waited_for(r) and not r.unconfirmed
            else r
            for r in results
        ]

    def _cas_call(self, change: FlagChange, write_id: str) -> tuple[list[str], list[str]]:
        feature = validate_unit_name(change.feature)
        keys = [
            *(unit_key(feature, field) for field in _CAS_FIELDS),
            AUDIT_STREAM,
            LAST_WRITE_HASH,
            RECOMMENDATIONS_HASH,
            FEATURES_REGISTRY,
            ABORT_EPISODES_HASH,
        ]
        expected = _expectations(change)
        raw_read = dict(change.expected_raw)
        old = raw_read.get("rollout_percent") if "rollout_percent" in raw_read else None
        if old is None:
            old = format_percent_value(change.expected_percent or 0.0)
        args = [
            *(expected[field] for field in _CAS_FIELDS),
            format_percent_value(change.new_percent),
            old,  # the raw string read: an operator's typo is audited as it was
            format_time(change.at),
            _text(change.dry_run),
            feature,
            change.reason,
            change.by,
            str(change.action),
            write_id,
            self._retention,
            CHANGES_CHANNEL,
            change.episode or "",
        ]
        if split_unit(feature)[1] is not None:  # a segment: its feature's paused is compared too
            keys.append(unit_key(feature, "feature_paused"))
            args.append(_expectation(dict(change.expected_raw), "feature_paused"))
        else:
            args.append("*")  # ARGV[20]: no feature paused key to compare
        args.append(change.inputs)  # ARGV[21]: the decision's inputs ('' for none)
        return keys, args

    def _apply_result(self, change: FlagChange, reply: Sequence[str]) -> ApplyResult:
        status, current, paused, audit_id, key = reply
        read_percent = dict(change.expected_raw).get("rollout_percent")
        if status == "not_initialised" and read_percent is None:
            raise self._not_initialised(change.feature)
        if status == "not_initialised":  # it was there when read: deleted meanwhile
            return ApplyResult(
                applied=False,
                conflict=True,
                current_percent=None,
                current_paused=paused == "true",
                message=f"{key} was deleted since it was read; nothing written",
            )
        conflict = status == "conflict"
        if status == "applied" and audit_id and not change.dry_run:
            self.last_applied[change.feature] = audit_id
        return ApplyResult(
            applied=status == "applied",
            conflict=conflict,
            current_percent=parse_percent_value(current) if current else None,
            current_paused=paused == "true",
            audit_id=audit_id or None,
            message=_conflict_message(change, key) if conflict else "",
        )

    def _apply_after_lost_reply(
        self, change: FlagChange, write_id: str, exc: Exception, doing: str
    ) -> ApplyResult:
        """The reply of a compare-and-set was lost: what Redis holds, read on a new connection."""
        found, audit_id = self._read_back(change.feature, write_id)
        if found is None:
            return ApplyResult(
                applied=False,
                conflict=False,
                current_percent=None,
                current_paused=change.expected_paused,
                unknown=True,
                message=self._unknown_message(change.feature, doing, exc),
            )
        if not found:
            raise FlagStoreError(
                f"Redis at {describe(self._client)}: the connection was lost while {doing} "
                f"({exc}); read back on a new connection: not applied, nothing written; "
                "run the command again"
            ) from exc
        if audit_id and not change.dry_run:
            self.last_applied[change.feature] = audit_id  # remembered like any applied change
        result = ApplyResult(
            applied=not change.dry_run,
            conflict=False,
            current_percent=change.expected_percent if change.dry_run else change.new_percent,
            current_paused=change.expected_paused,
            audit_id=audit_id,
            recovered=True,
            message=f"the reply was lost; read back on a new connection: written ({audit_id})",
        )
        return result if change.dry_run else self._announced_again(change.feature, result)

    def _read_back(self, feature: str, write_id: str) -> tuple[bool | None, str | None]:
        """(True, audit id) when the write with `write_id` is in Redis, (False, None) when it
        is not, (None, None) when Redis cannot be reached to tell. The read waits until
        Redis's clock is past the write's deadline: the script refuses the write id after it,
        so a write still in flight can no longer land once "not applied" is read."""
        probe = fresh_client(self._client)
        try:
            _wait_past_deadline(probe, write_id)
            recorded = probe.hget(LAST_WRITE_HASH, feature)
            if recorded:
                recorded_id, _, audit_id = str(recorded).partition(" ")
                if recorded_id == write_id:
                    return True, audit_id
            entries = cast(
                "list[tuple[str, dict[str, str]]]",  # decode_responses=True: str, not bytes
                probe.xrevrange(AUDIT_STREAM, count=_READ_BACK_ENTRIES),
            )
            for entry_id, fields in entries:
                if fields.get("write_id") == write_id:
                    return True, str(entry_id)
            return False, None
        except redis.RedisError:
            return None, None
        finally:
            probe.close()

    def _unknown_message(self, feature: str, doing: str, exc: Exception) -> str:
        return (
            f"outcome unknown: the connection to Redis at {describe(self._client)} was lost "
            f"while {doing} ({exc}) and Redis is still unreachable, so whether it was written "
            f"is not known; once Redis answers, `rollout audit {feature}` shows whether it was"
        )

    def set_percent(
        self,
        feature: str,
        percent: float,
        reason: str,
        by: str = "manual",
        *,
        at: datetime,
        rewrite: bool = False,
    ) -> ApplyResult:
        """A manual change through the controller's compare-and-set: read, then apply.

        Compared against the raw percent and paused strings it read, so a corrupt percent can
        be repaired (the audit entry records the old raw value). Already at `percent`: nothing
        is written (applied and conflict both False, no audit id), unless `rewrite`: then the
        same percent is written and audited (action hold), giving `rollout:last_write` a newer
        entry, which ends a lost-write refusal at the percent Redis kept. Not initialised:
        FeatureNotInitialised, nothing written.
        """
        feature = validate_unit_name(feature)
        target = float(format_percent_value(percent))
        if not is_servable_percent(percent):
            raise ConfigError(
                f"percent {percent!r} has more than 2 decimals; the gate serves percents in "
                f"steps of 0.01, so set e.g. {round(percent, 2):g}; nothing written"
            )
        keys = [unit_key(feature, "rollout_percent"), unit_key(feature, "paused")]
        raw_percent, raw_paused = self._call(f"reading {feature}", self._client.mget, keys)
        if raw_percent is None:
            raise self._not_initialised(feature)
        current = parse_percent_value(raw_percent)
        paused = raw_paused == "true"
        if current == target and not rewrite:
            return ApplyResult(False, False, current, paused)
        if current == target:
            action = Action.HOLD  # a rewrite: the percent stays, the write is new
        else:
            action = Action.PROMOTE if target > (current or 0.0) else Action.ROLLBACK
        read = (("rollout_percent", raw_percent), ("paused", raw_paused))
        change = FlagChange(feature, current, paused, target, reason, by, at, action)
        return self._counted(feature, self.apply(replace(change, expected_raw=read)))

    def _counted(self, feature: str, result: _Result) -> _Result:
        """An operator's write no replica acknowledged, counted where the controller's are
        (`rollout_controller_unconfirmed_writes_total{feature}`, pushed whole by the next
        run); the controller's own writes are counted by its telemetry, not here."""
        if not result.unconfirmed:
            return result
        from rollout_core.telemetry import UNCONFIRMED_KEY

        try:
            self._writer.hincrby(UNCONFIRMED_KEY, split_unit(feature)[0], 1)
        except redis.RedisError as exc:
            return replace(result, message=f"{result.message}; not counted ({exc})")
        return result

    def forget_recommendations(self, features: Sequence[str]) -> None:
        """Clear these features' last dry-run recommendation (`rollout:recommendations`)."""
        if features:
            doing = f"clearing the last recommendation of {', '.join(features)}"
            self._call(doing, self._writer.hdel, RECOMMENDATIONS_HASH, *features)

    def init(self, feature: str, at: datetime, by: str = "manual") -> WriteResult:
        """Seed enabled=true, internal_only=true, rollout_percent=0, paused=false where absent."""
        return self._write(feature, "nx", SEED, "init", "initialised", by, at)

    def init_segments(
        self,
        feature: str,
        segment_by: Sequence[str],
        segments: Sequence[str],
        fallback_percent: float,
        at: datetime,
        by: str = "manual",
    ) -> list[WriteResult]:
        """Initialise a segmented feature: the feature's keys (as `init`), each segment's
        rollout_percent "0" and paused "false" where absent, then the discovery keys services
        read (segment_by, segments, segment_fallback_percent), each write audited."""
        feature = validate_feature_name(feature)
        results = [self.init(feature, at, by)]
        seed = {"rollout_percent": "0", "paused": "false"}
        for segment in segments:
            unit = validate_unit_name(f"{feature}[{segment}]")
            results.append(self._write(unit, "nx", seed, "init", "initialised", by, at))
        discovery = {
            SEGMENT_BY_FIELD: ",".join(segment_by),
            SEGMENTS_FIELD: ",".join(segments),
            SEGMENT_FALLBACK_FIELD: format_percent_value(fallback_percent),
        }
        reason = f"segments by {','.join(segment_by)}: {','.join(segments)}"
        results.append(self._write(feature, "set", discovery, "segments", reason, by, at))
        return results

    def segments_of(self, feature: str) -> tuple[str, ...]:
        """The segments `flags:{feature}:segments` lists, in order (empty: not segmented)."""
        feature = validate_feature_name(feature)
        raw = self._call(f"reading {feature}", self._client.get, flag_key(feature, SEGMENTS_FIELD))
        return tuple(part for part in (raw or "").split(",") if part)

    def set_paused(
        self, feature: str, paused: bool, reason: str, by: str, at: datetime
    ) -> WriteResult:
        action = "pause" if paused else "resume"
        return self._write(feature, "set", {"paused": _text(paused)}, action, reason, by, at)

    def set_audience(
        self, feature: str, internal_only: bool, reason: str, by: str, at: datetime
    ) -> WriteResult:
        """Switch internal_only and reset the percent to 0 together. Same audience (an absent
        internal_only is public): nothing written, no audit entry, the percent kept."""
        values = {"internal_only": _text(internal_only), "rollout_percent": "0"}
        return self._write(feature, "switch", values, "audience", reason, by, at)

    def _write(
        self,
        feature: str,
        mode: str,
        values: Mapping[str, str],
        action: str,
        reason: str,
        by: str,
        at: datetime,
    ) -> WriteResult:
        feature = validate_unit_name(feature)
        self._ensure_registry()
        doing = f"writing {action} of {feature}"
        write_id = _write_id(self._connect_writer(doing))
        history = ("rollout_percent", "last_percent", "last_change_time")
        keys = [
            AUDIT_STREAM,
            *(unit_key(feature, f) for f in history),
            LAST_WRITE_HASH,
            FEATURES_REGISTRY,
            *(unit_key(feature, f) for f in values),
        ]
        args = [mode, format_time(at), feature, reason, by, action, write_id, self._retention]
        args += [CHANGES_CHANNEL, *values.values()]
        try:
            reply = self._audited_write(keys, args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            lost = self._write_after_lost_reply(feature, write_id, values, exc, doing)
            return self._counted(feature, cast(WriteResult, self._confirmed([lost])[0]))
        except redis.RedisError as exc:
            raise store_error(self._client, exc, doing) from exc
        status, audit_id, old, new, *written = reply
        if status == "not_initialised":
            raise self._not_initialised(feature)
        result = WriteResult(
            written=tuple(key.rpartition(":")[2] for key in written),
            audit_id=audit_id or None,
            old_percent=parse_percent_value(old),
            new_percent=parse_percent_value(new),
        )
        return self._counted(feature, cast(WriteResult, self._confirmed([result])[0]))

    def _write_after_lost_reply(
        self, feature: str, write_id: str, values: Mapping[str, str], exc: Exception, doing: str
    ) -> WriteResult:
        found, audit_id = self._read_back(feature, write_id)
        if found is None:
            message = self._unknown_message(feature, doing, exc)
            return WriteResult((), None, None, None, unknown=True, message=message)
        if not found:
            raise FlagStoreError(
                f"Redis at {describe(self._client)}: the connection was lost while {doing} "
                f"({exc}); read back on a new connection: not applied, nothing written; "
                "run the command again"
            ) from exc
        message = f"the reply was lost; read back on a new connection: written ({audit_id})"
        result = WriteResult(tuple(values), audit_id, None, None, recovered=True, message=message)
        return self._announced_again(feature, result)

    def _announced_again(self, unit: str, result: _Result) -> _Result:
        """A write found by a read-back, published again on the write client: WAIT then
        covers it like any other write (WAIT counts from its connection's last propagated
        write; the read-back's connection wrote nothing). Services refresh the feature once
        more, which changes nothing. When this fails, the write is reported unconfirmed."""
        try:
            self._writer.publish(CHANGES_CHANNEL, split_unit(unit)[0])
        except redis.RedisError as exc:
            note = f"applied, unconfirmed: WAIT 1 could not be sent ({exc}); {_UNCONFIRMED_RISK}"
            return replace(result, unconfirmed=True, message=f"{result.message}; {note}")
        return result

    def set_override(
        self, feature: str, field: str, value: str, reason: str, by: str, at: datetime
    ) -> tuple[WriteResult, str | None]:
        """Set (`value` "true"/"false") or clear ("") one field of `flags:{f}:overrides`,
        audited, announced and read back after a lost reply like every other write; the result
        and the field's value before (None: no override). Not initialised: nothing written."""
        feature = validate_feature_name(feature)
        self._ensure_registry()
        doing = f"writing the override {field} of {feature}"
        write_id = _write_id(self._connect_writer(doing))
        keys = [
            overrides_key(feature),
            flag_key(feature, "rollout_percent"),
            AUDIT_STREAM,
            LAST_WRITE_HASH,
        ]
        args = [field, value, format_time(at), feature, reason, by, CHANGES_CHANNEL]
        args += [write_id, self._retention]
        try:
            status, old, audit_id = self._override(keys, args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            lost = self._write_after_lost_reply(feature, write_id, {"overrides": value}, exc, doing)
            return self._counted(feature, cast(WriteResult, self._confirmed([lost])[0])), None
        except redis.RedisError as exc:
            raise store_error(self._client, exc, doing) from exc
        if status == "not_initialised":
            raise self._not_initialised(feature)
        written = ("overrides",) if status == "written" else ()
        result = WriteResult(written, audit_id or None, None, None)
        return self._counted(feature, cast(WriteResult, self._confirmed([result])[0])), old or None

    def record_event(self, subject: str, action: str, reason: str, by: str, at: datetime) -> str:
        """Append an audit entry that changes no flag (e.g. the controller's kill switch, with
        `subject` "controller"), trimmed like every other entry; its id."""
        fields = {
            "time": format_time(at),
            "feature": subject,
            "old_percent": "",
            "new_percent": "",
            "reason": reason,
            "by": by,
            "dry_run": "false",
            "action": action,
        }
        doing = f"appending {action} to {AUDIT_STREAM}"
        # approximate trimming, as the scripts do
        xadd = functools.partial(self._writer.xadd, maxlen=self.audit_retention, approximate=True)
        return str(self._call(doing, xadd, AUDIT_STREAM, fields))

    def _call(self, doing: str, command: Any, *args: Any) -> Any:
        try:
            return command(*args)
        except redis.RedisError as exc:
            raise store_error(self._client, exc, doing) from exc


def lost_write_problem(feature: str, recorded: str, remembered: str) -> str:
    """The lost-write refusal as a FlagState problem: it names both audit ids, what holds
    (promotions), and the documented way out at any percent, the one Redis kept included.
    `feature` is a unit: a segment's commands take `--segment`."""
    name, segment = split_unit(feature)
    which = f"{name} --segment {segment}" if segment is not None else name
    # the override flow sets whole features only: a segment's way out is the CLI's
    ui = (
        ""
        if segment is not None
        else "; from the Prefect UI: rollout-override/manual, rewrite=true"
    )
    return (
        f"{LAST_WRITE_HASH} {feature} is {recorded or 'absent'}, older than this controller's "
        f"last change {remembered}: Redis lost that write (a failover before a replica had "
        f"it); promotions hold (a rollback still goes through) until a newer write: check "
        f"`rollout audit {which}`, then `rollout set {name} PERCENT"
        f"{f' --segment {segment}' if segment is not None else ''} --rewrite --reason "
        f'"re-set after failover"` (--rewrite writes and audits even at the percent Redis holds'
        f"{ui})"
    )


def _write_id(deadline_ms: int) -> str:
    """A write id the scripts refuse once Redis's clock is past `deadline_ms`."""
    return f"{uuid.uuid4().hex}@{deadline_ms}"


def _wait_past_deadline(probe: redis.Redis, write_id: str) -> None:
    """Sleep until Redis's TIME is past the deadline in `write_id` (at most the write's own
    allowance: the deadline was set from Redis's TIME when it was sent)."""
    _, _, deadline_text = write_id.partition("@")
    if not deadline_text.isdigit():
        return
    deadline = int(deadline_text)
    while True:
        seconds, micros = probe.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        if now_ms > deadline:
            return
        time.sleep((deadline - now_ms) / 1000 + 0.005)


def _expectations(change: FlagChange) -> dict[str, str]:
    """What the script compares per key: '=raw' / '-' absent from the raw strings read;
    without them (an older caller), the percent numerically and paused ('?')."""
    if change.expected_raw:
        read = dict(change.expected_raw)
        return {
            field: ("*" if field not in read else "-" if read[field] is None else f"={read[field]}")
            for field in _CAS_FIELDS
        }
    expected = {field: "*" for field in _CAS_FIELDS}
    percent = change.expected_percent
    expected["rollout_percent"] = "-" if percent is None else f"#{float(percent)!r}"
    expected["paused"] = f"?{_text(change.expected_paused)}"
    return expected


def _conflict_message(change: FlagChange, key: str) -> str:
    if key == ABORT_EPISODES_HASH:
        return f"alert episode {change.episode} already aborted {change.feature}; nothing written"
    return f"{key} changed since it was read; nothing written"


def _expectation(read: Mapping[str, str | None], field: str) -> str:
    return "*" if field not in read else "-" if read[field] is None else f"={read[field]}"


def _describe_change(change: FlagChange) -> str:
    before = "unset" if change.expected_percent is None else f"{change.expected_percent:g}%"
    return f"{change.feature} {before} -> {change.new_percent:g}%"


def _stream_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id ("ms-seq") as a sortable pair; (0, 0) when absent or malformed."""
    ms, _, seq = entry_id.partition("-")
    return (int(ms), int(seq or 0)) if ms.isdigit() and (seq or "0").isdigit() else (0, 0)


def _wrote(result: ApplyResult | WriteResult) -> bool:
    """The result changed Redis (a dry run's recommendation is not waited for)."""
    if isinstance(result, WriteResult):
        return result.is_change or result.audit_id is not None
    return result.applied and result.audit_id is not None


def _text(flag: bool) -> str:
    return "true" if flag else "false"
