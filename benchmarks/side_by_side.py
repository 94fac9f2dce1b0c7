"""Issue 12: the metered path side by side with its peers, as production runs.

One run serves every variant (benchmarks/views.py) from the same gunicorn, PostgreSQL and
Redis, and loads them with wrk in interleaved rounds: a warm-up of each first, then
``--rounds`` rounds of ``--seconds`` each per variant, the order rotated every round. For
each variant it prints requests/s, p50 and p99 latency (wrk's latency distribution), and
the CPU milliseconds per response of gunicorn's workers (app), PostgreSQL's processes (db)
and Redis; then checks exactness in SQL and prints the ratios issue 12 targets.

Production here: PostgreSQL durable (fsync, synchronous_commit, full_page_writes on),
persistent database connections (CONN_MAX_AGE 600), DEBUG off, Django's cache on Redis
(shared by the workers, as docs/architecture.md requires), gunicorn with 2 sync workers.

Run from the repository root (installs what is missing; migrating takes about a minute):

    .venv/bin/python benchmarks/side_by_side.py

Options: --seconds 10 --warmup 2 --rounds 3 --connections 4 --threads 1 --workers 2
--worker-class sync --cache redis --variants plain,plain_fn,... --json FILE
--profile metered,plain_fn (after the rounds, one more run of each with py-spy on the workers)
--nice -10 (as root: the servers and wrk ahead of other work on a shared machine)
--retries 2 --quiet-wait 60 (before each run, wait for a quiet second if one comes; run a
DISTURBED run again)
"""

from __future__ import annotations

import argparse
import http.client
import importlib.metadata
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import harness

HERE = Path(__file__).resolve().parent
LUA = str(HERE / "wrk_post.lua")

VARIANTS = {
    "plain": "/bench/plain/",
    "plain_fn": "/bench/unmetered/",
    "metered": "/demo/seo/",
    "mixin": "/bench/mixin/",
    "floor": "/bench/floor/",
    "sfu": "/bench/sfu/",
    "ratelimit": "/bench/ratelimit/",
}
LABELS = {
    "plain": "DRF APIView, tenant token, unmetered",
    "plain_fn": "function view, tenant token, unmetered",
    "metered": "@metered + QuotaMiddleware (/demo/seo/)",
    "mixin": "DRF APIView + MeteredMixin",
    "floor": "token + one SQL statement (counter + event)",
    "sfu": "token + ORM select_for_update, counter + event",
    "ratelimit": "token + django-ratelimit on the cache",
}
RATIO_TARGET = 0.90  # @metered and MeteredMixin >= 0.90 x floor
SFU_TARGET = 1.30  # @metered >= 1.30 x sfu
CPU_TARGET_MS = 0.25  # app CPU per metered call - the unmetered view's <= 0.25 ms
# A run during which more than this share of the machine's CPU went to other work is
# marked as disturbed.
DISTURBED = 0.10


# --- set-up -----------------------------------------------------------------------------


def prepare_database(primitives: list[str], limit: int) -> tuple[Any, str]:
    """One tenant on a plan allowing ``limit`` of every primitive; (tenant, token)."""
    from billing_app.catalog import services as catalog
    from billing_app.customers import services as customers
    from billing_app.subscriptions import services as subscriptions

    catalog.plan_upsert(
        key="bench", name="Benchmark", quotas={primitive: limit for primitive in primitives}
    )
    tenant = customers.customer_create(email="bench@example.com")
    subscriptions.subscription_set(customer=tenant, plan_key="bench", status="active")
    _, token = customers.tenant_token_issue(customer=tenant, name="bench")
    return tenant, token


def fdatasync_rate(directory: str, seconds: float = 1.0) -> float:
    """fdatasync calls per second of an 8 kB write in ``directory``: what a durable commit
    waits for on this disk."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        count, began = 0, time.monotonic()
        while time.monotonic() - began < seconds and count < 100_000:
            os.pwrite(fd, b"\0" * 8192, 0)
            os.fdatasync(fd)
            count += 1
        return count / (time.monotonic() - began)
    finally:
        os.close(fd)
        os.unlink(path)


def loadavg() -> str:
    with open("/proc/loadavg") as file:
        return " ".join(file.read().split()[:3])


def describe_machine(args: argparse.Namespace, redis_url: str | None) -> list[str]:
    import django
    from django.conf import settings

    assert harness.POSTGRES is not None
    with open("/proc/cpuinfo") as file:
        model = next((line.split(":", 1)[1].strip() for line in file if "model name" in line), "?")
    with open("/proc/meminfo") as file:
        memory_gib = int(file.readline().split()[1]) / 2**20
    try:
        with open("/etc/debian_version") as file:
            debian = f"Debian {file.read().strip()}"
    except OSError:
        debian = platform.platform()
    shown = [
        "server_version",
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "wal_sync_method",
        "shared_buffers",
        "max_connections",
    ]
    pg = {name: harness.sql(f"SHOW {name}")[0][0] for name in shown}
    database = settings.DATABASES["default"]
    cache = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]
    lines = [
        f"Machine: nproc {os.cpu_count()}, {model}, {memory_gib:.0f} GiB, "
        f"Linux {platform.release()}, {debian}, Python {platform.python_version()}",
        f"PostgreSQL {pg.pop('server_version')}: "
        + " ".join(f"{name}={value}" for name, value in pg.items())
        + f"; fdatasync/s of its disk (1 s probe): "
        f"{fdatasync_rate(os.path.dirname(harness.POSTGRES.datadir)):.0f}",
        f"Django {django.get_version()}: DEBUG={settings.DEBUG}, "
        f"CONN_MAX_AGE={database.get('CONN_MAX_AGE')}, "
        f"CONN_HEALTH_CHECKS={database.get('CONN_HEALTH_CHECKS', False)}, cache {cache}"
        + (f" on {redis_url}" if redis_url else " (per process)"),
        f"gunicorn {importlib.metadata.version('gunicorn')}: {args.workers} "
        f"{args.worker_class} workers"
        + (
            " (one request at a time each, connection closed after every response)"
            if args.worker_class == "sync"
            else ""
        ),
    ]
    return lines


def redis_description(redis_url: str) -> str:
    import redis

    info = redis.Redis.from_url(redis_url).info("server")
    return (
        f"Redis {info['redis_version']} (redis-py {importlib.metadata.version('redis')}), "
        "no persistence"
    )


# --- one measurement --------------------------------------------------------------------


def run_wrk(
    wrk: str, port: int, variant: str, token: str, seconds: int, args: argparse.Namespace
) -> dict[str, Any]:
    """wrk against one variant for ``seconds``, with the CPU time each server's processes
    spent meanwhile."""
    assert harness.POSTGRES is not None and harness.GUNICORN_PID is not None
    command = [
        wrk,
        "-t",
        str(args.threads),
        "-c",
        str(args.connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        LUA,
        f"http://127.0.0.1:{port}{VARIANTS[variant]}",
        "--",
        token,
    ]
    postgres = harness.POSTGRES.pid()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    table_before = harness.process_table()
    busy_before, total_before = harness.system_cpu()
    began = time.monotonic()
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    wall = time.monotonic() - began
    busy_after, total_after = harness.system_cpu()
    table_after = harness.process_table()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        sys.exit(f"wrk failed ({completed.returncode}):\n{completed.stdout}{completed.stderr}")
    line = next(
        (line for line in completed.stdout.splitlines() if line.startswith("BENCH_JSON ")), None
    )
    if line is None:
        sys.exit(f"wrk printed no result:\n{completed.stdout}{completed.stderr}")
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))

    def delta(pid: int | None, *, own: bool = True) -> float:
        if pid is None:
            return 0.0
        return harness.tree_cpu(table_after, pid, own=own) - harness.tree_cpu(
            table_before, pid, own=own
        )

    cpu = {
        "app": delta(harness.GUNICORN_PID, own=False),  # the workers
        "db": delta(postgres),  # the postmaster and all its processes
        "redis": delta(harness.REDIS_PID),
        "wrk": (children_after.ru_utime + children_after.ru_stime)
        - (children_before.ru_utime + children_before.ru_stime),
    }
    busy = busy_after - busy_before
    capacity = (total_after - total_before) or 1.0
    result.update(
        variant=variant,
        seconds=result["duration_us"] / 1e6,
        rps=result["ok"] / (result["duration_us"] / 1e6),
        cpu_s=cpu,
        # Busy CPU of the machine not spent by the servers or wrk (other work, interrupts),
        # as a share of all the machine's CPU over the run.
        outside=max(0.0, busy - sum(cpu.values())) / capacity,
        machine_busy=busy / capacity,
        wall=wall,
    )
    return result


def wait_for_quiet(limit: float) -> float:
    """Wait, at most ``limit`` seconds, for a second in which less than ``DISTURBED`` of the
    machine's CPU is busy (the servers are idle between runs, so that is other work);
    returns the seconds waited."""
    began = time.monotonic()
    while time.monotonic() - began < limit:
        busy_before, total_before = harness.system_cpu()
        time.sleep(1)
        busy_after, total_after = harness.system_cpu()
        if (busy_after - busy_before) / ((total_after - total_before) or 1.0) < DISTURBED:
            break
    return time.monotonic() - began


def smoke(port: int, token: str, variants: list[str]) -> dict[str, dict[str, int]]:
    """One request to each variant; stops the run unless every one answers 2xx."""
    counts = {}
    for variant in variants:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request(
            "POST",
            VARIANTS[variant],
            b"{}",
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        body = response.read()
        connection.close()
        if not 200 <= response.status < 300:
            sys.exit(f"{variant} {VARIANTS[variant]} answered {response.status}: {body[:500]!r}")
        charged = 1 if response.getheader("RateLimit") else 0
        counts[variant] = {"sent": 1, "ok": 1, "responses": 1, "charged": charged}
    return counts


# --- profile (--profile) ------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*):\d+\)$")
APP_CODE = ("billing_app/", "benchmarks/", "project/")


def record_profile(variant: str, seconds: int, measure: Any) -> str:
    """One more run of ``variant`` while py-spy samples every gunicorn worker; returns the
    file of collapsed stacks (py-spy's raw format: flamegraph.pl, speedscope and inferno
    read it)."""
    assert harness.GUNICORN_PID is not None
    handle, output = tempfile.mkstemp(prefix=f"billing-bench-profile-{variant}.", suffix=".txt")
    os.close(handle)
    spy = subprocess.Popen(
        [
            harness.PY_SPY,
            "record",
            "--pid",
            str(harness.GUNICORN_PID),
            "--subprocesses",
            "--nonblocking",  # no pausing of the workers: the figures stay near the real ones
            "--rate",
            "200",
            "--duration",
            str(seconds),
            "--format",
            "raw",
            "--output",
            output,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # attached
    measure(variant, seconds)
    try:
        _, errors = spy.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        spy.kill()
        sys.exit("py-spy did not finish")
    if spy.returncode != 0 or not os.path.exists(output):
        sys.exit(f"py-spy failed ({spy.returncode}): {errors.strip()[-1000:]}")
    return output


def _frames(path: str) -> Counter[tuple[str, ...]]:
    """(file function, ...) per stack, root first, without py-spy's process frames."""
    stacks: Counter[tuple[str, ...]] = Counter()
    with open(path) as file:
        for line in file:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            frames = []
            for frame in stack.split(";"):
                match = _FRAME.match(frame)
                if match:
                    frames.append(f"{match['file']} {match['function']}")
            if frames and count.isdigit():
                stacks[tuple(frames)] += int(count)
    return stacks


def _layer(frame: str) -> str:
    """The package a frame's code belongs to: django and DRF by subpackage."""
    parts = frame.split(" ", 1)[0].split("/")
    if parts[0] in ("django", "rest_framework") and len(parts) > 2:
        return "/".join(parts[:2])
    if len(parts) == 1 or parts[0] == "":
        return "(stdlib)"  # py-spy shortens the standard library's files to their name
    return parts[0]


def print_profiles(profiles: dict[str, str], figures: dict[str, dict[str, float]]) -> None:
    """Where each profiled variant's app CPU goes: self time by package, and the app's own
    functions (inclusive), in ms per response = share of samples x app CPU ms/resp."""
    layers: dict[str, Counter[str]] = {}
    for variant, path in profiles.items():
        stacks = _frames(path)
        total = sum(stacks.values()) or 1
        per_sample = figures[variant]["app_ms"] / total
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        for frames, count in stacks.items():
            own[_layer(frames[-1])] += count
            for frame in set(frames):
                # A middleware's __call__ holds the rest of the chain: it says nothing.
                if frame.startswith(APP_CODE) and not frame.endswith(".__call__"):
                    inclusive[frame] += count
        layers[variant] = Counter({k: v * per_sample for k, v in own.items()})
        print(
            f"\nProfile of {variant} (py-spy, both workers, {total} samples; ms = share of "
            f"samples x {figures[variant]['app_ms']:.3f} ms app CPU/resp): {path}"
        )
        print("  the app's own code, inclusive:")
        for frame, count in inclusive.most_common(14):
            print(f"    {100 * count / total:5.1f}%  {count * per_sample:6.3f} ms  {frame}")
    names = list(layers)
    print("\nSelf time by package, app CPU ms per response")
    print("  package                 " + "".join(f"{name:>10s}" for name in names))
    everything = sum((Counter(layer) for layer in layers.values()), Counter())
    for layer, _ in everything.most_common(16):
        print(f"  {layer:22s}  " + "".join(f"{layers[n][layer]:10.3f}" for n in names))


# --- figures ----------------------------------------------------------------------------


def per_response_ms(runs: list[dict[str, Any]], part: str) -> float:
    responses = sum(run["responses"] for run in runs)
    return 1000 * sum(run["cpu_s"][part] for run in runs) / responses if responses else 0.0


def median_ratio(rounds: list[dict[str, dict[str, Any]]], a: str, b: str) -> float:
    """The median over rounds of a's req/s over b's in the same round."""
    ratios = [r[a]["rps"] / r[b]["rps"] for r in rounds if a in r and b in r and r[b]["rps"]]
    return statistics.median(ratios) if ratios else float("nan")


def check_exactness(
    tenant: Any, charging: dict[str, str], totals: dict[str, dict[str, int]]
) -> tuple[bool, list[str]]:
    """For every charging variant: its counters equal its events' sum, every 2xx wrk read
    was charged once (a distinct counter value each), and nothing was charged that was not
    sent. Requests cut off at the end of a wrk run (sent, answered by the server, never
    read) are charged but not 2xx: at most sent - responses of them."""
    from benchmarks import peers

    # The requests wrk cut off may still be running: wait (a few seconds at most) until
    # nothing changes, so that the figures below are final.
    usage = peers.usage_by_primitive(customer_id=tenant.pk)
    for _ in range(20):
        time.sleep(0.5)
        usage, before = peers.usage_by_primitive(customer_id=tenant.pk), usage
        if usage == before:
            break
    lines, passed = [], True
    for variant, primitive in charging.items():
        found = usage.get(primitive, {"counter": 0, "events": 0, "quantity": 0})
        total = totals[variant]
        unread = found["events"] - total["ok"]
        cut_off = total["sent"] - total["responses"]
        checks = {
            "counter = sum of events": found["counter"] == found["quantity"],
            "one unit per event": found["quantity"] == found["events"],
            "every 2xx charged": found["events"] >= total["ok"],
            "no 2xx charged twice": total["charged"] == total["ok"] and total["repeated"] == 0,
            "nothing charged unsent": found["events"] <= total["sent"] and unread <= cut_off,
        }
        ok = all(checks.values())
        passed &= ok
        failed = [name for name, good in checks.items() if not good]
        lines.append(
            f"  {variant:9s} {primitive:12s} counter {found['counter']:7d}  events "
            f"{found['events']:7d}  2xx {total['ok']:7d}  cut off {unread:3d} (of "
            f"{cut_off} unanswered)  {'OK' if ok else 'FAILED: ' + ', '.join(failed)}"
        )
    stray = sorted(set(usage) - set(charging.values()))
    if stray:
        passed = False
        lines.append(f"  events of primitives no variant charges: {', '.join(stray)}  FAILED")
    return passed, lines


def print_summary(
    variants: list[str],
    runs: dict[str, list[dict[str, Any]]],
    rounds: list[dict[str, dict[str, Any]]],
) -> dict[str, Any]:
    figures: dict[str, dict[str, float]] = {}
    for variant in variants:
        measured = runs[variant]
        rps = [run["rps"] for run in measured]
        middle = statistics.median(rps)
        figures[variant] = {
            "rps": middle,
            "spread": (max(rps) - min(rps)) / middle if middle else 0.0,
            "x_floor": median_ratio(rounds, variant, "floor"),
            "p50_ms": statistics.median(run["latency_us"]["p50"] for run in measured) / 1000,
            "p99_ms": statistics.median(run["latency_us"]["p99"] for run in measured) / 1000,
            "app_ms": per_response_ms(measured, "app"),
            "db_ms": per_response_ms(measured, "db"),
            "redis_ms": per_response_ms(measured, "redis"),
            "wrk_ms": per_response_ms(measured, "wrk"),
            "served_ms": sum(per_response_ms(measured, part) for part in ("app", "db", "redis")),
            "not_2xx": sum(
                run["other"] + sum(run["errors"][k] for k in ("connect", "read", "write"))
                for run in measured
            ),
        }
    # What the ratio to the floor would be on a machine the servers saturate alone: the
    # floor's CPU per response over the variant's. Other work moves it far less than req/s.
    for variant in variants:
        floor = figures.get("floor", {}).get("served_ms")
        figures[variant]["cpu_x_floor"] = (
            floor / figures[variant]["served_ms"] if floor and figures[variant]["served_ms"] else 0
        )
    print(
        "\nvariant      req/s  spread  x floor  p50 ms  p99 ms   app CPU    db CPU  "
        "redis CPU  x floor  non-2xx\n"
        "                                                       ms/resp   ms/resp    ms/resp"
        "  by CPU"
    )
    for variant in variants:
        f = figures[variant]
        print(
            f"{variant:9s} {f['rps']:8.1f}  {100 * f['spread']:5.1f}%  {f['x_floor']:7.3f}"
            f"  {f['p50_ms']:6.2f}  {f['p99_ms']:6.2f}  {f['app_ms']:8.3f}  {f['db_ms']:8.3f}"
            f"  {f['redis_ms']:9.3f}  {f['cpu_x_floor']:7.3f}  {f['not_2xx']:7.0f}"
        )
    return figures


def print_targets(
    figures: dict[str, dict[str, float]], rounds: list[dict[str, dict[str, Any]]]
) -> None:
    print("\nTargets of issue 12 (req/s ratios: median of the per-round ratios)")

    def ratio(a: str, b: str, label: str, target: float) -> None:
        if a in figures and b in figures:
            value = median_ratio(rounds, a, b)
            print(
                f"  {label:38s} {value:7.3f}   target >= {target:.2f}   "
                f"{harness.verdict(value >= target)}"
            )

    def overhead(a: str, b: str, label: str) -> None:
        if a in figures and b in figures:
            value = figures[a]["app_ms"] - figures[b]["app_ms"]
            print(
                f"  {label:38s} {value:+7.3f}   target <= {CPU_TARGET_MS:.2f}   "
                f"{harness.verdict(value <= CPU_TARGET_MS)}"
            )

    ratio("metered", "floor", "@metered / floor", RATIO_TARGET)
    ratio("mixin", "floor", "MeteredMixin / floor", RATIO_TARGET)
    ratio("metered", "sfu", "@metered / sfu", SFU_TARGET)
    if all(v in figures for v in ("metered", "mixin", "floor", "sfu")):
        served = {v: figures[v]["served_ms"] for v in ("metered", "mixin", "floor", "sfu")}
        print(
            "  by CPU per response (app + db + redis), for comparison: "
            f"@metered / floor {served['floor'] / served['metered']:.3f}, "
            f"MeteredMixin / floor {served['floor'] / served['mixin']:.3f}, "
            f"@metered / sfu {served['sfu'] / served['metered']:.3f}"
        )
    print("  app CPU ms per call over the unmetered view of the same kind:")
    overhead("metered", "plain_fn", "@metered - plain_fn (function views)")
    overhead("mixin", "plain", "MeteredMixin - plain (DRF APIViews)")
    overhead("metered", "plain", "@metered - plain (DRF; unlike kinds)")
    if "floor" in figures and "plain_fn" in figures:
        floor = figures["floor"]["app_ms"] - figures["plain_fn"]["app_ms"]
        print(f"  for reference, floor - plain_fn         {floor:+7.3f}")


# --- main -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="per variant and round")
    parser.add_argument("--warmup", type=int, default=2, help="seconds per variant, once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--workers", type=int, default=harness.WORKERS)
    parser.add_argument("--worker-class", default="sync")
    parser.add_argument("--cache", choices=["redis", "locmem"], default="redis")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--profile", default="", help="variants to profile with py-spy")
    parser.add_argument(
        "--retries",
        type=int,
        default=0,
        help="run a DISTURBED run again, up to this many times, keeping the least disturbed",
    )
    parser.add_argument(
        "--quiet-wait",
        type=int,
        default=0,
        help="before each run, wait up to this many seconds for a quiet second",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the servers and wrk (inherited from this script); a negative one "
        "(root) keeps other work on a shared machine from moving the figures",
    )
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    profiled = [v for v in args.profile.split(",") if v]
    unknown = (set(variants) | set(profiled)) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if set(profiled) - set(variants):
        parser.error("--profile: only variants that are measured (--variants)")
    # Bounded: at most 10 rounds of 2 minutes per variant, on loopback only.
    if not (1 <= args.seconds <= 120 and 0 <= args.warmup <= 30 and 1 <= args.rounds <= 10):
        parser.error("--seconds 1..120, --warmup 0..30, --rounds 1..10")
    if not (0 <= args.retries <= 5 and 0 <= args.quiet_wait <= 300):
        parser.error("--retries 0..5, --quiet-wait 0..300")
    if not (1 <= args.threads <= args.connections <= 256):
        parser.error("1 <= --threads <= --connections <= 256")

    if args.nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except PermissionError:
            parser.error("--nice below 0 needs root")
    load_start = loadavg()
    wrk = harness.ensure_debian_package("wrk", "wrk")
    redis_url = harness.start_redis() if args.cache == "redis" else None
    harness.start(redis_url=redis_url)

    from benchmarks.views import PEER_LIMIT, PRIMITIVES

    charging = {v: PRIMITIVES[v] for v in variants if v in PRIMITIVES}
    tenant, token = prepare_database(list(PRIMITIVES.values()), PEER_LIMIT)
    machine = describe_machine(args, redis_url)
    port = harness.start_gunicorn(workers=args.workers, worker_class=args.worker_class)
    wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split()
    machine.append(f"{redis_description(redis_url)}" if redis_url else "No Redis (--cache locmem)")
    machine.append(
        f"wrk {wrk_version[1] if len(wrk_version) > 1 else '?'}: {args.threads} thread(s), "
        f"{args.connections} connections, on 127.0.0.1:{port}; {args.warmup} s warm-up per "
        f"variant, then {args.rounds} rounds x {args.seconds} s per variant, order rotated"
    )
    if args.nice:
        machine.append(f"Niceness {args.nice} for the servers, wrk and this script (--nice)")
    print("\n".join(machine))
    print(f"Load average at start: {load_start}", flush=True)

    totals = smoke(port, token, variants)
    for total in totals.values():
        total["repeated"] = 0

    def measure(variant: str, seconds: int) -> dict[str, Any]:
        result = run_wrk(wrk, port, variant, token, seconds, args)
        total = totals[variant]
        for key in ("sent", "ok", "responses", "charged", "repeated"):
            total[key] += result[key]
        return result

    if args.warmup:
        print(f"Warm-up, {args.warmup} s per variant...", flush=True)
        for variant in variants:
            measure(variant, args.warmup)

    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    rounds: list[dict[str, dict[str, Any]]] = []
    for number in range(args.rounds):
        shift = number % len(variants)
        order = variants[shift:] + variants[:shift]
        print(f"Round {number + 1}: {', '.join(order)}", flush=True)
        this_round: dict[str, dict[str, Any]] = {}
        for variant in order:
            result = None
            for attempt in range(1 + args.retries):
                if args.quiet_wait:
                    wait_for_quiet(args.quiet_wait)
                run = measure(variant, args.seconds)
                if result is None or run["outside"] < result["outside"]:
                    result = run
                if run["outside"] <= DISTURBED:
                    break
                if attempt < args.retries:
                    print(
                        f"  {variant:9s} disturbed ({100 * run['outside']:.0f}% of the CPU "
                        "elsewhere): again",
                        flush=True,
                    )
            assert result is not None
            runs[variant].append(result)
            this_round[variant] = result
            cpu = {
                part: 1000 * s / max(1, result["responses"]) for part, s in result["cpu_s"].items()
            }
            print(
                f"  {variant:9s} {result['rps']:8.1f} req/s  p50 "
                f"{result['latency_us']['p50'] / 1000:6.2f} ms  p99 "
                f"{result['latency_us']['p99'] / 1000:6.2f} ms  app {cpu['app']:.3f}  db "
                f"{cpu['db']:.3f}  redis {cpu['redis']:.3f}  wrk {cpu['wrk']:.3f} ms/resp  "
                f"non-2xx {result['other']}  outside {100 * result['outside']:4.1f}%"
                + ("  DISTURBED" if result["outside"] > DISTURBED else ""),
                flush=True,
            )
        rounds.append(this_round)
    load_end = loadavg()
    profiles = {}
    for variant in profiled:
        if args.quiet_wait:
            wait_for_quiet(args.quiet_wait)
        print(f"Profiling {variant} for {args.seconds} s (py-spy)...", flush=True)
        profiles[variant] = record_profile(variant, args.seconds, measure)

    print("\nExactness (SQL, over every request sent, warm-up included)")
    passed, lines = check_exactness(tenant, charging, totals)
    print("\n".join(lines))

    figures = print_summary(variants, runs, rounds)
    print_targets(figures, rounds)
    if profiles:
        print_profiles(profiles, figures)
    print(f"\nLoad average: {load_start} at start, {load_end} at end")
    shares = [run["outside"] for v in variants for run in runs[v]]
    disturbed = sum(share > DISTURBED for share in shares)
    print(
        f"Busy CPU outside the servers and wrk: median {100 * statistics.median(shares):.1f}%,"
        f" at most {100 * max(shares):.1f}% of the machine; {disturbed} of {len(shares)} runs"
        f" above {100 * DISTURBED:.0f}% (DISTURBED: other work on the machine moved them)"
    )
    print(f"Exactness: {'all checks passed' if passed else 'FAILED'}")

    if args.json:
        with open(args.json, "w") as file:
            json.dump(
                {
                    "machine": machine,
                    "load": [load_start, load_end],
                    "args": vars(args),
                    "figures": figures,
                    "runs": runs,
                    "exact": passed,
                },
                file,
                indent=1,
            )
    if not passed:
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
