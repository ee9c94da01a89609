"""Segmented rollouts: config, per-segment readings from one grouped query, per-segment state
in Redis (fakeredis with Lua), and the segment order, through the whole controller pass."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout_core.config import FeatureSpec, expand_segments, parse_config
from rollout_core.controller import run_pass
from rollout_core.errors import ConfigError
from rollout_core.flags import AUDIT_STREAM, RedisFlagStore
from rollout_core.model import Action
from rollout_core.slo import Answer, PrometheusSource

NOW = datetime(2025, 10, 8, 15, 0, tzinfo=UTC)
LONG_AGO = "2025-10-01T00:00:00Z"
REGIONS = ("eu-canary", "eu-west", "us-east")
ERRORS = "sum by (feature, region) (increase(errors_total[5m]))"
TOTAL = "sum by (feature, region) (increase(requests_total[5m]))"


def segmented(order: str = "sequential", halt: str = "segment", **extra: Any) -> FeatureSpec:
    return FeatureSpec.model_validate(
        {
            "name": "google",
            "segments": {
                "by": "region",
                "values": list(REGIONS),
                "order": order,
                "halt_on_breach": halt,
                **extra,
            },
            "slos": [
                {
                    "name": "error_rate",
                    "group_by": "feature",
                    "ratio": {"errors": ERRORS, "total": TOTAL},
                    "max": 0.01,
                }
            ],
        }
    )


class GroupedPrometheus:
    """Answers the two grouped queries with one series per (feature, region); counts queries."""

    def __init__(self, error_ratio: Mapping[str, float], features: tuple[str, ...] = ("google",)):
        self.error_ratio, self.features, self.sent = dict(error_ratio), features, 0

    def query(self, promql: str, params: Mapping[str, str]) -> Answer:
        self.sent += 1
        series = []
        for feature in self.features:
            for region, ratio in self.error_ratio.items():
                value = 5000 * ratio if "errors" in promql else 5000
                labels = {"feature": feature, "region": region}
                series.append({"metric": labels, "value": [0, str(value)]})
        return Answer(200, {"status": "success", "data": {"result": series}})


@pytest.fixture
def client() -> Iterator[fakeredis.FakeRedis]:
    fake = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    yield fake
    fake.close()


def seed(client: fakeredis.FakeRedis, percents: Mapping[str, str], **feature: str) -> None:
    keys = {"enabled": "true", "internal_only": "false", "paused": "false", **feature}
    client.mset({f"flags:google:{name}": value for name, value in keys.items()})
    for region, percent in percents.items():
        prefix = f"flags:google:segment:{region}"
        client.mset(
            {
                f"{prefix}:rollout_percent": percent,
                f"{prefix}:paused": "false",
                f"{prefix}:last_change_time": LONG_AGO,
            }
        )


def percents(client: fakeredis.FakeRedis) -> dict[str, str | None]:
    return {r: client.get(f"flags:google:segment:{r}:rollout_percent") for r in REGIONS}


def run(client: fakeredis.FakeRedis, spec: FeatureSpec, ratios: Mapping[str, float]) -> Any:
    source = PrometheusSource("http://prometheus", client=GroupedPrometheus(ratios))
    return run_pass([spec], RedisFlagStore(client), source, NOW, dry_run=False)


HEALTHY = dict.fromkeys(REGIONS, 0.001)


def test_a_segmented_feature_expands_to_one_spec_per_segment_in_order() -> None:
    units = expand_segments([segmented()])
    assert [u.name for u in units] == ["google[eu-canary]", "google[eu-west]", "google[us-east]"]
    assert {u.series_key for u in units} == {"google"}


def test_two_dimensions_are_a_region_major_product_named_with_a_dot() -> None:
    spec = segmented(by=["region", "tier"], values=[["eu", "us"], ["free", "paid"]])
    assert spec.segments is not None
    assert spec.segments.names == ("eu.free", "eu.paid", "us.free", "us.paid")
    assert spec.segments.matchers("us.paid") == (("region", "us"), ("tier", "paid"))


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        ("{by: region, values: [a, b], order: random}", "segments.order"),
        ("{by: region, values: [a, a]}", "repeated: a"),
        ("{by: region, values: ['eu:west']}", "not safe in a Redis key"),
        ("{by: region, values: ['eu west']}", "not safe in a Redis key"),
        ("{by: [region, tier], values: [a, b]}", "one list of values per label"),
        ("{by: region, values: [a], halt_on_breach: none}", "segments.halt_on_breach"),
        ("{by: region, values: [a], fallback_percent: 150}", "segments.fallback_percent"),
    ],
)
def test_bad_segments_are_refused_at_load_with_the_file_and_line(
    segments: str, expected: str
) -> None:
    text = (
        "features:\n  google:\n    promote_without_traffic: true\n"
        f"    segments: {segments}\n"
        "    slos: [{name: p95, query: q, max: 1}]\n"
    )
    with pytest.raises(ConfigError) as error:
        parse_config(text, "rollouts.yaml")
    assert "rollouts.yaml:4" in str(error.value) and expected in str(error.value)


def test_a_placeholder_without_segments_is_refused() -> None:
    text = (
        "features:\n  google:\n    promote_without_traffic: true\n"
        "    slos: [{name: p95, query: 'q{region=\"{{segment}}\"}', max: 1}]\n"
    )
    with pytest.raises(ConfigError, match="has no segments"):
        parse_config(text, "rollouts.yaml")


def test_a_placeholder_query_is_written_once_per_segment() -> None:
    spec = FeatureSpec.model_validate(
        {
            "name": "google",
            "promote_without_traffic": True,
            "segments": {"by": "region", "values": ["eu", "us"]},
            "slos": [{"name": "p95", "query": 'p95{region="{{region}}"}', "max": 1}],
        }
    )
    assert [u.slos[0].query for u in expand_segments([spec])] == [
        'p95{region="eu"}',
        'p95{region="us"}',
    ]


def test_the_segment_state_keys_are_next_to_the_features_and_one_query_serves_every_segment(
    client: fakeredis.FakeRedis,
) -> None:
    seed(client, dict.fromkeys(REGIONS, "0"))
    source = PrometheusSource("http://prometheus", client=GroupedPrometheus(HEALTHY))
    outcomes = run_pass([segmented("parallel")], RedisFlagStore(client), source, NOW, False)
    assert source.queries_sent == 2  # errors and total, whatever the number of segments
    assert list(outcomes) == ["google[eu-canary]", "google[eu-west]", "google[us-east]"]
    assert percents(client) == dict.fromkeys(REGIONS, "10")
    assert client.get("flags:google:rollout_percent") is None  # the feature's own key untouched
    assert client.get("flags:google:segment:eu-west:last_percent") == "0"
    entries = client.xrange(AUDIT_STREAM)
    assert len(entries) == 3
    assert [e[1]["segment"] for e in entries] == list(REGIONS)
    assert {e[1]["feature"] for e in entries} == {"google"}


def test_a_breach_in_one_segment_rolls_back_only_that_segment(
    client: fakeredis.FakeRedis,
) -> None:
    seed(client, dict.fromkeys(REGIONS, "50"))
    outcomes = run(client, segmented("parallel"), {**HEALTHY, "eu-west": 0.2})
    assert percents(client) == {"eu-canary": "100", "eu-west": "10", "us-east": "100"}
    assert outcomes["google[eu-west]"].decision.action is Action.ROLLBACK
    assert client.get("flags:google:segment:eu-west:last_rollback_time") is not None
    assert client.get("flags:google:segment:us-east:last_rollback_time") is None


def test_under_sequential_order_only_the_first_segment_not_at_full_promotes(
    client: fakeredis.FakeRedis,
) -> None:
    seed(client, {"eu-canary": "50", "eu-west": "0", "us-east": "0"})
    outcomes = run(client, segmented("sequential"), HEALTHY)
    assert percents(client) == {"eu-canary": "100", "eu-west": "0", "us-east": "0"}
    held = outcomes["google[eu-west]"].decision
    assert held.guard == "segment order" and held.proposed is Action.PROMOTE
    assert "earlier segment eu-canary is at 50%" in held.reason


def test_under_sequential_order_the_next_segment_starts_once_the_previous_is_at_full(
    client: fakeredis.FakeRedis,
) -> None:
    seed(client, {"eu-canary": "100", "eu-west": "0", "us-east": "0"})
    run(client, segmented("sequential"), HEALTHY)
    assert percents(client) == {"eu-canary": "100", "eu-west": "10", "us-east": "0"}


def test_halt_on_breach_all_holds_every_later_segment_but_not_an_earlier_one(
    client: fakeredis.FakeRedis,
) -> None:
    seed(client, dict.fromkeys(REGIONS, "10"))
    outcomes = run(client, segmented("parallel", "all"), {**HEALTHY, "eu-west": 0.2})
    assert percents(client) == {"eu-canary": "50", "eu-west": "0", "us-east": "10"}
    assert "segment eu-west breached (halt_on_breach: all)" in outcomes["google[us-east]"].summary


def test_a_paused_feature_pauses_every_segment_and_a_paused_segment_only_itself(
    client: fakeredis.FakeRedis,
) -> None:
    seed(client, dict.fromkeys(REGIONS, "10"))
    client.set("flags:google:segment:eu-west:paused", "true")
    run(client, segmented("parallel"), HEALTHY)
    assert percents(client) == {"eu-canary": "50", "eu-west": "10", "us-east": "50"}
    client.set("flags:google:paused", "true")
    client.set("flags:google:segment:eu-canary:last_change_time", LONG_AGO)
    run(client, segmented("parallel"), HEALTHY)
    assert percents(client) == {"eu-canary": "50", "eu-west": "10", "us-east": "50"}


def test_a_segment_without_series_has_no_data_and_holds(client: fakeredis.FakeRedis) -> None:
    seed(client, dict.fromkeys(REGIONS, "10"))
    outcomes = run(client, segmented("parallel"), {"eu-canary": 0.001, "us-east": 0.001})
    assert percents(client)["eu-west"] == "10"
    assert "no data" in outcomes["google[eu-west]"].decision.reason


def test_a_query_without_the_segment_label_is_a_configuration_error_naming_the_fix(
    client: fakeredis.FakeRedis,
) -> None:
    seed(client, dict.fromkeys(REGIONS, "10"))

    class Ungrouped(GroupedPrometheus):
        def query(self, promql: str, params: Mapping[str, str]) -> Answer:
            result = [{"metric": {"feature": "google"}, "value": [0, "5000"]}]
            return Answer(200, {"status": "success", "data": {"result": result}})

    source = PrometheusSource("http://prometheus", client=Ungrouped({}))
    outcomes = run_pass([segmented("parallel")], RedisFlagStore(client), source, NOW, False)
    for outcome in outcomes.values():
        assert outcome.is_failed
        assert "sum by (feature, region)" in outcome.summary


def test_a_feature_changed_concurrently_is_not_overwritten(client: fakeredis.FakeRedis) -> None:
    seed(client, dict.fromkeys(REGIONS, "10"))
    store = RedisFlagStore(client)
    states = store.read_each(["google[eu-west]"])
    client.set("flags:google:paused", "true")  # the feature paused after the read
    from rollout_core.controller import apply_decisions, check_all_guards, evaluate_all

    spec = [u for u in expand_segments([segmented("parallel")]) if u.segment == "eu-west"]
    source = PrometheusSource("http://prometheus", client=GroupedPrometheus(HEALTHY))
    snapshots = source.fetch(spec, NOW)
    decisions = check_all_guards(spec, states, evaluate_all(spec, snapshots, states), NOW)
    outcomes = apply_decisions(store, decisions, states, NOW, dry_run=False)
    assert outcomes["google[eu-west]"].decision.guard == "concurrent change"
    assert percents(client)["eu-west"] == "10"


PERCENTS = st.sampled_from(["0", "10", "50", "100"])
RATIOS = st.sampled_from([0.001, 0.2, None])


@settings(max_examples=60, deadline=None)
@given(
    start=st.tuples(PERCENTS, PERCENTS, PERCENTS),
    ratios=st.tuples(RATIOS, RATIOS, RATIOS),
    order=st.sampled_from(["sequential", "parallel"]),
    halt=st.sampled_from(["segment", "all"]),
)
def test_segment_invariants_over_a_whole_pass(
    start: tuple[str, str, str],
    ratios: tuple[float | None, float | None, float | None],
    order: str,
    halt: str,
) -> None:
    """A breach in one segment never changes another segment's percent except by that
    segment's own evidence; a promotion under sequential needs every earlier one at 100%."""
    fake = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    seed(fake, dict(zip(REGIONS, start, strict=True)))
    observed = {r: x for r, x in zip(REGIONS, ratios, strict=True) if x is not None}
    outcomes = run(fake, segmented(order, halt), observed)
    after = percents(fake)
    for index, region in enumerate(REGIONS):
        before, now = float(start[index]), float(after[region] or 0)
        decision = outcomes[f"google[{region}]"].decision
        if now < before:  # only its own breach pulls a segment back
            assert observed.get(region) == 0.2
        if now > before:  # a promotion: its own evidence healthy, and the order respected
            assert observed.get(region) == 0.001
            if order == "sequential":
                assert all(float(start[k]) == 100 for k in range(index))
                assert all(observed.get(REGIONS[k]) != 0.2 for k in range(index))
            if halt == "all":
                assert all(observed.get(REGIONS[k]) != 0.2 for k in range(index))
        if observed.get(region) == 0.2 and before > 0:
            assert decision.action is Action.ROLLBACK
    fake.close()


def test_a_paused_segment_names_its_own_key_and_the_command_that_resumes_it(
    client: fakeredis.FakeRedis,
) -> None:
    seed(client, dict.fromkeys(REGIONS, "10"))
    client.set("flags:google:segment:eu-west:paused", "true")
    outcomes = run(client, segmented("parallel"), HEALTHY)
    assert (
        "paused: flags:google:segment:eu-west:paused is true; no change until "
        "`rollout resume google --segment eu-west`"
    ) in outcomes["google[eu-west]"].summary
    client.set("flags:google:paused", "true")
    outcomes = run(client, segmented("parallel"), HEALTHY)
    assert "flags:google:paused is true" in outcomes["google[us-east]"].summary
    assert "`rollout resume google`" in outcomes["google[us-east]"].summary


def test_two_dimensions_pick_each_segments_series_by_both_labels() -> None:
    spec = FeatureSpec.model_validate(
        {
            "name": "google",
            "segments": {"by": ["region", "tier"], "values": [["eu", "us"], ["free", "paid"]]},
            "slos": [
                {
                    "name": "error_rate",
                    "ratio": {"errors": "sum by (region, tier) (e)", "total": "t"},
                    "max": 0.01,
                }
            ],
        }
    )

    class TwoLabels:
        def query(self, promql: str, params: Mapping[str, str]) -> Answer:
            result = []
            for region, tier, errors in (
                ("eu", "free", 1),
                ("eu", "paid", 2),
                ("us", "free", 3),
                ("us", "paid", 400),
            ):
                value = errors if promql.startswith("sum") else 1000
                labels = {"region": region, "tier": tier}
                result.append({"metric": labels, "value": [0, str(value)]})
            return Answer(200, {"status": "success", "data": {"result": result}})

    source = PrometheusSource("http://prometheus", client=TwoLabels())
    snapshots = source.fetch(expand_segments([spec]), NOW)
    ratios = {name: s.reading("error_rate").value for name, s in snapshots.items()}
    assert ratios == {
        "google[eu.free]": 0.001,
        "google[eu.paid]": 0.002,
        "google[us.free]": 0.003,
        "google[us.paid]": 0.4,
    }
    assert source.queries_sent == 2
