"""Benchmark 4 of issue 3: one hot tenant against load spread over many tenants.

Starts a throwaway PostgreSQL, migrates, creates a hot tenant, 1,000 other tenants (all
on a plan with a huge seo quota) and a capped tenant (seo quota ``--quota``), each with a
tenant token, and serves with gunicorn (2 workers). From a separate process, 32 clients
call the metered demo view ``POST /demo/seo/``:

    hot     every client with the hot tenant's token: one counter row, one primitive
    spread  client i's request n with tenant (32 n + i) mod 1,000
    capped  every client with the capped tenant's token until --oversubscribe x quota
            calls have been made in all

and prints requests/s of each. Before the rounds, every spread tenant is called
``--warm-passes`` times so that both gunicorn workers have most entitlements cached (a
worker caches a tenant's entitlement on the first call it serves). After each run it
checks the database: the counters equal the number of successful calls and the sum of
the events, and the capped tenant got exactly ``quota`` successes (the rest refused with
429).

Target: the hot case stays exact (hot and capped checks); hot and spread are reported.

Run from the repository root:  .venv/bin/python benchmarks/hot_tenant.py
Options: --seconds 10 --warmup 2 --connections 32 --tenants 1000 --rounds 2
         --quota 500 --oversubscribe 2 --warm-passes 2
"""

import argparse
import math
import sys
import time
from typing import Any

import harness

PATH = "/demo/seo/"
PRIMITIVE = "seo"


def prepare_database(tenants: int, quota: int) -> dict[str, Any]:
    """Tokens of the hot tenant, the spread tenants and the capped tenant, and their ids."""
    from billing_app.catalog import services as catalog
    from billing_app.customers import services as customers
    from billing_app.subscriptions import services as subscriptions

    catalog.plan_upsert(key="bench", name="Benchmark", quotas={PRIMITIVE: 10**15})
    catalog.plan_upsert(key="capped", name="Capped", quotas={PRIMITIVE: quota})

    def tenant(email: str, plan: str) -> tuple[int, str]:
        user = customers.customer_create(email=email)
        subscriptions.subscription_set(customer=user, plan_key=plan, status="active")
        _, token = customers.tenant_token_issue(customer=user, name="bench")
        return user.pk, token

    began = time.monotonic()
    hot_id, hot_token = tenant("hot@example.com", "bench")
    capped_id, capped_token = tenant("capped@example.com", "capped")
    spread = [tenant(f"tenant{n}@example.com", "bench") for n in range(tenants)]
    print(f"  {tenants + 2} tenants created ({time.monotonic() - began:.1f} s)", flush=True)
    return {
        "hot": ([hot_id], [hot_token]),
        "capped": ([capped_id], [capped_token]),
        "spread": ([pk for pk, _ in spread], [token for _, token in spread]),
    }


def requests(spec: dict[str, Any]) -> tuple[harness.RequestFor, None]:
    """Load side: request n of connection i uses token (n x connections + i) mod count."""
    built = [
        harness.Request(
            "POST",
            PATH,
            b"{}",
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        for token in spec["tokens"]
    ]
    connections = spec["connections"]
    return (lambda i, n: built[(n * connections + i) % len(built)]), None


def database_state(customer_ids: list[int]) -> dict[str, int]:
    """Sums over ``customer_ids``: counters, events, and counters that differ from their
    events' sum."""
    from billing_app.models import UsageCounter, UsageEvent

    events, counters = UsageEvent._meta.db_table, UsageCounter._meta.db_table
    used = harness.sql(
        f"SELECT COALESCE(SUM(used), 0) FROM {counters} WHERE customer_id = ANY(%s)", [customer_ids]
    )[0][0]
    quantity = harness.sql(
        f"SELECT COALESCE(SUM(quantity), 0) FROM {events} WHERE customer_id = ANY(%s)",
        [customer_ids],
    )[0][0]
    mismatched = harness.sql(
        f"SELECT COUNT(*) FROM {counters} c FULL JOIN (SELECT customer_id, primitive,"
        f" window_start, SUM(quantity) AS total FROM {events} WHERE customer_id = ANY(%s)"
        " GROUP BY customer_id, primitive, window_start) e"
        " ON (c.customer_id, c.primitive, c.window_start)"
        " = (e.customer_id, e.primitive, e.window_start)"
        " WHERE (c.customer_id = ANY(%s) OR c.customer_id IS NULL)"
        " AND c.used IS DISTINCT FROM e.total",
        [customer_ids, customer_ids],
    )[0][0]
    return {"used": int(used), "events": int(quantity), "mismatched": int(mismatched)}


def successes(result: dict[str, Any]) -> int:
    return sum(n for code, n in result["status_total"].items() if code.startswith("2"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quota", type=int, default=500)
    parser.add_argument("--oversubscribe", type=float, default=2)
    parser.add_argument("--warm-passes", type=float, default=2)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        harness.load_child(args.load, requests)
        return

    harness.start()
    print("Creating tenants...", flush=True)
    groups = prepare_database(args.tenants, args.quota)
    port = harness.start_gunicorn()
    print(
        f"gunicorn -w 2 on port {port}; {args.connections} clients, "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s per case, {args.rounds} rounds",
        flush=True,
    )

    cases = ["hot", "spread"]
    rps: dict[str, list[float]] = {case: [] for case in cases}
    succeeded = dict.fromkeys(cases, 0)
    if args.warm_passes > 0:
        # Each worker caches an entitlement on a tenant's first call it serves: call every
        # spread tenant a few times first, so both cases are measured with warm caches.
        warm = harness.spawn_load(
            __file__,
            {
                "port": port,
                "tokens": groups["spread"][1],
                "connections": args.connections,
                "per_connection": math.ceil(args.warm_passes * args.tenants / args.connections),
            },
        )
        succeeded["spread"] += successes(warm)
        print(
            f"  warm-up: {sum(warm['status_total'].values())} calls over the spread tenants "
            f"({warm['seconds']:.1f} s, statuses {warm['status_total']})",
            flush=True,
        )
    exact = dict.fromkeys([*cases, "capped"], True)
    for round_number in range(args.rounds):
        for case in cases if round_number % 2 == 0 else cases[::-1]:
            ids, tokens = groups[case]
            result = harness.spawn_load(
                __file__,
                {
                    "port": port,
                    "tokens": tokens,
                    "connections": args.connections,
                    "seconds": args.seconds,
                    "warmup": args.warmup,
                },
            )
            rps[case].append(result["rps"])
            succeeded[case] += successes(result)
            state = database_state(ids)
            ok = (
                state["used"] == succeeded[case] == state["events"]
                and not state["mismatched"]
                and result["status_total"].keys() <= {"200"}
            )
            exact[case] = exact[case] and ok
            latency = result["latency_ms"]
            print(
                f"  round {round_number + 1} {case:6s} {result['rps']:7.1f} req/s  "
                f"p50 {latency['p50']:6.1f} ms  p95 {latency['p95']:6.1f} ms  "
                f"statuses {result['status']}",
                flush=True,
            )
            print(
                f"           successes so far {succeeded[case]}, counters {state['used']}, "
                f"events {state['events']}, counters off their events "
                f"{state['mismatched']}: {'exact' if ok else 'NOT EXACT'}",
                flush=True,
            )

    ids, tokens = groups["capped"]
    per_connection = math.ceil(args.oversubscribe * args.quota / args.connections)
    capped = harness.spawn_load(
        __file__,
        {
            "port": port,
            "tokens": tokens,
            "connections": args.connections,
            "per_connection": per_connection,
        },
    )
    state = database_state(ids)
    statuses = capped["status_total"]
    allowed = successes(capped)
    exact["capped"] = (
        allowed == args.quota == state["used"] == state["events"]
        and not state["mismatched"]
        and statuses.keys() <= {"200", "429"}
    )
    print(
        f"  capped {per_connection * args.connections} calls for a quota of {args.quota}: "
        f"{sum(statuses.values()) / capped['seconds']:.1f} req/s, statuses {statuses}; counters "
        f"{state['used']}, events {state['events']}: "
        f"{'exact' if exact['capped'] else 'NOT EXACT'}",
        flush=True,
    )

    mean = {case: sum(values) / len(values) for case, values in rps.items()}
    print(f"\nHot tenant: {args.connections} clients on POST {PATH} (mean of rounds)")
    print(f"  hot     {mean['hot']:7.1f} req/s   one tenant, one primitive")
    print(f"  spread  {mean['spread']:7.1f} req/s   over {args.tenants} tenants")
    print(f"  hot / spread = {mean['hot'] / mean['spread']:.2f}")
    for case in ["hot", "spread", "capped"]:
        print(f"  {case:6s} exact: {'yes' if exact[case] else 'NO'}")
    met = exact["hot"] and exact["capped"] and exact["spread"]
    print(f"  target the hot case stays exact: {harness.verdict(met)}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
