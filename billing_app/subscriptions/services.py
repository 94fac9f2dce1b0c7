"""The only writer of subscriptions, billing periods and seats.

:func:`subscription_set` is the one way a subscription changes, whoever asks: the operator
API, the admin, a Stripe webhook. In its transaction it also keeps the billing periods true
(a row per period, Stripe's period winning over a predicted one), raises the customer's
entitlement version and, by default, assigns the plan's kit.

:func:`periods_advance` is the scheduler's half: it opens the next period of subscriptions
whose period has run out (predicted from the plan's billing cadence until Stripe says
otherwise) and ends operator-managed subscriptions that were to cancel at period end.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from ..catalog.services import MAX_TRIAL_DAYS
from ..conf import billing_settings, customer_id_json, customer_model
from ..customers.selectors import is_active
from ..customers.services import kit_assign
from ..entitlements import entitlements_changed
from ..exceptions import Conflict, InvalidInput, NotFound
from ..models import (
    ENDED_STATUSES,
    BillingPeriod,
    Plan,
    Seat,
    Subscription,
    SubscriptionStatus,
    TrialEnd,
)
from ..outbox.services import webhook_add
from ..periods import cycle_window, parse_cadence
from ..validation import MAX_INT, UNSET, check_count, full_clean, invalid
from .selectors import trial_taken

logger = logging.getLogger(__name__)

Source = BillingPeriod.Source
EndReason = BillingPeriod.EndReason


@transaction.atomic
def subscription_set(
    *,
    customer: Any,
    plan_key: str,
    status: str = UNSET,
    stripe_customer_id: str = UNSET,
    stripe_subscription_id: str = UNSET,
    current_period_start: datetime | None = UNSET,
    current_period_end: datetime | None = UNSET,
    cancel_at_period_end: bool = UNSET,
    billing_cycle_anchor: datetime | None = UNSET,
    started_at: datetime | None = UNSET,
    ended_at: datetime | None = UNSET,
    seats: int = UNSET,
    trial_start: datetime | None = UNSET,
    trial_end: datetime | None = UNSET,
    assign_kit: bool = True,
    source: str = Source.OPERATOR,
    at: datetime | None = None,
) -> Subscription:
    """Put ``customer`` on ``plan_key``. Arguments left UNSET keep their current value.

    ``current_period_start``/``current_period_end`` state the subscription's current
    billing period (Stripe's, or the operator's); without them periods follow the plan's
    billing cadence from the anchor. A subscription that starts, or starts again after it
    ended, gets a new anchor (``billing_cycle_anchor``, else its start) and a new period.
    ``trial_start``/``trial_end`` state its trial (a trial end alone starts it now); once
    set they stay, as Stripe keeps them, and say the customer had its trial.
    """
    at = at or timezone.now()
    try:
        plan = Plan.objects.select_related("account_kit").get(key=plan_key)
    except Plan.DoesNotExist:
        raise invalid("plan_key", f"No plan with key {plan_key!r}.") from None
    if status is not UNSET and status not in SubscriptionStatus.values:
        raise invalid("status", f"{status!r} is not one of {', '.join(SubscriptionStatus.values)}.")
    if seats is not UNSET:
        check_count("seats", seats, what="seats", minimum=1, maximum=MAX_INT)
    given = _given_period(current_period_start, current_period_end)
    trial_start = None if trial_start is UNSET else trial_start
    trial_end = None if trial_end is UNSET else trial_end

    subscription = _locked_subscription(customer)
    new_status = (
        status
        if status is not UNSET
        else (subscription.status if subscription else SubscriptionStatus.ACTIVE)
    )
    starts = subscription is None or (subscription.ended and new_status not in ENDED_STATUSES)
    if subscription is not None:
        # Periods the scheduler has not opened yet, on the plan they ran on: a change
        # heard before it ran ends, or splits, the period it falls in.
        periods_ensure(subscription, at)
    if subscription is None:
        subscription = Subscription(customer=customer)
    ends = not subscription.ended and new_status in ENDED_STATUSES and not starts
    # First heard of once it had ended (Stripe's events out of order): it still had a
    # period, and it ended when Stripe says.
    born_ended = starts and new_status in ENDED_STATUSES
    plan_changed = not starts and subscription.plan_id != plan.pk

    if starts:
        start = started_at if isinstance(started_at, datetime) else ((given and given[0]) or at)
        subscription.started_at = start
        subscription.billing_cycle_anchor = (
            billing_cycle_anchor if isinstance(billing_cycle_anchor, datetime) else start
        )
        subscription.ended_at = None
        subscription.usage_reset_at = None
        subscription.cancel_at_period_end = False
        subscription.status_changed_at = at
    elif isinstance(billing_cycle_anchor, datetime):
        subscription.billing_cycle_anchor = billing_cycle_anchor
    if new_status != subscription.status:
        subscription.status_changed_at = at
    if ends or born_ended:
        subscription.ended_at = ended_at if ended_at not in (UNSET, None) else at
    if plan_changed and billing_settings.CHANGE_PLAN_USAGE == "reset":
        subscription.usage_reset_at = at
    subscription.plan = plan
    subscription.status = new_status
    if trial_end is not None:
        ongoing = subscription.trial_end is not None and subscription.trial_end > at
        begins = trial_start or (subscription.trial_start if ongoing else None) or at
        if trial_end <= begins:
            raise invalid("trial_end", "The trial must end after it starts.")
        subscription.trial_start, subscription.trial_end = begins, trial_end
    elif trial_start is not None:
        subscription.trial_start = trial_start
    for field, value in {
        "stripe_customer_id": stripe_customer_id,
        "stripe_subscription_id": stripe_subscription_id,
        "cancel_at_period_end": cancel_at_period_end,
        "seats": seats,
    }.items():
        if value is not UNSET:
            setattr(subscription, field, value if value is not None else "")
    full_clean(subscription)
    subscription.save()

    if ends:
        _periods_end(subscription, subscription.ended_at)
    elif born_ended:
        if given:
            _periods_match(subscription, *given, source=source, at=at)
        _periods_end(subscription, subscription.ended_at)
    elif not subscription.ended:
        if given:
            _periods_match(subscription, *given, source=source, at=at)
        if plan_changed:
            _periods_split(subscription, at)
        periods_ensure(subscription, at)

    entitlements_changed(customer_ids=[customer.pk])
    if assign_kit:
        kit_assign(customer=customer, kit=plan.account_kit)
    _announce(subscription)
    return subscription


def _locked_subscription(customer: Any) -> Subscription | None:
    """The customer's subscription, locked until the transaction ends. The customer's row
    is locked first: a first subscription has no row to lock yet, and two writers would
    both create it."""
    customers = customer_model()._default_manager.select_for_update()
    customers.filter(pk=customer.pk).values_list("pk", flat=True).first()
    return Subscription.objects.select_for_update().filter(customer=customer).first()


def _given_period(start: Any, end: Any) -> tuple[datetime, datetime] | None:
    start = None if start is UNSET else start
    end = None if end is UNSET else end
    if start is not None and end is not None and end <= start:
        raise invalid("current_period_end", "The period must end after it starts.")
    if end is None:
        return None
    return start, end  # type: ignore[return-value]


def _announce(subscription: Subscription) -> None:
    current = BillingPeriod.objects.filter(
        subscription=subscription, start__lte=timezone.now(), end__gt=timezone.now()
    ).first()
    webhook_add(
        "subscription.updated",
        key=f"billing-subscription-{subscription.pk}-{subscription.updated_at.timestamp()}",
        data={
            "customerId": customer_id_json(subscription.customer_id),
            "subscriptionId": subscription.pk,
            "plan": subscription.plan.key,
            "status": subscription.status,
            "seats": subscription.seats,
            "stripeSubscriptionId": subscription.stripe_subscription_id,
            "currentPeriodStart": current.start.isoformat() if current else None,
            "currentPeriodEnd": current.end.isoformat() if current else None,
            "cancelAtPeriodEnd": subscription.cancel_at_period_end,
        },
    )


# --- billing periods -------------------------------------------------------------------


def _open_rows(subscription: Subscription) -> Any:
    """The periods that may still change: those without a usage record."""
    return BillingPeriod.objects.filter(subscription=subscription, record__isnull=True)


def _recorded_until(subscription: Subscription) -> datetime | None:
    latest = (
        BillingPeriod.objects.filter(subscription=subscription, record__isnull=False)
        .order_by("-end")
        .first()
    )
    return latest.end if latest else None


def _periods_match(
    subscription: Subscription,
    start: datetime | None,
    end: datetime,
    *,
    source: str,
    at: datetime,
) -> None:
    """Make the periods that may change tile ``[start, end)`` as Stripe (or the operator)
    states it: predictions past it go, a period reaching into it is cut at its start, and
    the periods inside (a plan change splits one) stretch to its bounds. A recorded period
    never changes: the stated period then starts where the records end."""
    if start is None:  # only the end was given: the period containing now ends there
        row = _open_rows(subscription).filter(start__lte=at, end__gt=at).first()
        start = (
            row.start
            if row
            else max(
                subscription.started_at, _recorded_until(subscription) or subscription.started_at
            )
        )
    floor = _recorded_until(subscription)
    if floor is not None and floor > start:
        start = floor
    if start >= end:
        return
    inside = []
    for row in _open_rows(subscription).filter(end__gt=start).order_by("start"):
        if row.start >= end:
            row.delete()
        elif row.start < start:
            row.end = start
            row.save(update_fields=["end"])
        else:
            inside.append(row)
    if not inside:
        BillingPeriod.objects.create(
            customer_id=subscription.customer_id,
            subscription=subscription,
            plan=subscription.plan,
            start=start,
            end=end,
            source=source,
        )
        return
    # A boundary inside the stated period that no plan change made was predicted from
    # the cadence, and the stated period contradicts it: the rows either side are one.
    kept = [inside[0]]
    for row in inside[1:]:
        if kept[-1].end_reason == EndReason.PLAN_CHANGE or kept[-1].plan_id != row.plan_id:
            kept.append(row)
        else:
            kept[-1].end, kept[-1].end_reason = row.end, row.end_reason
            row.delete()
    kept[0].start = min(kept[0].start, start)
    kept[-1].end = end
    for row in kept:
        row.source = source
        row.save(update_fields=["start", "end", "source", "end_reason"])


def _periods_split(subscription: Subscription, at: datetime) -> None:
    """A plan change at ``at``: the period containing it ends there (recorded on the old
    plan when it closes) and the rest of it is a new period on the new plan."""
    row = _open_rows(subscription).filter(start__lte=at, end__gt=at).first()
    if row is None or row.plan_id == subscription.plan_id:
        return
    if row.start == at:
        row.plan = subscription.plan
        row.save(update_fields=["plan"])
        return
    rest_end = row.end
    row.end, row.end_reason = at, EndReason.PLAN_CHANGE
    row.save(update_fields=["end", "end_reason"])
    BillingPeriod.objects.create(
        customer_id=subscription.customer_id,
        subscription=subscription,
        plan=subscription.plan,
        start=at,
        end=rest_end,
        source=row.source,
    )


def _periods_end(subscription: Subscription, ended_at: datetime | None) -> None:
    """The subscription ended at ``ended_at``: the period containing it ends there, and
    periods predicted after it never happened."""
    assert ended_at is not None
    rows = _open_rows(subscription)
    rows.filter(start__gte=ended_at).delete()
    row = rows.filter(start__lt=ended_at, end__gte=ended_at).first()
    if row is not None:
        row.end, row.end_reason = ended_at, EndReason.CANCELLATION
        row.save(update_fields=["end", "end_reason"])


def periods_ensure(subscription: Subscription, at: datetime) -> None:
    """Periods up to ``at``: each following the last, predicted from the plan's billing
    cadence counted from the anchor (month ends clamped as Stripe clamps them). A
    scheduler that did not run for months gets one period per missed cycle."""
    if subscription.ended:
        return
    cadence = parse_cadence(subscription.plan.billing_cadence)
    # Periods of an earlier life (before a cancellation) end by the time this one started.
    latest = (
        BillingPeriod.objects.filter(subscription=subscription, end__gt=subscription.started_at)
        .order_by("-start")
        .first()
    )
    if latest is None:
        # The first period starts with the subscription (up to the anchor's next cycle).
        cycle = cycle_window(cadence, subscription.billing_cycle_anchor, subscription.started_at)
        latest = BillingPeriod.objects.create(
            customer_id=subscription.customer_id,
            subscription=subscription,
            plan=subscription.plan,
            start=subscription.started_at,
            end=cycle.end,
            source=Source.CADENCE,
        )
    while latest.end <= at:
        cycle = cycle_window(cadence, subscription.billing_cycle_anchor, latest.end)
        latest = BillingPeriod.objects.create(
            customer_id=subscription.customer_id,
            subscription=subscription,
            plan=subscription.plan,
            start=latest.end,
            end=cycle.end,
            source=Source.CADENCE,
        )


def periods_advance(*, at: datetime | None = None) -> list[tuple[Any, str]]:
    """For every live subscription whose period has run out: end it when it was to cancel
    at period end and no Stripe subscription drives it, else open the next period(s). And
    for every trial no Stripe subscription drives that has ended: what its plan says
    (convert, fall back, stop). Each subscription in its own transaction; one that fails
    is logged and answered, and the others go on. Answers the (subscription id, error) of
    failures."""
    at = at or timezone.now()
    failures = []
    ran_out = (
        Subscription.objects.exclude(status__in=ENDED_STATUSES)
        .exclude(periods__end__gt=at)
        .values_list("pk", flat=True)
    )
    trials_over = Subscription.objects.filter(
        status=SubscriptionStatus.TRIALING, trial_end__lte=at, stripe_subscription_id=""
    ).values_list("pk", flat=True)
    due = sorted({*ran_out, *trials_over})
    for pk in due:
        try:
            with transaction.atomic():
                _advance(pk, at)
        except Exception as error:  # one customer's failure never stops the others
            logger.exception("Could not advance the billing period of subscription %s", pk)
            failures.append((pk, f"{type(error).__name__}: {error}"))
    return failures


def _advance(pk: Any, at: datetime) -> None:
    subscription = (
        Subscription.objects.select_for_update().select_related("plan").filter(pk=pk).first()
    )
    if subscription is None or subscription.ended:
        return
    latest = BillingPeriod.objects.filter(subscription=subscription).order_by("-start").first()
    ran_out = latest is None or latest.end <= at
    here = not subscription.stripe_subscription_id
    if ran_out and subscription.cancel_at_period_end and here and latest:
        subscription_set(
            customer=subscription.customer,
            plan_key=subscription.plan.key,
            status=SubscriptionStatus.CANCELED,
            ended_at=latest.end,
            assign_kit=False,
            at=at,
        )
        return
    trial_end = subscription.trial_end
    if (
        here
        and subscription.status == SubscriptionStatus.TRIALING
        and trial_end
        and trial_end <= at
    ):
        subscription = _trial_over(subscription, trial_end)
        if subscription.ended:
            return
        ran_out = True
    if ran_out:
        periods_ensure(subscription, at)


def _trial_over(subscription: Subscription, trial_end: datetime) -> Subscription:
    """Carry out what the plan says at the end of a trial, as of its end: go on
    (``convert``), move to the fallback plan (``fallback``), or end (``stop``)."""
    plan = subscription.plan
    action = plan.trial_end_action
    target = None
    if action == TrialEnd.FALLBACK:
        target = plan.trial_fallback_plan or (
            Plan.objects.filter(key=billing_settings.FALLBACK_PLAN).first()
            if billing_settings.FALLBACK_PLAN
            else None
        )
        if target is None:
            logger.warning(
                "The trial of %s ended and plan %s has no plan to fall back to: it stops.",
                subscription.customer_id,
                plan.key,
            )
            action = TrialEnd.STOP
    if action == TrialEnd.STOP:
        return subscription_set(
            customer=subscription.customer,
            plan_key=plan.key,
            status=SubscriptionStatus.CANCELED,
            ended_at=trial_end,
            assign_kit=False,
            at=trial_end,
        )
    return subscription_set(
        customer=subscription.customer,
        plan_key=target.key if target is not None else plan.key,
        status=SubscriptionStatus.ACTIVE,
        assign_kit=target is not None,
        at=trial_end,
    )


@transaction.atomic
def trial_start(
    *,
    customer: Any,
    plan_key: str,
    trial_end: datetime | None = None,
    at: datetime | None = None,
) -> Subscription:
    """Start a trial of ``plan_key`` without Stripe and without a card: the subscription
    is ``trialing`` until ``trial_end`` (default: the plan's trial length from now), its
    first billing period runs to it and its billing cycle is anchored there, as Stripe
    anchors a trial's. The scheduler carries out the plan's ``trial_end_action`` then.
    One trial per customer, and per Stripe customer."""
    at = at or timezone.now()
    plan = Plan.objects.filter(key=plan_key, active=True).first()
    if plan is None:
        raise invalid("plan_key", f"No active plan with key {plan_key!r}.")
    if trial_end is None:
        if not plan.trial_days:
            raise invalid("plan_key", f"Plan {plan_key!r} has no trial: give the trial's end.")
        trial_end = at + timedelta(days=plan.trial_days)
    elif trial_end <= at:
        raise invalid("trial_end", "The trial must end in the future.")
    elif trial_end > at + timedelta(days=MAX_TRIAL_DAYS):
        raise invalid("trial_end", f"A trial lasts at most {MAX_TRIAL_DAYS} days.")
    current = _locked_subscription(customer)
    if current is not None and current.stripe_subscription_id and not current.ended:
        raise Conflict("Stripe drives this customer's subscription: trials start at Checkout.")
    if trial_taken(customer=customer):
        raise Conflict("This customer has had its trial.")
    return subscription_set(
        customer=customer,
        plan_key=plan.key,
        status=SubscriptionStatus.TRIALING,
        trial_start=at,
        trial_end=trial_end,
        current_period_start=at,
        current_period_end=trial_end,
        billing_cycle_anchor=trial_end,
        at=at,
    )


# --- operator-managed lifecycle --------------------------------------------------------


def subscription_cancel_here(
    *, customer: Any, when: str, at: datetime | None = None
) -> Subscription:
    """Cancel a subscription no Stripe subscription drives: now, or at the period's end
    (the scheduler ends it then)."""
    subscription = Subscription.objects.filter(customer=customer).first()
    if subscription is None or subscription.ended:
        raise Conflict("There is no subscription to cancel.")
    changes: dict[str, Any] = (
        {"status": SubscriptionStatus.CANCELED} if when == "now" else {"cancel_at_period_end": True}
    )
    return subscription_set(
        customer=customer, plan_key=subscription.plan.key, assign_kit=False, at=at, **changes
    )


def subscription_reactivate_here(*, customer: Any) -> Subscription:
    """Undo a pending cancellation at period end of a subscription no Stripe subscription
    drives."""
    subscription = Subscription.objects.filter(customer=customer).first()
    if subscription is None or subscription.ended:
        raise Conflict("There is no live subscription to reactivate.")
    if not subscription.cancel_at_period_end:
        raise Conflict("The subscription is not set to cancel.")
    return subscription_set(
        customer=customer,
        plan_key=subscription.plan.key,
        cancel_at_period_end=False,
        assign_kit=False,
    )


# --- seats -----------------------------------------------------------------------------


@transaction.atomic
def seats_manage(*, subscription_id: Any, operations: Iterable[Mapping[str, Any]]) -> Subscription:
    """Salable's seat operations, all or nothing: ``{"type": "add", "granteeId"}``,
    ``{"type": "remove", "granteeId"}``, ``{"type": "replace", "granteeId",
    "newGranteeId"}``. Holding more grantees than seats is a Conflict."""
    pk = _int_or_none(subscription_id)
    subscription = (
        None if pk is None else Subscription.objects.select_for_update().filter(pk=pk).first()
    )
    if subscription is None:
        raise NotFound(f"No subscription with id {subscription_id!r}.")
    if subscription.ended:
        raise Conflict("The subscription has ended.")
    for index, operation in enumerate(operations):
        field = f"operations.{index}"
        kind = operation.get("type")
        grantee = _grantee(f"{field}.grantee_id", operation.get("grantee_id"))
        held = Seat.objects.filter(subscription=subscription, grantee=grantee)
        if kind == "add":
            if held.exists():
                raise Conflict(f"User {grantee.pk} holds a seat already.")
            Seat.objects.create(subscription=subscription, grantee=grantee)
        elif kind == "remove":
            if not held.delete()[0]:
                raise Conflict(f"User {grantee.pk} holds no seat.")
        elif kind == "replace":
            new = _grantee(f"{field}.new_grantee_id", operation.get("new_grantee_id"))
            if Seat.objects.filter(subscription=subscription, grantee=new).exists():
                raise Conflict(f"User {new.pk} holds a seat already.")
            if not held.update(grantee=new):
                raise Conflict(f"User {grantee.pk} holds no seat.")
        else:
            raise invalid(f"{field}.type", "One of add, remove, replace.")
    taken = Seat.objects.filter(subscription=subscription).count()
    if taken > subscription.seats:
        raise Conflict(
            f"{taken} grantees for {subscription.seats} seats: add seats to the subscription first."
        )
    return subscription


def _grantee(field: str, grantee_id: Any) -> Any:
    User = get_user_model()
    try:
        pk = User._meta.pk.to_python(grantee_id)
        user = User._default_manager.get(pk=pk)
    except Exception:
        raise InvalidInput({field: [f"No user with id {grantee_id!r}."]}) from None
    if not is_active(user):
        raise InvalidInput({field: [f"User {grantee_id!r} is deactivated."]})
    return user


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None
