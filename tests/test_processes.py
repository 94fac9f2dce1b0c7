"""Changes bind at once across processes, with no shared cache: two worker processes (each
its own connection, LocMemCache and entitlement LRU, as two gunicorn workers are) call a
metered view while the test process changes the customer's plan, lowers a quota and
cancels. No call that starts after a change has committed is decided on the entitlement
from before it. A kit's per-minute rate is exact across the processes as well."""

import multiprocessing
import time

import pytest
from django.db import connection

from billing_app.catalog import services as catalog
from billing_app.customers import services as customers
from billing_app.models import RateCounter, UsageCounter, UsageEvent
from billing_app.subscriptions import services as subscriptions
from billing_app.testutils import subscribe

from .factories import CustomerFactory
from .processes import feature_calls, metered_calls, rate_calls

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

WORKERS = 2


def run_workers(token, seconds, target=metered_calls):
    """Start the workers; answers a function that stops them and returns every call."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    stop = context.Event()
    stop_at = time.time() + seconds
    name = connection.settings_dict["NAME"]
    workers = [
        context.Process(target=target, args=(name, token, stop, stop_at, results))
        for _ in range(WORKERS)
    ]
    for worker in workers:
        worker.start()

    def collect():
        time.sleep(1)  # calls after the last change
        stop.set()
        calls = [call for _ in workers for call in results.get(timeout=seconds + 60)[1]]
        for worker in workers:
            worker.join(timeout=30)
            assert worker.exitcode == 0
        return calls

    collect.queue = results  # type: ignore[attr-defined]
    return collect


def wait_until_calls_succeed(customer, count=20, timeout=90):
    """Every worker has cached the entitlement once a few calls have gone through."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        counter = UsageCounter.objects.filter(customer=customer).first()
        if counter is not None and counter.used >= count:
            return
        time.sleep(0.05)
    raise AssertionError("the workers made no calls")


def test_no_call_is_admitted_on_an_entitlement_older_than_a_committed_change():
    customer = CustomerFactory()
    subscribe(customer, quotas={"seo": 100_000}, plan_key="big")
    catalog.plan_upsert(key="small", name="Small", quotas={"seo": 80_000})
    token = customers.tenant_token_issue(customer=customer)[1]
    collect = run_workers(token, seconds=180)
    wait_until_calls_succeed(customer)

    subscriptions.subscription_set(customer=customer, plan_key="small")
    changed_plan = time.time()
    time.sleep(0.5)

    used = UsageCounter.objects.get(customer=customer).used
    lowered_to = used + 40
    lowering = time.time()
    catalog.plan_upsert(key="small", name="Small", quotas={"seo": lowered_to})
    lowered = time.time()
    time.sleep(0.5)

    canceling = time.time()
    subscriptions.subscription_set(customer=customer, plan_key="small", status="canceled")
    canceled = time.time()
    calls = collect()

    # Each change is bracketed: a call that started after one committed and ended before
    # the next began must have been decided on exactly that change's entitlement. (A call
    # still running when the next change commits may be decided on that one: newer, never
    # older.)
    after_plan_change = [
        c for c in calls if changed_plan < c[0] and c[1] < lowering and c[2] == 200
    ]
    after_lowering = [c for c in calls if lowered < c[0] and c[1] < canceling]
    after_cancel = [c for c in calls if c[0] > canceled]
    assert after_plan_change, "no call ran between the plan change and the lowering"
    assert {limit for *_, limit in after_plan_change} == {80_000}
    assert {limit for _, _, status, limit in after_lowering if status == 200} <= {lowered_to}
    assert after_cancel, "no call ran after the cancellation"
    assert {status for _, _, status, _ in after_cancel} == {402}
    # The lowered quota was never exceeded, whatever the workers had cached.
    assert UsageCounter.objects.get(customer=customer).used <= lowered_to


def test_a_feature_withdrawn_is_refused_at_once_in_every_process():
    """Each worker holds the entitlement granting sso in its LRU when the plan loses it,
    and nothing metered refreshes it: every request that starts after the change committed
    is refused all the same, and once the feature is back, granted again."""
    customer = CustomerFactory()
    subscribe(customer, features=["sso"], plan_key="team")
    token = customers.tenant_token_issue(customer=customer)[1]
    collect = run_workers(token, seconds=20, target=feature_calls)
    for _ in range(WORKERS):
        assert collect.queue.get(timeout=60)[0] == "ready"

    withdrawing = time.time()
    catalog.plan_upsert(key="team", name="Team", features=[])
    withdrawn = time.time()
    time.sleep(1.5)
    granting = time.time()
    catalog.plan_upsert(key="team", name="Team", features=["sso"])
    granted = time.time()
    calls = collect()

    before = [status for _, finished, status in calls if finished < withdrawing]
    between = [status for started, _, status in calls if withdrawn < started < granting]
    after = [status for started, _, status in calls if started > granted]
    assert before and set(before) == {200}
    assert between and set(between) == {403}
    assert after and set(after) == {200}


def test_a_kit_rate_is_exact_across_processes():
    """Two processes call at once, within one clock minute, a view the kit allows 50
    times a minute: exactly 50 calls are admitted between them, the rest refused as
    too_many_requests, and the counters agree."""
    rate, seconds = 50, 4
    customer = CustomerFactory()
    catalog.account_kit_upsert(key="kit_rate", name="Rate", primitives={"seo": rate})
    catalog.plan_upsert(key="rated", name="Rated", account_kit_id="kit_rate", quotas={})
    subscriptions.subscription_set(customer=customer, plan_key="rated")
    token = customers.tenant_token_issue(customer=customer)[1]
    context = multiprocessing.get_context("spawn")
    results, go = context.Queue(), context.Event()
    name = connection.settings_dict["NAME"]
    workers = [
        context.Process(target=rate_calls, args=(name, token, go, seconds, results))
        for _ in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        assert results.get(timeout=120)[0] == "ready"

    # Every call inside one clock minute: start early in a minute, never close to its end.
    if time.time() % 60 > 60 - seconds - 5:
        time.sleep(60 - time.time() % 60 + 0.5)
    minute = time.time() // 60
    go.set()
    by_worker = [results.get(timeout=seconds + 60)[1] for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0

    calls = [call for worker_calls in by_worker for call in worker_calls]
    assert {started // 60 for started, *_ in calls} == {minute}
    assert {finished // 60 for _, finished, *_ in calls} == {minute}
    admitted = [call for call in calls if call[2] == 200]
    refused = [call for call in calls if call[2] != 200]
    assert len(admitted) == rate
    assert refused and {(status, error) for *_, status, error in refused} == {
        (429, "too_many_requests")
    }
    # A race between processes: each had calls admitted, and was refused after.
    for worker_calls in by_worker:
        assert {status for _, _, status, _ in worker_calls} == {200, 429}
    assert UsageEvent.objects.filter(customer=customer).count() == rate
    assert RateCounter.objects.get(customer=customer).calls == rate
