"""The operator's flag commands: init, status, set, pause, resume, audience, audit.

Only typer is imported at load time; Redis, pydantic and the formatters load inside the
command that needs them, so `rollout --help` and every other command stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rollout_cli.shell import (
    EXIT_FAILURE,
    Outcome,
    actor,
    exit_code,
    log_audited,
    now,
    open_store,
    run,
)

if TYPE_CHECKING:
    from datetime import timedelta

    from rollout_core.config import RolloutsConfig
    from rollout_core.flags import RedisFlagStore, WriteResult
    from rollout_core.ports import ApplyResult

__all__ = ["audience", "audit", "init", "pause", "resume", "set_percent", "status"]

Feature = Annotated[str, typer.Argument(help="Feature name, e.g. google.", show_default=False)]
Reason = Annotated[str | None, typer.Option(help="Why: recorded in the audit trail.")]
By = Annotated[
    str | None,
    typer.Option(
        help="Who makes the change, for the audit trail. Default: the OS user ($USER, else "
        "the login name, else manual).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
ConfigPath = Annotated[Path, typer.Option(help="Rollouts file for dwell and cooldown.")]
Segment = Annotated[
    str | None,
    typer.Option(
        help="One segment of a segmented feature (e.g. eu-west): act on its keys "
        "flags:FEATURE:segment:SEGMENT:*.",
        show_default=False,
    ),
]


def _unit(store: RedisFlagStore, feature: str, segment: str | None) -> str:
    """The feature, or `feature[segment]` once the segment is one Redis lists for it."""
    from rollout_core.config import validate_feature_name
    from rollout_core.errors import ConfigError

    name = validate_feature_name(feature)
    if segment is None:
        return name
    known = store.segments_of(name)
    if segment not in known:
        listed = ", ".join(known) or "none (not segmented)"
        raise ConfigError(
            f"segment {segment!r} is not one of {name}'s segments (flags:{name}:segments: "
            f"{listed}); run `rollout init {name} --config rollouts.yaml` after adding it"
        )
    return f"{name}[{segment}]"


def init(
    feature: Feature,
    by: By = None,
    segments: Annotated[
        str | None,
        typer.Option(help="Segments in rollout order, e.g. eu-canary,eu-west,us-east."),
    ] = None,
    segment_by: Annotated[
        str | None, typer.Option(help="The context attribute(s), e.g. region or region,tier.")
    ] = None,
    fallback_percent: Annotated[
        str, typer.Option(help="Percent for a context without the attribute or another value.")
    ] = "0",
    config: Annotated[
        Path | None,
        typer.Option(help="Take the segments from this rollouts file.", show_default=False),
    ] = None,
) -> None:
    """Seed enabled=true, internal_only=true, rollout_percent=0, paused=false where absent;
    with segments, also each segment's keys and the keys services discover them by."""

    def command() -> Outcome:
        from rollout_cli.controller_commands import AUDIT_FEATURE as RESERVED_FEATURE
        from rollout_cli.formatting import init_message
        from rollout_cli.inputs import parse_percent_argument
        from rollout_core.config import (
            SegmentsSpec,
            env_collision,
            load_config,
            validate_feature_name,
        )
        from rollout_core.errors import ConfigError

        name = validate_feature_name(feature)
        if name == RESERVED_FEATURE:
            raise ConfigError(
                f"feature name {name!r} is reserved: the kill switch's audit entries "
                "(`rollout controller pause|resume|status`) are filed under it; pick another"
            )
        spec: SegmentsSpec | None = None
        if config is not None:
            spec = load_config(config).feature(name).segments
            if spec is None and segments is None:
                raise ConfigError(f"feature {name!r} in {config} declares no segments")
        if segments is not None:
            if segment_by is None:
                raise ConfigError(
                    f"--segments needs --segment-by, e.g. rollout init {name} --segment-by "
                    f"region --segments {segments}"
                )
            by_labels = [part.strip() for part in segment_by.split(",")]
            values = [part.strip() for part in segments.split(",")]
            fallback = parse_percent_argument(fallback_percent)
            if any(len(v.split(".")) != len(by_labels) for v in values):
                raise ConfigError(
                    f"--segments {segments}: each segment names one value per label of "
                    f"--segment-by {segment_by}, joined with '.', e.g. eu-west.free"
                )
            dimensions = [
                list(dict.fromkeys(v.split(".")[i] if "." in v else v for v in values))
                for i in range(len(by_labels))
            ]
            try:
                spec = SegmentsSpec.model_validate(
                    {"by": by_labels, "values": dimensions, "fallback_percent": fallback}
                )
            except ValueError as error:
                raise ConfigError(f"--segments {segments}: {error}") from None
        store = open_store()
        clash = env_collision(name, store.known_features())
        if clash is not None:
            raise ConfigError(clash)
        if spec is None:
            result = store.init(name, now(), actor(by))
            return _written(store, init_message(name, result), _code(result), result)
        names = spec.names if segments is None or len(spec.by) == 1 else tuple(values)
        results = store.init_segments(name, spec.by, names, spec.fallback_percent, now(), actor(by))
        lines = [init_message(name, results[0])]
        lines += [
            f"segment {s}: {'initialised' if r.is_change else 'already initialised'}"
            for s, r in zip(names, results[1:-1], strict=True)
        ]
        lines.append(
            f"flags:{name}:segment_by={','.join(spec.by)} segments={','.join(names)} "
            f"segment_fallback_percent={spec.fallback_percent:g}"
        )
        codes = [_code(r) for r in results]
        notes: list[str] = []
        for result in results:
            notes += log_audited(store, result.audit_id)
        return Outcome("\n".join(lines), max(codes), tuple(notes))

    run(command)


def status(
    features: Annotated[list[str] | None, typer.Argument(help="Default: all known.")] = None,
    as_json: AsJson = False,
    config: ConfigPath = Path("rollouts.yaml"),
    segment: Segment = None,
) -> None:
    """Percent, enabled, audience, paused, last change, and dwell and cooldown time left."""

    def command() -> Outcome:
        from dataclasses import replace

        from rollout_cli.formatting import status_json, status_row, status_table
        from rollout_core.config import validate_feature_name
        from rollout_core.errors import ConfigError
        from rollout_core.overrides import read_all_overrides

        names = [validate_feature_name(name) for name in features or []]
        moment = now()
        rollouts, notes = _load_rollouts(config)
        store = open_store()
        if not names:
            configured = set(rollouts.features) if rollouts is not None else set()
            names = sorted(configured | set(store.known_features()))
        rows, codes = [], [0]
        overrides = read_all_overrides(store.client, names)
        if segment is not None and len(names) != 1:
            raise ConfigError(f"--segment {segment} needs exactly one feature, e.g. google")
        units = []
        for name in names:  # a segmented feature: its row, then one row per segment
            listed = store.segments_of(name)
            if segment is not None:
                units.append(_unit(store, name, segment))
            else:
                units += [name, *(f"{name}[{s}]" for s in listed)]
        for unit, state in store.read_each(units).items():
            name = unit.partition("[")[0]
            dwell, cooldown, source = _timing(rollouts, name)
            if rollouts is not None and source == "defaults":
                notes.append(f"{name} is not in {config}; {_DEFAULTS_NOTE}")
            if isinstance(state, Exception):
                codes.append(exit_code(state))
                notes.append(f"error: {state}")
            else:  # a bad history or audience key holds promotions only
                notes.extend(f"warning: {problem}; promotions hold" for problem in state.problems)
            row = status_row(unit, state, dwell, cooldown, source, moment)
            if unit == name:
                notes.extend(f"warning: ignored override: {p}" for p in overrides[name].problems)
            rows.append(replace(row, overrides=tuple(overrides[name].rows())))
        if not rows and not as_json:
            return Outcome("no features found; run `rollout init FEATURE`", 0, tuple(notes))
        output = status_json(rows) if as_json else status_table(rows)
        return Outcome(output, max(codes), tuple(notes))

    run(command)


_DEFAULTS_NOTE = "using the default dwell 15m and cooldown 1h"


def _load_rollouts(path: Path) -> tuple[RolloutsConfig | None, list[str]]:
    """The rollouts file, or None and a note: status still shows flags when it is missing."""
    from rollout_core.config import load_config
    from rollout_core.errors import ConfigError

    if not path.exists():
        return None, [f"{path} not found; {_DEFAULTS_NOTE}"]
    try:
        return load_config(path), []
    except ConfigError as error:
        return None, [f"{error}; {_DEFAULTS_NOTE}"]


def _timing(rollouts: RolloutsConfig | None, name: str) -> tuple[timedelta, timedelta, str]:
    """(dwell, cooldown, where they came from) for one feature."""
    from rollout_core.config import FeatureSpec

    if rollouts is not None and name in rollouts.features:
        spec = rollouts.features[name]
        return spec.dwell, spec.cooldown, rollouts.source
    fields = FeatureSpec.model_fields
    return fields["dwell"].default, fields["cooldown"].default, "defaults"


def set_percent(
    feature: Feature,
    percent: Annotated[str, typer.Argument(help="0..100, e.g. 10 or 0.5.", show_default=False)],
    reason: Reason = None,
    by: By = None,
    segment: Segment = None,
    rewrite: Annotated[
        bool,
        typer.Option(
            "--rewrite",
            help="Write and audit even when the flag already holds PERCENT: a newer write ends "
            "the controller's lost-write hold (Redis lost its last change in a failover).",
        ),
    ] = False,
) -> None:
    """Set the rollout percent through the controller's compare-and-set (audited). Works over
    a corrupt percent too: the audit entry records the old raw value."""

    def command() -> Outcome:
        from rollout_cli.formatting import set_message
        from rollout_cli.inputs import parse_percent_argument, require_reason
        from rollout_core.config import validate_feature_name

        name = validate_feature_name(feature)
        target = parse_percent_argument(percent)
        why = require_reason(reason, f'rollout set {name} {percent} --reason "canary is healthy"')
        store = open_store()
        name = _unit(store, name, segment)
        # only the percent is read here: a bad value in another key must not block an
        # emergency change, and a bad percent is what `set` repairs
        before = store.raw_values(name)["rollout_percent"]
        result = store.set_percent(name, target, why, actor(by), at=now(), rewrite=rewrite)
        failed = result.conflict or result.unknown
        return _written(
            store, set_message(name, before, target, result), EXIT_FAILURE * failed, result
        )

    run(command)


def _written(
    store: RedisFlagStore,
    message: str,
    code: int = 0,
    result: WriteResult | ApplyResult | None = None,
) -> Outcome:
    """The outcome of an audited write, with its Markdown log line appended."""
    return Outcome(message, code, log_audited(store, None if result is None else result.audit_id))


def pause(feature: Feature, reason: Reason = None, by: By = None, segment: Segment = None) -> None:
    """Stop the controller changing this feature (rollbacks included) until resumed; with
    --segment, that segment only (the feature's pause stops every segment)."""
    run(lambda: _pause(feature, True, reason or "paused by operator", actor(by), segment))


def resume(feature: Feature, reason: Reason = None, by: By = None, segment: Segment = None) -> None:
    """Let the controller change this feature (or, with --segment, that segment) again."""
    run(lambda: _pause(feature, False, reason or "resumed by operator", actor(by), segment))


def _pause(feature: str, paused: bool, reason: str, by: str, segment: str | None) -> Outcome:
    from rollout_cli.formatting import pause_message
    from rollout_cli.inputs import require_one_line
    from rollout_core.config import validate_feature_name

    name = validate_feature_name(feature)
    reason = require_one_line(reason, "--reason")
    store = open_store()
    name = _unit(store, name, segment)
    result = store.set_paused(name, paused, reason, by, now())
    return _written(store, pause_message(name, paused, result), _code(result), result)


def audience(
    feature: Feature,
    to: Annotated[str, typer.Argument(help="internal or public.", show_default=False)],
    reason: Reason = None,
    by: By = None,
) -> None:
    """Switch the audience and reset the percent to 0, atomically (audited). Switching to
    the audience already set (an absent internal_only is public) changes nothing."""

    def command() -> Outcome:
        from rollout_cli.formatting import audience_message
        from rollout_cli.inputs import parse_audience
        from rollout_core.config import validate_feature_name

        name = validate_feature_name(feature)
        internal_only = parse_audience(to)
        why = reason or f"audience set to {to.strip().lower()} by operator"
        store = open_store()
        result = store.set_audience(name, internal_only, why, actor(by), now())
        return _written(store, audience_message(name, internal_only, result), _code(result), result)

    run(command)


def _code(result: WriteResult) -> int:
    return EXIT_FAILURE if result.unknown else 0


def audit(
    feature: Annotated[str | None, typer.Argument(help="Default: every feature.")] = None,
    as_json: AsJson = False,
    limit: Annotated[int, typer.Option(help="Newest entries to show.")] = 50,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Show entry ids and each decision's inputs (rollout explain)."
        ),
    ] = False,
    rebuild_log: Annotated[
        Path | None,
        typer.Option(
            help="Rewrite this Markdown log (e.g. rollout_log.md) from the whole stream instead.",
            show_default=False,
        ),
    ] = None,
    segment: Segment = None,
) -> None:
    """The audit trail from the Redis stream, newest first; dry runs are recommendations."""

    def command() -> Outcome:
        from rollout_cli.formatting import audit_json, audit_table
        from rollout_cli.inputs import parse_limit
        from rollout_core.audit import read_audit, rebuild_rollout_log
        from rollout_core.config import validate_feature_name
        from rollout_core.errors import ConfigError

        if rebuild_log is not None:
            if feature is not None:
                raise ConfigError(
                    f"--rebuild-log writes every feature's entries; drop {feature!r} or use "
                    "`rollout audit FEATURE` to read one"
                )
            written = rebuild_rollout_log(open_store().client, rebuild_log)
            return Outcome(f"rewrote {rebuild_log} from rollout:audit: {written} entries")
        name = None if feature is None else validate_feature_name(feature)
        count = parse_limit(limit)
        if segment is not None and name is None:
            raise ConfigError(f"--segment {segment} needs a feature, e.g. rollout audit google")
        entries = read_audit(open_store().client, name, count, segment)
        if as_json:
            return Outcome(audit_json(entries))
        return Outcome(audit_table(entries, verbose) if entries else "no audit entries")

    run(command)
