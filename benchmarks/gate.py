"""The gate's figures, side by side in one run (issue 11's targets; prints, asserts nothing):

- `import rollout_sdk`: its time and that no heavy module comes with it;
- cached `RolloutClient.allow()` (real redis-server), and on a segmented feature (five regions,
  the context's `region` picking its segment's 37%), against the LaunchDarkly server SDK (file
  data source) and UnleashClient (bootstrapped), on the same 100,000 actor ids, 37% rollout;
- through the OpenFeature SDK: RolloutProvider against OpenFeature's own InMemoryProvider;
- Redis hung (SIGSTOP), down (killed) and slow (300 ms per reply): 100,000 calls each, p99.9
  and worst, while the refresher keeps trying every 50 ms;
- propagation: an audited `rollout set` (the store's compare-and-set, then the change notice)
  reaching 20 client processes, over 50 changes.

Nothing leaves 127.0.0.1. Run: `.venv/bin/python benchmarks/gate.py` (about 2 minutes), or
`--segmented-only` for the two cached rows alone.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import redis

from deployments.servers import RunningServer, start_redis
from rollout_sdk import RolloutClient

ACTOR_IDS = [f"actor-{number}" for number in range(100_000)]
FEATURE = "google"
PERCENT = 37
BATCH = 1_000
# This VM alternates fast and slow phases lasting seconds (the same loop: 0.9 vs 1.5 us per
# call), so the passes are spread out and each pass's median is kept: the best pass is the
# undisturbed cost (timeit's advice: the minimum), the overall median shows the noise.
PASSES = 5
OFFLINE_URL = "http://127.0.0.1:9"  # the discard port: nothing listens, nothing leaves
HEAVY = ("pydantic", "yaml", "pandas", "prefect", "matplotlib")
PROPAGATION_CLIENTS = 20
PROPAGATION_CHANGES = 50


@dataclass(frozen=True)
class Timing:
    """Per-call cost over batches of calls, and the share of ids the check let in."""

    name: str
    median_ns: float
    p99_ns: float
    share_in: float | None
    best_pass_ns: float = 0.0  # the lowest of the passes' medians

    def __str__(self) -> str:
        share = "" if self.share_in is None else f"   in rollout {self.share_in:6.2%}"
        return (
            f"{self.name:<38} median {self.median_ns:>8,.0f} ns/call   "
            f"best pass {self.best_pass_ns:>8,.0f}   p99 {self.p99_ns:>8,.0f}{share}"
        )


def time_check(
    name: str,
    check: Callable[[object], object],
    contexts: Sequence[object],
    counts: bool = True,
    passes: int = PASSES,
) -> Timing:
    """Median and p99 of the per-call cost over batches of BATCH calls, `passes` times over."""
    share_in = sum(1 for context in contexts if check(context)) / len(contexts)  # also warms up
    per_call: list[float] = []
    pass_medians: list[float] = []
    for _ in range(passes):
        this_pass: list[float] = []
        for start in range(0, len(contexts), BATCH):
            batch = contexts[start : start + BATCH]
            began = time.perf_counter_ns()
            for context in batch:
                check(context)
            this_pass.append((time.perf_counter_ns() - began) / len(batch))
        per_call += this_pass
        pass_medians.append(statistics.median(this_pass))
        time.sleep(0.5)  # let a slow phase of the machine pass rather than fill every pass
    per_call.sort()
    p99 = per_call[min(len(per_call) - 1, round(0.99 * (len(per_call) - 1)))]
    share = share_in if counts else None
    return Timing(name, statistics.median(per_call), p99, share, min(pass_medians))


def import_figures() -> str:
    """`import rollout_sdk` in a fresh interpreter: seconds, and any heavy module it loaded."""
    code = (
        "import json, sys, time; began = time.perf_counter(); import rollout_sdk; "
        "took = time.perf_counter() - began; "
        f"print(json.dumps([took, sorted(m for m in {list(HEAVY)!r} if m in sys.modules)]))"
    )
    took, heavy = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    return (
        f"import rollout_sdk: {took * 1000:.0f} ms; heavy modules loaded: "
        f"{', '.join(heavy) or 'none'} (checked: {', '.join(HEAVY)})"
    )


def seed(url: str, percent: float = PERCENT) -> None:
    client = redis.Redis.from_url(url)
    client.mset(
        {
            f"flags:{FEATURE}:enabled": "true",
            f"flags:{FEATURE}:internal_only": "false",
            f"flags:{FEATURE}:rollout_percent": f"{percent:g}",
        }
    )
    client.sadd("rollout:features", FEATURE)
    client.close()


def gate_timing(redis_url: str) -> tuple[Timing, RolloutClient]:
    seed(redis_url)
    client = RolloutClient(redis_url, refresh_interval=5, max_stale=60, environ={})
    if not client.wait_ready(5):
        raise RuntimeError("the client did not read its flags from the benchmark's Redis")
    contexts: list[object] = [{"actor_id": actor} for actor in ACTOR_IDS]
    # partial, not a lambda: a C-level call, so the figure is the gate's, not a wrapper's
    return time_check(
        "RolloutClient.allow, cached", partial(client.allow, FEATURE), contexts
    ), client


def openfeature_timings(client: RolloutClient) -> tuple[Timing, Timing]:
    """The same get_boolean_value call through OpenFeature, our provider and its in-memory one."""
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    from rollout_sdk.openfeature import RolloutProvider

    flag = InMemoryFlag("on", {"on": True, "off": False})
    api.set_provider_and_wait(InMemoryProvider({FEATURE: flag}), domain="in-memory")
    api.set_provider_and_wait(RolloutProvider(client), domain="rollout")
    contexts: list[object] = [EvaluationContext(actor) for actor in ACTOR_IDS[:20_000]]
    in_memory = partial(api.get_client(domain="in-memory").get_boolean_value, FEATURE, False)
    rollout = partial(api.get_client(domain="rollout").get_boolean_value, FEATURE, False)
    return time_side_by_side(
        ("OpenFeature client + InMemoryProvider", in_memory),
        ("OpenFeature client + RolloutProvider", rollout),
        contexts,
    )


def time_side_by_side(
    first: tuple[str, Callable[[object], object]],
    second: tuple[str, Callable[[object], object]],
    contexts: Sequence[object],
) -> tuple[Timing, Timing]:
    """Two checks timed batch by batch in turn, so a slow phase of the machine hits both."""
    costs: tuple[list[float], list[float]] = ([], [])
    medians: tuple[list[float], list[float]] = ([], [])
    shares = [sum(1 for c in contexts if check(c)) / len(contexts) for _, check in (first, second)]
    for _ in range(PASSES):
        this_pass: tuple[list[float], list[float]] = ([], [])
        for start in range(0, len(contexts), BATCH):
            batch = contexts[start : start + BATCH]
            for index, (_, check) in enumerate((first, second)):
                began = time.perf_counter_ns()
                for context in batch:
                    check(context)
                this_pass[index].append((time.perf_counter_ns() - began) / len(batch))
        for index in (0, 1):
            costs[index].extend(this_pass[index])
            medians[index].append(statistics.median(this_pass[index]))
        time.sleep(0.5)
    timings = []
    for index, (name, _) in enumerate((first, second)):
        ordered = sorted(costs[index])
        p99 = ordered[round(0.99 * (len(ordered) - 1))]
        median, best = statistics.median(ordered), min(medians[index])
        timings.append(Timing(name, median, p99, shares[index], best))
    return timings[0], timings[1]


def fault_figures(name: str, url: str, break_it: Callable[[], None]) -> str:
    """100,000 calls, each timed, while Redis is broken and the refresher retries every 50 ms."""
    seed(url)
    client = RolloutClient(url, refresh_interval=0.05, max_stale=600, environ={})
    if not client.wait_ready(10):
        raise RuntimeError(f"{name}: the client did not read its flags before the fault")
    break_it()
    time.sleep(0.3)  # the refresher is now failing or waiting on the network
    gc.collect()
    gc.freeze()  # as a preloaded gunicorn worker would: full collections skip start-up objects
    allow, clock = client.allow, time.perf_counter_ns
    costs: list[int] = []
    answers = 0
    for actor in ACTOR_IDS:
        context = {"actor_id": actor}
        began = clock()
        answers += allow(FEATURE, context)
        costs.append(clock() - began)
    errors = client.status().refresh_errors
    gc.unfreeze()
    client.close()
    costs.sort()
    p999 = costs[int(0.999 * (len(costs) - 1))]
    return (
        f"Redis {name:<5} {len(costs):,} calls: median {statistics.median(costs) / 1000:.2f} us, "
        f"p99.9 {p999 / 1000:.2f} us (target <= 10), worst {costs[-1] / 1e6:.2f} ms "
        f"(target <= 20); let in {answers / len(costs):.1%}; refresh errors meanwhile {errors}"
    )


_CHILD = r"""
import json, sys, time
from rollout_sdk import RolloutClient
url, wanted = sys.argv[1], [float(v) for v in sys.argv[2].split(",")]
client = RolloutClient(url, environ={})  # the defaults: a 5 s poll, notices pushed
client.wait_ready(10)
time.sleep(0.5)  # the listener subscribes
print("ready", flush=True)
seen = {}
deadline = time.time() + 60
while len(seen) < len(wanted) and time.time() < deadline:
    percent, now = client.percent("google"), time.time()
    for value in wanted:  # the values only rise: a later one also shows an earlier one arrived
        if value <= percent and value not in seen:
            seen[value] = now
    time.sleep(0.002)
print(json.dumps(seen), flush=True)
client.close()
"""


def propagation_figures(url: str) -> str:
    """`rollout set` (the store's audited compare-and-set, then the change notice the store
    will publish itself) seen by 20 client processes: the lag of each client for each change."""
    from rollout_core.flags import RedisFlagStore
    from rollout_sdk.keys import CHANGES_CHANNEL

    seed(url, 0)
    values = [float(1 + n) for n in range(PROPAGATION_CHANGES)]
    argv = [sys.executable, "-c", _CHILD, url, ",".join(f"{v:g}" for v in values)]
    children = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        for _ in range(PROPAGATION_CLIENTS)
    ]
    for child in children:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("a propagation client did not start")
    writer = redis.Redis.from_url(url, decode_responses=True)
    store = RedisFlagStore(writer)
    written: dict[float, float] = {}
    for value in values:
        written[value] = time.time()
        store.set_percent(FEATURE, value, "benchmark", "benchmark", at=datetime.now(UTC))
        writer.publish(CHANGES_CHANNEL, FEATURE)  # until the store's scripts publish it
        time.sleep(0.2)
    lags: list[float] = []
    missed = 0
    for child in children:
        output, _ = child.communicate(timeout=120)
        seen = {float(k): v for k, v in json.loads(output.strip().splitlines()[-1]).items()}
        for value in values:
            if value in seen:
                lags.append(seen[value] - written[value])
            else:
                missed += 1
    writer.close()
    lags.sort()
    p99 = lags[int(0.99 * (len(lags) - 1))] if lags else float("nan")
    return (
        f"propagation: {PROPAGATION_CHANGES} audited sets x {PROPAGATION_CLIENTS} client "
        f"processes: median {statistics.median(lags) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
        f"(target <= 1000), worst {lags[-1] * 1000:.0f} ms, missed {missed}"
    )


def launchdarkly_check(
    workdir: Path,
) -> tuple[Callable[[object], bool], list[object], Callable[[], None]]:
    """An LDClient fed by a file data source; events and diagnostics off, every URL loopback."""
    from ldclient import Context, LDClient
    from ldclient.config import Config
    from ldclient.integrations import Files

    rollout = {"variations": [{"variation": 0, "weight": PERCENT * 1000}]}
    rollout["variations"].append({"variation": 1, "weight": (100 - PERCENT) * 1000})
    flag = {
        "key": FEATURE,
        "version": 1,
        "on": True,
        "variations": [True, False],
        "offVariation": 1,
        "fallthrough": {"rollout": rollout},
        "salt": FEATURE,
        "targets": [],
        "rules": [],
        "prerequisites": [],
    }
    flags_file = workdir / "launchdarkly-flags.json"
    flags_file.write_text(json.dumps({"flags": {FEATURE: flag}}))
    config = Config(
        sdk_key="benchmark-offline",
        update_processor_class=Files.new_data_source(paths=[str(flags_file)]),
        send_events=False,
        diagnostic_opt_out=True,
        base_uri=OFFLINE_URL,
        events_uri=OFFLINE_URL,
        stream_uri=OFFLINE_URL,
    )
    client = LDClient(config=config, start_wait=5)
    if not client.is_initialized():
        raise RuntimeError("the LaunchDarkly client did not load the flag file")
    contexts: list[object] = [Context.create(actor) for actor in ACTOR_IDS]
    variation = client.variation
    return (lambda context: variation(FEATURE, context, False) is True), contexts, client.close


def unleash_check(workdir: Path) -> tuple[Callable[[object], bool], list[object]]:
    """An UnleashClient bootstrapped from a dict. initialize_client() is never called, so it
    never fetches, registers or sends metrics (both are also switched off)."""
    from UnleashClient import UnleashClient
    from UnleashClient.cache import FileCache
    from UnleashClient.utils import InstanceAllowType

    strategy = {
        "name": "flexibleRollout",
        "parameters": {"rollout": str(PERCENT), "stickiness": "userId", "groupId": FEATURE},
    }
    cache = FileCache("rollout-benchmark", directory=str(workdir / "unleash-cache"))
    cache.bootstrap_from_dict(
        {"version": 1, "features": [{"name": FEATURE, "enabled": True, "strategies": [strategy]}]}
    )
    client = UnleashClient(
        url=f"{OFFLINE_URL}/api",
        app_name="rollout-benchmark",
        disable_metrics=True,
        disable_registration=True,
        refresh_interval=3600,
        cache=cache,
        multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
    )
    contexts: list[object] = [{"userId": actor} for actor in ACTOR_IDS]
    is_enabled = client.is_enabled
    return (lambda context: is_enabled(FEATURE, context)), contexts


def faults(workdir: Path) -> list[str]:
    """The three faults, after the same loop against a healthy Redis: the control row shows
    what this machine's scheduler alone does to the tail."""
    lines = []
    healthy = start_redis(workdir / "healthy")
    try:
        lines.append(fault_figures("ok", healthy.url, lambda: None))
    finally:
        healthy.stop()
    hung = start_redis(workdir / "hung")
    try:
        lines.append(
            fault_figures("hung", hung.url, lambda: hung.process.send_signal(signal.SIGSTOP))
        )
    finally:
        hung.process.send_signal(signal.SIGCONT)
        hung.stop()
    down = start_redis(workdir / "down")
    try:
        lines.append(fault_figures("down", down.url, down.kill))
    finally:
        down.stop()
    backend = start_redis(workdir / "slow")
    proxy = subprocess.Popen(  # in its own process: its threads must not share our GIL
        [sys.executable, "-c", _PROXY, str(backend.port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proxy.stdout is not None
        url = proxy.stdout.readline().strip()
        lines.append(fault_figures("slow", url, lambda: None))  # every reply takes 300 ms
    finally:
        proxy.terminate()
        proxy.wait(10)
        backend.stop()
    return lines


_PROXY = """
import sys, time
from tests.integration.redis_faults import SlowProxy
proxy = SlowProxy(int(sys.argv[1]), delay=0.3)
print(proxy.url, flush=True)
time.sleep(3600)
"""


SEGMENTED = "google-seg"
REGIONS = ("eu-canary", "eu-west", "eu-central", "us-east", "us-west")


def segmented_timing(redis_url: str) -> Timing:
    """allow() on a feature segmented by region: each context's region at 37%, one in ten
    contexts without a region (the fallback, 0%)."""
    client = redis.Redis.from_url(redis_url)
    keys = {
        f"flags:{SEGMENTED}:enabled": "true",
        f"flags:{SEGMENTED}:internal_only": "false",
        f"flags:{SEGMENTED}:segment_by": "region",
        f"flags:{SEGMENTED}:segments": ",".join(REGIONS),
        f"flags:{SEGMENTED}:segment_fallback_percent": "0",
    }
    keys.update({f"flags:{SEGMENTED}:segment:{r}:rollout_percent": f"{PERCENT}" for r in REGIONS})
    client.mset(keys)  # type: ignore[arg-type]
    client.sadd("rollout:features", SEGMENTED)
    client.close()
    gate = RolloutClient(redis_url, refresh_interval=5, max_stale=60, environ={})
    if not gate.wait_ready(5) or not gate.refresh([SEGMENTED]):
        raise RuntimeError("the client did not read the segmented feature")
    contexts: list[object] = [
        {"actor_id": actor, "region": REGIONS[n % 5]} if n % 10 else {"actor_id": actor}
        for n, actor in enumerate(ACTOR_IDS)
    ]
    timing = time_check(
        "RolloutClient.allow, cached, segmented", partial(gate.allow, SEGMENTED), contexts
    )
    gate.close()
    return timing


def segmented_only() -> None:
    with tempfile.TemporaryDirectory(prefix="gate-bench-") as tmp:
        server: RunningServer = start_redis(Path(tmp) / "redis")
        try:
            gate, client = gate_timing(server.url)
            client.close()
            segmented = segmented_timing(server.url)
        finally:
            server.stop()
    print(
        f"{len(ACTOR_IDS):,} actor ids, {PERCENT}% rollout, batches of {BATCH:,}, {PASSES} passes"
    )
    print(gate)
    print(segmented)
    print(
        f"segmented allow(): best pass {segmented.best_pass_ns / 1000:.2f} us "
        f"(target <= 1.00 us), {segmented.best_pass_ns - gate.best_pass_ns:+.0f} ns over "
        "the unsegmented feature"
    )


def main() -> None:
    if "--segmented-only" in sys.argv:
        segmented_only()
        return
    logging.basicConfig(level=logging.ERROR)
    began = time.monotonic()
    lines = [import_figures()]
    with tempfile.TemporaryDirectory(prefix="gate-bench-") as tmp:
        workdir = Path(tmp)
        server: RunningServer = start_redis(workdir / "redis")
        try:
            gate, client = gate_timing(server.url)
            segmented = segmented_timing(server.url)
            fault_lines = faults(workdir)  # before the heavier imports below
            in_memory, provider = openfeature_timings(client)
            client.close()
            propagation = propagation_figures(server.url)
        finally:
            server.stop()
        ld_check, ld_contexts, close_ld = launchdarkly_check(workdir)
        launchdarkly = time_check("LaunchDarkly SDK (file source)", ld_check, ld_contexts)
        close_ld()
        unleash_fn, unleash_contexts = unleash_check(workdir)  # never started: nothing to stop
        unleash = time_check("UnleashClient (bootstrapped)", unleash_fn, unleash_contexts)
    print(
        f"{len(ACTOR_IDS):,} actor ids, {PERCENT}% rollout, batches of {BATCH:,}, {PASSES} passes"
    )
    for timing in (gate, segmented, launchdarkly, unleash, in_memory, provider):
        print(timing)
    print(
        f"speed-up vs LaunchDarkly: {launchdarkly.median_ns / gate.median_ns:.1f}x on medians, "
        f"{launchdarkly.best_pass_ns / gate.best_pass_ns:.1f}x on best passes (target >= 8x)"
    )
    print(
        f"speed-up vs Unleash:      {unleash.median_ns / gate.median_ns:.1f}x on medians, "
        f"{unleash.best_pass_ns / gate.best_pass_ns:.1f}x on best passes"
    )
    print(
        f"cached allow(): best pass {gate.best_pass_ns / 1000:.2f} us (target <= 1.00 us), "
        f"median over all passes {gate.median_ns / 1000:.2f} us"
    )
    print(
        f"segmented allow(): best pass {segmented.best_pass_ns / 1000:.2f} us "
        f"(target <= 1.00 us), median over all passes {segmented.median_ns / 1000:.2f} us"
    )
    extra_best = (provider.best_pass_ns - in_memory.best_pass_ns) / 1000
    extra_median = (provider.median_ns - in_memory.median_ns) / 1000
    print(
        f"OpenFeature: RolloutProvider costs {extra_best:+.2f} us over InMemoryProvider on best "
        f"passes, {extra_median:+.2f} us on medians (target <= +1.50)"
    )
    print("fault runs: 100,000 calls each timed alone, gc frozen after start-up, as below")
    for line in [*fault_lines, propagation, *lines]:
        print(line)
    print(f"total {time.monotonic() - began:.1f} s (pid {os.getpid()})")


if __name__ == "__main__":
    main()
