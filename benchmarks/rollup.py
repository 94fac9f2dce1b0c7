"""Benchmark 2 of issue 3: usage rollup latency against the number of events in the window.

Starts a throwaway PostgreSQL, migrates, creates two tenants on one plan and writes, in
SQL, 1,000 usage events in the current window of one and 1,000,000 in the window of the
other (spread over four primitives, with the counters set to their sums, as the app would
have written them). Serves with gunicorn (2 workers) and, from a separate process,
times ``GET /v1/users/<id>/billing/usage`` (operator key) for each tenant in turn. Every
response carries the number of SQL statements it ran (benchmarks/middleware.py).

Target: the larger tenant's median latency at most 1.5 x the smaller's, and the same
number of queries per request.

Run from the repository root:  .venv/bin/python benchmarks/rollup.py
Options: --small 1000 --large 1000000 --seconds 5 --warmup 1 --connections 1 --rounds 2
"""

import argparse
import json
import statistics
import sys
import time
from typing import Any

import harness

TARGET = 1.5  # large p50 <= TARGET x small p50
PRIMITIVES = ["seo", "aeo", "email.send", "images"]


def prepare_database(sizes: dict[str, int]) -> tuple[str, dict[str, int]]:
    """An operator key, and a tenant per size with that many events in its window."""
    from django.db import transaction
    from django.utils import timezone

    from billing_app.catalog import services as catalog
    from billing_app.customers import services as customers
    from billing_app.entitlements import entitlement_for
    from billing_app.models import UsageCounter, UsageEvent
    from billing_app.subscriptions import services as subscriptions

    catalog.plan_upsert(key="bench", name="Benchmark", quotas=dict.fromkeys(PRIMITIVES, 10**15))
    _, operator_key = customers.operator_key_create(name="bench")
    events, counters = UsageEvent._meta.db_table, UsageCounter._meta.db_table
    tenants = {}
    for name, count in sizes.items():
        tenant = customers.customer_create(email=f"{name}@example.com")
        subscriptions.subscription_set(customer=tenant, plan_key="bench", status="active")
        now = timezone.now()
        window = entitlement_for(customer_id=tenant.pk, fresh=True).window(now)
        began = time.monotonic()
        with transaction.atomic():
            # Events spread evenly from the window's start to now, round-robin over the
            # primitives; then each counter set to its events' sum.
            harness.sql(
                f"INSERT INTO {events} (customer_id, primitive, quantity, occurred_at,"
                " recorded_at, window_start, idempotency_key)"
                " SELECT %s, (%s::text[])[1 + g %% %s], 1,"
                " %s::timestamptz + (%s::timestamptz - %s::timestamptz) * (g::float8 / %s),"
                " %s, %s, '' FROM generate_series(0, %s - 1) AS g",
                [
                    tenant.pk,
                    PRIMITIVES,
                    len(PRIMITIVES),
                    window.start,
                    now,
                    window.start,
                    count,
                    now,
                    window.start,
                    count,
                ],
            )
            harness.sql(
                f"INSERT INTO {counters} (customer_id, primitive, window_start, window_end, used)"
                f" SELECT customer_id, primitive, window_start, %s, SUM(quantity) FROM {events}"
                " WHERE customer_id = %s AND window_start = %s GROUP BY customer_id, primitive,"
                " window_start",
                [window.end, tenant.pk, window.start],
            )
        in_window = harness.sql(
            f"SELECT COUNT(*), SUM(quantity) FROM {events} WHERE customer_id = %s"
            " AND occurred_at >= %s AND occurred_at < %s",
            [tenant.pk, window.start, window.end],
        )[0]
        counted = harness.sql(
            f"SELECT SUM(used) FROM {counters} WHERE customer_id = %s AND window_start = %s",
            [tenant.pk, window.start],
        )[0][0]
        assert in_window == (count, count) and counted == count, (in_window, counted)
        print(
            f"  {name}: tenant {tenant.pk}, {count:,} events in window "
            f"{window.start:%Y-%m-%d}..{window.end:%Y-%m-%d}, counters sum {counted:,} "
            f"({time.monotonic() - began:.1f} s)",
            flush=True,
        )
        tenants[name] = tenant.pk
    harness.sql(f"VACUUM ANALYZE {events}")
    harness.sql(f"VACUUM ANALYZE {counters}")
    return operator_key, tenants


def requests(spec: dict[str, Any]) -> tuple[harness.RequestFor, harness.Inspect]:
    """Load side: GET the tenant's rollup; count each response's X-Bench-Queries."""
    request = harness.Request(
        "GET",
        f"/v1/users/{spec['tenant']}/billing/usage",
        None,
        {"Authorization": f"Bearer {spec['key']}"},
    )
    expected = spec["expected"]

    def inspect(response: Any, body: bytes) -> dict[str, int]:
        counts = {f"queries={response.getheader('X-Bench-Queries')}": 1}
        if response.status == 200 and sum(json.loads(body)["usage"].values()) != expected:
            counts["wrong usage"] = 1
        return counts

    return (lambda i, n: request), inspect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        harness.load_child(args.load, requests)
        return

    harness.start(count_queries=True)
    sizes = {"small": args.small, "large": args.large}
    print("Writing events in SQL...", flush=True)
    key, tenants = prepare_database(sizes)
    port = harness.start_gunicorn()
    print(
        f"gunicorn -w 2 on port {port}; {args.connections} connection(s), "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s per tenant, {args.rounds} rounds",
        flush=True,
    )

    names = list(sizes)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for round_number in range(args.rounds):
        order = names if round_number % 2 == 0 else names[::-1]
        for name in order:
            result = harness.spawn_load(
                __file__,
                {
                    "port": port,
                    "tenant": tenants[name],
                    "key": key,
                    "expected": sizes[name],
                    "seconds": args.seconds,
                    "warmup": args.warmup,
                    "connections": args.connections,
                },
            )
            runs[name].append(result)
            latency = result["latency_ms"]
            print(
                f"  round {round_number + 1} {name:5s} p50 {latency['p50']:6.2f} ms  "
                f"p95 {latency['p95']:6.2f} ms  {result['rps']:7.1f} req/s "
                f"({result['ok']} ok, {result['failed']} failed)",
                flush=True,
            )

    print("\nRollup: GET /v1/users/<id>/billing/usage (median of round medians)")
    p50: dict[str, float] = {}
    queries: dict[str, set[str]] = {}
    wrong = 0
    for name in names:
        p50[name] = statistics.median(r["latency_ms"]["p50"] for r in runs[name])
        p95 = max(r["latency_ms"]["p95"] for r in runs[name])
        counts: dict[str, int] = {}
        for run in runs[name]:
            for label, n in run["counts"].items():
                counts[label] = counts.get(label, 0) + n
        wrong += counts.pop("wrong usage", 0)
        queries[name] = {label.partition("=")[2] for label in counts}
        per_request = ", ".join(f"{q} ({counts['queries=' + q]} requests)" for q in queries[name])
        print(
            f"  {name:5s} {sizes[name]:>9,} events  p50 {p50[name]:6.2f} ms  "
            f"worst p95 {p95:6.2f} ms  queries/request: {per_request}"
        )
    ratio = p50["large"] / p50["small"]
    same_queries = len(queries["small"]) == 1 and queries["small"] == queries["large"]
    failed = sum(r["failed"] for rs in runs.values() for r in rs)
    print(f"  large / small p50 = {ratio:.2f}")
    print(f"  same number of queries for both sizes: {'yes' if same_queries else 'NO'}")
    if wrong or failed:
        print(f"  {failed} failed requests, {wrong} answers with the wrong usage sum")
    met = ratio <= TARGET and same_queries and not wrong and not failed
    print(
        f"  target large <= {TARGET} x small, same queries: {harness.verdict(met)}",
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
