"""The small ports the shell talks through. Real adapters implement them; tests use fakes.

- FlagStore: the flag keys and the audit stream (Redis, `rollout_core.flags`).
- MetricsSource: SLO readings (Prometheus or a replayed frame, `rollout_core.slo`).
- TelemetrySink: run metrics (Pushgateway, `rollout_core.telemetry`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from rollout_core.errors import RolloutError
from rollout_core.model import Action, FlagState, SloSnapshot

if TYPE_CHECKING:
    from rollout_core.config import FeatureSpec

__all__ = ["ApplyResult", "FlagChange", "FlagStore", "MetricsSource", "TelemetrySink"]


@dataclass(frozen=True)
class FlagChange:
    """A percent change to write if the flag still is what the writer read (compare-and-set).

    `expected_percent` is None when the percent key was absent at read time.
    In dry run nothing but a recommendation entry is written to the audit stream.
    """

    feature: str
    expected_percent: float | None
    expected_paused: bool
    new_percent: float
    reason: str
    by: str  # "controller" or "manual"
    at: datetime
    action: Action
    dry_run: bool = False
    # the raw string of every flag key the decision read (FlagState.raw; None = absent). When
    # given, the script compares each exactly and any difference is a conflict; when empty,
    # only the percent (numerically) and `paused` are compared.
    expected_raw: tuple[tuple[str, str | None], ...] = ()
    # the alert episode an abort acts on: the script refuses it (a conflict) when the episode
    # already aborted, and records it with the write, atomically
    episode: str | None = None
    # the decision's inputs as compact JSON (rollout_core.decision_inputs); when given, the
    # audit entry carries them in its `inputs` field
    inputs: str = ""


@dataclass(frozen=True)
class ApplyResult:
    """What the compare-and-set did. On a conflict nothing was written and `current_*` say
    what the store holds now.

    `unknown`: the reply was lost and Redis stayed unreachable, so whether the change was
    written is not known; `message` says so and names the command that checks it.
    `recovered`: the reply was lost, and reading back on a fresh connection found the change
    written (with `audit_id`).
    """

    applied: bool
    conflict: bool
    current_percent: float | None
    current_paused: bool
    audit_id: str | None = None  # the audit stream entry id, when one was written
    unknown: bool = False
    recovered: bool = False
    message: str = ""
    # applied on the master, but no replica acknowledged it in time (WAIT 1): a failover now
    # could lose it
    unconfirmed: bool = False


class FlagStore(Protocol):
    def read(self, features: Sequence[str]) -> dict[str, FlagState]:
        """Every feature's state in one round trip; InvalidFlagValue names the first bad key."""
        ...

    def read_each(self, features: Sequence[str]) -> dict[str, FlagState | RolloutError]:
        """Like read, but a feature whose keys do not parse gets its error, not the others'."""
        ...

    def apply(self, change: FlagChange) -> ApplyResult:
        """Write percent, history and audit entry atomically, or nothing on a conflict."""
        ...

    def apply_many(self, changes: Sequence[FlagChange]) -> list[ApplyResult | RolloutError]:
        """apply for every change in one round trip, each atomic on its own; a change that
        failed gets its error in its place, in the order given."""
        ...

    def is_episode_handled(self, episode: str) -> bool:
        """True when this alert episode already aborted its feature (the fast abort)."""
        ...

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
        """A manual change through the same compare-and-set (read, then apply), audited.
        Already at `percent`: nothing written, unless `rewrite` (a newer write, same percent,
        which ends a lost-write hold)."""
        ...

    def forget_recommendations(self, features: Sequence[str]) -> None:
        """A dry run held these features: their next recommendation is recorded even when it
        equals the last one (a new incident, not a repeat). One round trip."""
        ...


class MetricsSource(Protocol):
    def fetch(
        self, specs: Sequence[FeatureSpec], at: datetime
    ) -> Mapping[str, SloSnapshot | RolloutError]:
        """Every feature's SLO readings at `at`. Raises MetricsUnavailable when the source
        cannot answer at all; a query that fails is the QueryError of each SLO reading it."""
        ...


class TelemetrySink(Protocol):
    def record_run(
        self,
        results: Mapping[str, Action],
        percents: Mapping[str, float],
        status: str,
        at: datetime,
    ) -> str | None:
        """Count this run's decisions and status and publish them; never raises. May return a
        short status for the run log, e.g. "pushed" or "pushgateway unreachable: ...".
        The controller passes two keywords only when they say something:
        `unconfirmed=[features]` (a sink may omit it) and `scheduled=False` (a run its
        deployment's schedule did not create: a fast abort, `rollout run`, a manual deployment
        run, the demo; it must not move the last success), which every sink must accept."""
        ...
