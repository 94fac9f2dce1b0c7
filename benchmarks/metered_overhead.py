"""Benchmark 1 of issue 3: metered overhead.

Starts a throwaway PostgreSQL, migrates, creates a tenant with a huge seo quota, serves
project + benchmark views with gunicorn (2 workers), then loads three views from a
separate process and prints requests/s:

    unmetered  POST /bench/unmetered/  demo view, tenant token checked, no metering
    metered    POST /demo/seo/         demo view with @metered + QuotaMiddleware
    floor      POST /bench/floor/      token check + one raw SQL statement (counter + event)

Run from the repository root:  .venv/bin/python benchmarks/metered_overhead.py
Options: --seconds 10 --warmup 2 --connections 8 --rounds 2
"""

import argparse
import sys
from typing import Any

import harness

VIEWS = {
    "unmetered": "/bench/unmetered/",
    "metered": "/demo/seo/",
    "floor": "/bench/floor/",
}
TARGET = 0.8  # metered >= TARGET x floor


def prepare_database() -> str:
    """A tenant on a plan with huge quotas; returns the tenant token."""
    from billing_app.catalog import services as catalog
    from billing_app.customers import services as customers
    from billing_app.subscriptions import services as subscriptions

    huge = 10**15
    catalog.plan_upsert(key="bench", name="Benchmark", quotas={"seo": huge, "aeo": huge})
    tenant = customers.customer_create(email="bench@example.com")
    subscriptions.subscription_set(customer=tenant, plan_key="bench", status="active")
    _, key = customers.tenant_token_issue(customer=tenant, name="bench")
    return key


def requests(spec: dict[str, Any]) -> tuple[harness.RequestFor, None]:
    """Load side: POST an empty JSON body to the view with the tenant token."""
    request = harness.Request(
        "POST",
        spec["path"],
        b"{}",
        {"Authorization": f"Bearer {spec['token']}", "Content-Type": "application/json"},
    )
    return (lambda i, n: request), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        harness.load_child(args.load, requests)
        return

    harness.start()
    token = prepare_database()
    port = harness.start_gunicorn()
    print(
        f"gunicorn -w 2 on port {port}; {args.connections} connections, "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s per view, {args.rounds} rounds",
        flush=True,
    )

    results: dict[str, list[float]] = {name: [] for name in VIEWS}
    names = list(VIEWS)
    for round_number in range(args.rounds):
        order = names if round_number % 2 == 0 else names[::-1]
        for name in order:
            result = harness.spawn_load(
                __file__,
                {
                    "port": port,
                    "path": VIEWS[name],
                    "token": token,
                    "seconds": args.seconds,
                    "warmup": args.warmup,
                    "connections": args.connections,
                },
            )
            results[name].append(result["rps"])
            print(
                f"  round {round_number + 1} {name:9s} {result['rps']:8.1f} req/s "
                f"({result['ok']} ok, {result['failed']} failed)",
                flush=True,
            )

    rps = {name: sum(values) / len(values) for name, values in results.items()}
    print("\nMetered overhead (mean of rounds)")
    for name in names:
        print(f"  {name:9s} {rps[name]:8.1f} req/s   {VIEWS[name]}")
    vs_unmetered = rps["metered"] / rps["unmetered"]
    vs_floor = rps["metered"] / rps["floor"]
    print(f"  metered / unmetered = {vs_unmetered:.3f}")
    print(f"  metered / floor     = {vs_floor:.3f}")
    print(f"  target metered >= {TARGET} x floor: {harness.verdict(vs_floor >= TARGET)}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
