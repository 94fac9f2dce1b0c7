"""Benchmark 3 of issue 3: batch ingestion throughput.

Starts a throwaway PostgreSQL, migrates, creates tenants on a plan and an operator key,
serves with gunicorn (2 workers) and, from a separate process, POSTs batches of events to
``/v1/usage/events`` (``Authorization: Bearer sk_...``). Every event has its own
idempotency key, a quantity of 1 to 5, a timestamp, and one of three primitives; the
events of a batch are spread over the tenants. Prints events/s.

Then it checks the database (one event per created result; every counter equals the sum
of its events) and replays the batches already sent, which must all come back
"duplicate" and change nothing.

Target: >= 15,000 events/s.

Run from the repository root:  .venv/bin/python benchmarks/ingest.py
Options: --seconds 10 --warmup 2 --connections 4 --batch 1000 --tenants 100
         --replay-seconds 5
"""

import argparse
import itertools
import json
import sys
from datetime import timedelta
from typing import Any

import harness

TARGET = 15_000  # events/s
PRIMITIVES = ["seo", "aeo", "email.send"]
PATH = "/v1/usage/events"


def prepare_database(tenants: int) -> tuple[str, list[int]]:
    """An operator key and ``tenants`` tenants on a plan with huge quotas."""
    from billing_app.catalog import services as catalog
    from billing_app.customers import services as customers
    from billing_app.subscriptions import services as subscriptions

    huge = 10**15
    catalog.plan_upsert(key="bench", name="Benchmark", quotas=dict.fromkeys(PRIMITIVES, huge))
    _, key = customers.operator_key_create(name="bench")
    ids = []
    for number in range(tenants):
        tenant = customers.customer_create(email=f"tenant{number}@example.com")
        subscriptions.subscription_set(customer=tenant, plan_key="bench", status="active")
        ids.append(tenant.pk)
    return key, ids


def batch_body(number: int, *, size: int, users: list[int], timestamp: str) -> bytes:
    """Batch ``number``, the same bytes every time it is built (so a replay is exact)."""
    events = []
    for j in range(size):
        sequence = number * size + j
        events.append(
            f'{{"userId":{users[sequence % len(users)]},'
            f'"primitive":"{PRIMITIVES[sequence % len(PRIMITIVES)]}",'
            f'"quantity":{sequence % 5 + 1},"idempotencyKey":"bench-{sequence}",'
            f'"timestamp":"{timestamp}"}}'
        )
    return ('{"events":[' + ",".join(events) + "]}").encode()


def requests(spec: dict[str, Any]) -> tuple[harness.RequestFor, harness.Inspect]:
    """Load side. Fresh mode: each request is the next batch number. Replay mode
    (``replay`` = number of batches sent before): batches 0 .. replay-1, cycling."""
    headers = {"Authorization": f"Bearer {spec['key']}", "Content-Type": "application/json"}
    fresh = itertools.count()
    replay, connections = spec.get("replay"), spec["connections"]

    def request_for(i: int, n: int) -> harness.Request:
        number = (n * connections + i) % replay if replay else next(fresh)
        body = batch_body(
            number, size=spec["batch"], users=spec["users"], timestamp=spec["timestamp"]
        )
        return harness.Request("POST", PATH, body, headers)

    def inspect(response: Any, body: bytes) -> dict[str, int]:
        if response.status != 200:
            return {}
        counts: dict[str, int] = {}
        for result in json.loads(body)["results"]:
            counts[result["status"]] = counts.get(result["status"], 0) + 1
        return counts

    return request_for, inspect


def database_state() -> dict[str, int]:
    from billing_app.models import UsageCounter, UsageEvent

    events, counters = UsageEvent._meta.db_table, UsageCounter._meta.db_table
    count, quantity = harness.sql(f"SELECT COUNT(*), COALESCE(SUM(quantity), 0) FROM {events}")[0]
    used = harness.sql(f"SELECT COALESCE(SUM(used), 0) FROM {counters}")[0][0]
    mismatched = harness.sql(
        f"SELECT COUNT(*) FROM {counters} c FULL JOIN (SELECT customer_id, primitive,"
        f" window_start, SUM(quantity) AS total FROM {events}"
        " GROUP BY customer_id, primitive, window_start) e"
        " ON (c.customer_id, c.primitive, c.window_start)"
        " = (e.customer_id, e.primitive, e.window_start)"
        " WHERE c.used IS DISTINCT FROM e.total"
    )[0][0]
    return {
        "events": int(count),
        "quantity": int(quantity),
        "used": int(used),
        "mismatched": int(mismatched),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--replay-seconds", type=float, default=5)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        harness.load_child(args.load, requests)
        return

    harness.start()
    from django.utils import timezone

    key, users = prepare_database(args.tenants)
    port = harness.start_gunicorn()
    timestamp = (timezone.now() - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    spec = {
        "port": port,
        "key": key,
        "users": users,
        "timestamp": timestamp,
        "batch": args.batch,
        "connections": args.connections,
    }
    print(
        f"gunicorn -w 2 on port {port}; {args.connections} connections, batches of "
        f"{args.batch} events over {args.tenants} tenants, "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s",
        flush=True,
    )

    fresh = harness.spawn_load(__file__, {**spec, "seconds": args.seconds, "warmup": args.warmup})
    rate = fresh["ok"] * args.batch / fresh["seconds"]
    batches = fresh["status_total"].get("200", 0)
    after_fresh = database_state()
    latency = fresh["latency_ms"]
    print(
        f"  fresh   {rate:9,.0f} events/s  {fresh['rps']:6.1f} batches/s  "
        f"p50 {latency['p50']:6.1f} ms  p95 {latency['p95']:6.1f} ms  "
        f"({fresh['ok']} ok, {fresh['failed']} failed; results {fresh['counts']})",
        flush=True,
    )
    fresh_exact = (
        not fresh["failed"]
        and fresh["status_total"].keys() == {"200"}
        and fresh["counts"] == {"created": batches * args.batch}
        and after_fresh["events"] == batches * args.batch
        and after_fresh["used"] == after_fresh["quantity"]
        and after_fresh["mismatched"] == 0
    )
    print(f"  database after fresh: {after_fresh}", flush=True)

    replay_exact = True
    if args.replay_seconds > 0 and batches:
        replay = harness.spawn_load(
            __file__, {**spec, "seconds": args.replay_seconds, "replay": batches}
        )
        replay_rate = replay["ok"] * args.batch / replay["seconds"]
        after_replay = database_state()
        print(
            f"  replay  {replay_rate:9,.0f} events/s  {replay['rps']:6.1f} batches/s  "
            f"({replay['ok']} ok, {replay['failed']} failed; results {replay['counts']})"
        )
        print(f"  database after replay: {after_replay}")
        replay_exact = (
            not replay["failed"]
            and replay["counts"].keys() <= {"duplicate"}
            and after_replay == after_fresh
        )

    print("\nIngestion: POST /v1/usage/events")
    print(f"  {rate:,.0f} events/s ({args.batch} events per request, idempotency keys)")
    print(
        f"  every event recorded once, counters == sum of events: {'yes' if fresh_exact else 'NO'}"
    )
    if args.replay_seconds > 0:
        print(f"  replay answers duplicate and changes nothing: {'yes' if replay_exact else 'NO'}")
    met = rate >= TARGET and fresh_exact and replay_exact
    print(f"  target >= {TARGET:,} events/s: {harness.verdict(met)}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
