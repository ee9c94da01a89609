"""The operator docs stay true to the code: every `rollout` command they show exists, every
configuration field and environment variable the code reads is documented (and no invented
field is), their YAML examples load, and every alert's runbook_url names a file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from rollout_cli.main import app
from rollout_core.config import (
    FeatureSpec,
    FreezeWindow,
    RatioQueries,
    SegmentsSpec,
    SloSpec,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
USAGE = ROOT / "docs" / "usage.md"
ALERT_RULES = ROOT / "observability" / "prometheus-alerts.yml"
# keys of the file itself and of a feature that are not pydantic fields
FILE_KEYS = {"defaults", "profiles", "features", "profile"}
CONFIG_MODELS = (FeatureSpec, FreezeWindow, SloSpec, SegmentsSpec)
# RatioQueries' two fields are documented inside the `ratio` row: {errors: PromQL, total: PromQL}
RATIO_FIELDS = set(RatioQueries.model_fields)

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"`([^`\n]+)`")
# `rollout CMD [SUB]` as a shell command: at a line start, after a prompt, a pipe, `;`, `&&`,
# `$(` or `VAR=value` assignments; prose such as "the rollout controller" is never in code
_COMMAND = re.compile(
    r"(?:^|[;&|(]\s*|^\$\s+)(?:[A-Z_][A-Z0-9_]*=\S*\s+)*rollout\s+([a-z][a-z-]*)(?:\s+([a-z][a-z-]*))?",
    re.MULTILINE,
)


def code_snippets(text: str) -> list[str]:
    """Fenced block lines (comments dropped) and inline code spans, as shell-like text."""
    snippets: list[str] = []
    for block in _FENCE.findall(text):
        snippets += [re.sub(r"\s#\s.*$", "", line).strip() for line in block.splitlines()]
    snippets += [span.strip() for span in _INLINE.findall(_FENCE.sub("", text))]
    return snippets


Invocation = tuple[str, str | None, frozenset[str]]


def mentioned_invocations(text: str) -> set[Invocation]:
    """(command, second word, --options) of every `rollout ...` invocation in the text's code;
    the options are read up to the end of the command (a pipe, `;`, `&&` or `)`)."""
    found: set[Invocation] = set()
    for snippet in code_snippets(text):
        for match in _COMMAND.finditer(snippet):
            rest = re.split(r"[|;&)]", snippet[match.end() :], maxsplit=1)[0]
            options = frozenset(re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest))
            found.add((match[1], match[2], options))
    return found


def mentioned_commands(text: str) -> set[tuple[str, str | None]]:
    return {(command, second) for command, second, _ in mentioned_invocations(text)}


def _options(command: Any) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    return names


def cli_tree() -> dict[str, tuple[set[str], dict[str, set[str]] | None]]:
    """Command name -> (its --options, its sub-commands' --options for a group such as
    `rollout stack`, else None)."""
    root = typer.main.get_command(app)  # typer 0.29 vendors click: groups are duck-typed
    commands: dict[str, Any] = root.commands  # type: ignore[attr-defined]
    tree = {}
    for name, command in commands.items():
        subcommands: dict[str, Any] | None = getattr(command, "commands", None)
        tree[name] = (
            _options(command),
            None if subcommands is None else {n: _options(c) for n, c in subcommands.items()},
        )
    return tree


def test_the_command_finder_reads_shell_lines_and_not_prose() -> None:
    text = (
        "The rollout controller runs `rollout status google`.\n"
        "```sh\n$ rollout init google   # seed\nROLLOUT_DRY_RUN=false rollout run -f g\n"
        "rollout stack up\n# rollout nothing\nrollout audit --json | jq --raw\n```\n"
    )
    assert ("audit", None, frozenset({"--json"})) in mentioned_invocations(text)
    assert mentioned_commands(text) == {
        ("audit", None),
        ("status", "google"),
        ("init", "google"),
        ("run", None),
        ("stack", "up"),
    }


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_rollout_command_in_the_docs_exists(doc: Path) -> None:
    tree = cli_tree()
    unknown = []
    invocations = mentioned_invocations(doc.read_text(encoding="utf-8"))
    for command, second, options in sorted(invocations, key=str):
        shown = f"rollout {command}"
        if command not in tree:
            unknown.append(shown)
            continue
        known_options, subcommands = tree[command]
        if subcommands is not None and second is not None:  # a bare `rollout stack` names it
            if second not in subcommands:
                unknown.append(f"{shown} {second} (known: {sorted(subcommands)})")
                continue
            shown, known_options = f"{shown} {second}", subcommands[second]
        unknown += [f"{shown} {option}" for option in sorted(options - known_options)]
    assert not unknown, f"{doc.name} shows commands or options the CLI does not have: {unknown}"


def _configuration_section() -> str:
    text = USAGE.read_text(encoding="utf-8")
    match = re.search(r"^## Configuration\n(.*?)^## ", text, re.MULTILINE | re.DOTALL)
    assert match, "docs/usage.md has no '## Configuration' section"
    return match[1]


def _documented_fields(section: str) -> set[str]:
    """The first-column names of the configuration tables: | `field` | ..."""
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE))


def test_every_configuration_field_is_documented_and_none_is_invented() -> None:
    real = FILE_KEYS | {name for model in CONFIG_MODELS for name in model.model_fields}
    section = _configuration_section()
    documented = _documented_fields(section)
    assert real - documented == set(), "fields in config.py missing from docs/usage.md"
    ratio_row = re.search(r"^\| `ratio` \| `\{(.*?)\}` \|", section, re.MULTILINE)
    assert ratio_row, "no `ratio` row"
    assert set(re.findall(r"(\w+): PromQL", ratio_row[1])) == RATIO_FIELDS
    assert documented - real == set(), "fields in docs/usage.md that config.py does not have"


def test_the_documented_defaults_are_the_code_defaults() -> None:
    section = _configuration_section()
    fields = FeatureSpec.model_fields
    expected = {
        "ladder": f"`{list(int(step) for step in fields['ladder'].default)}`".replace("'", ""),
        "safe_percent": f"`{fields['safe_percent'].default:g}`",
        "dwell": f"`{int(fields['dwell'].default.total_seconds() // 60)}m`",
        "cooldown": f"`{int(fields['cooldown'].default.total_seconds() // 3600)}h`",
        "tz": f"`{FreezeWindow.model_fields['tz'].default}`",
    }
    for name, default in expected.items():
        row = re.search(rf"^\| `{name}` \|[^|]*\| ([^|]*) \|", section, re.MULTILINE)
        assert row, f"no row for {name}"
        assert row[1].strip() == default, f"{name}: docs say {row[1]!r}, code says {default}"


def _environment_variables_in_code() -> set[str]:
    names: set[str] = set()
    for package in ("rollout_core", "rollout_cli", "rollout_demo", "flows", "tasks", "deployments"):
        for source in (ROOT / package).glob("*.py"):
            text = source.read_text(encoding="utf-8")
            reads = re.findall(
                r"(?:environ(?:\.get)?\(|environ\[|env\.get\(|_seconds_env\(\s*env,\s*"
                r"|validation_alias=)"
                r"\"([A-Z][A-Z0-9_]+)\"",
                text,
            )
            names.update(reads)
            # names kept in constants: STACK_DIR_ENV = "ROLLOUT_STACK_DIR"
            names.update(re.findall(r"^[A-Z_]+_ENV(?:: str)? = \"([A-Z][A-Z0-9_]+)\"", text, re.M))
    return names


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    names = _environment_variables_in_code()
    assert {"REDIS_URL", "PROMETHEUS_BASE_URL", "ROLLOUT_DRY_RUN"} <= names  # the finder works
    usage = USAGE.read_text(encoding="utf-8")
    missing = sorted(name for name in names if f"`{name}`" not in usage)
    assert not missing, f"environment variables read by the code but not in usage.md: {missing}"
    # the gate's per-feature variables are built with f-strings
    assert "`PROVIDER_<FEATURE>_ENABLED`" in usage and "`FLAGS_<FEATURE>_ROLLOUT_PERCENT`" in usage


@pytest.mark.parametrize("doc", ["usage.md", "testing-checklist.md"])
def test_the_rollouts_examples_in_the_docs_load(doc: str) -> None:
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    examples = [
        block
        for block in re.findall(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
        if re.search(r"^features:", block, re.MULTILINE)
    ]
    assert examples, f"{doc} has no rollouts.yaml example"
    for example in examples:
        assert parse_config(example, source=doc).features


def _runbook_urls(rules: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (rule["alert"], rule["annotations"]["runbook_url"])
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_every_alert_runbook_url_is_a_file_in_the_repository() -> None:
    urls = _runbook_urls(yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8")))
    assert len(urls) >= 7
    missing = [(alert, url) for alert, url in urls if not (ROOT / url).is_file()]
    assert not missing, f"runbook_url without a file: {missing}"
