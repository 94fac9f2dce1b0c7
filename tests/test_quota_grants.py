"""One-off quota increases: an operator raises a customer's quota for the current window,
recorded with who and why; it binds at once, ends with the window, and the record of the
period counts overage past the raised quota."""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing_app.customers.services import quota_grant
from billing_app.cycles.services import records_close
from billing_app.exceptions import InvalidInput, QuotaExceeded
from billing_app.metering.selectors import usage_rollup
from billing_app.metering.services import usage_reserve
from billing_app.models import QuotaGrant
from billing_app.testutils import subscribe

pytestmark = pytest.mark.django_db


def calls(customer, count, **kwargs):
    admitted = 0
    for _ in range(count):
        try:
            usage_reserve(customer_id=customer.pk, primitive="seo", **kwargs)
            admitted += 1
        except QuotaExceeded:
            pass
    return admitted


def test_a_grant_raises_the_quota_of_the_current_window_at_once(customer, user):
    subscribe(customer, quotas={"seo": 3})
    assert calls(customer, 5) == 3  # the entitlement is cached now

    grant = quota_grant(
        customer=customer, primitive="seo", amount=2, reason="launch week", granted_by=user
    )

    assert calls(customer, 5) == 2
    assert usage_rollup(customer_id=customer.pk).quotas == {"seo": 5}
    assert (grant.granted_by, grant.reason) == (user, "launch week")
    window = usage_rollup(customer_id=customer.pk).window
    assert (grant.window_start, grant.window_end) == (window.start, window.end)


def test_a_grant_ends_with_its_window(customer):
    start = timezone.now() - timedelta(days=10)
    subscribe(customer, quotas={"seo": 3}, started_at=start, period="week")
    quota_grant(customer=customer, primitive="seo", amount=10, reason="incident")

    next_week = timezone.now() + timedelta(days=7)
    assert calls(customer, 20, at=next_week) == 3


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"primitive": "Not A Slug", "amount": 1, "reason": "x"}, "primitive"),
        ({"primitive": "aeo", "amount": 1, "reason": "x"}, "primitive"),  # no quota: unlimited
        ({"primitive": "seo", "amount": 0, "reason": "x"}, "amount"),
        ({"primitive": "seo", "amount": True, "reason": "x"}, "amount"),
        ({"primitive": "seo", "amount": 1, "reason": "  "}, "reason"),
    ],
)
def test_a_bad_grant_names_its_field_and_changes_nothing(customer, fields, field):
    subscribe(customer, quotas={"seo": 3})
    with pytest.raises(InvalidInput) as refused:
        quota_grant(customer=customer, **fields)
    assert field in refused.value.fields
    assert not QuotaGrant.objects.exists()


def test_the_record_counts_overage_past_the_raised_quota(customer):
    start = timezone.now() - timedelta(days=3)
    subscribe(
        customer,
        quotas={"seo": 3},
        started_at=start,
        current_period_start=start,
        current_period_end=timezone.now() + timedelta(seconds=5),
    )
    quota_grant(customer=customer, primitive="seo", amount=2, reason="x")
    calls(customer, 6, enforce=False)

    (record,) = records_close(at=timezone.now() + timedelta(seconds=10))

    assert record.usage["seo"] == {"used": 6, "quota": 3, "granted": 2, "overage": 1}
