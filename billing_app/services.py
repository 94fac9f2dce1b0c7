"""Every write the app makes. Views, admin, receivers and commands call these and only these.

Errors name the argument they are about (``InvalidInput({"plan_key": [...]})``); the API
renders those names in camelCase, so a client sees the field it sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import DataError, connection, transaction
from django.db.models import F
from django.utils import timezone

from . import alerts, cycles, outbox
from .conf import billing_settings
from .exceptions import Conflict, InvalidInput
from .models import (
    AccountKit,
    KitAssignment,
    KitPrimitive,
    OperatorKey,
    Plan,
    PlanQuota,
    Subscription,
    SubscriptionStatus,
    TenantToken,
    UsageCounter,
    UsageEvent,
    validate_iso_duration,
    validate_primitive,
)
from .periods import PERIODS, Window


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final[Any] = _Unset()
"""Default of optional service arguments: keep the current value (or the model default)."""


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput({field: [message]})


MAX_BIGINT = 2**63 - 1
MAX_INT = 2**31 - 1


def _check_primitive(field: str, primitive: Any) -> str:
    try:
        if not isinstance(primitive, str) or len(primitive) > 64:
            raise ValidationError("not a short string")
        validate_primitive(primitive)
    except ValidationError:
        raise _invalid(
            field,
            f"{primitive!r} is not a primitive slug (lowercase letters, digits, '.', '_', '-').",
        ) from None
    return primitive


def _check_count(field: str, value: Any, *, what: str, maximum: int = MAX_BIGINT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise _invalid(field, f"{what} must be an integer from 0 to {maximum}, not {value!r}.")
    return value


def account_kit_get(*, ref: str | int) -> AccountKit:
    """A kit by id or by key, for arguments that accept either."""
    lookup = {"pk": int(ref)} if str(ref).isdigit() else {"key": ref}
    try:
        return AccountKit.objects.get(**lookup)
    except AccountKit.DoesNotExist:
        raise _invalid("account_kit_id", f"No account kit with id or key {ref!r}.") from None


@transaction.atomic
def account_kit_upsert(
    *, key: str, name: str, primitives: Mapping[str, int | None] | None = None
) -> tuple[AccountKit, bool]:
    """Create or update the kit ``key``. ``primitives`` (slug -> calls per minute or None)
    replaces the kit's whole set when given."""
    checked: dict[str, int | None] = {}
    for primitive, rate in (primitives or {}).items():
        _check_primitive("primitives", primitive)
        if rate is not None:
            _check_count("primitives", rate, what=f"{primitive}: ratePerMinute", maximum=MAX_INT)
        checked[primitive] = rate

    kit, created = AccountKit.objects.get_or_create(key=key, defaults={"name": name})
    kit.name = name
    _full_clean(kit)
    kit.save()
    if primitives is not None:
        kit.primitives.exclude(primitive__in=checked).delete()
        for primitive, rate in checked.items():
            KitPrimitive.objects.update_or_create(
                kit=kit, primitive=primitive, defaults={"rate_per_minute": rate}
            )
    return kit, created


@transaction.atomic
def plan_upsert(
    *,
    key: str,
    name: str,
    account_kit_id: str | int | None = UNSET,
    stripe_price_id: str = UNSET,
    quotas: Mapping[str, int] = UNSET,
    period: str = UNSET,
    billing_cadence: str = UNSET,
    currency: str = UNSET,
    active: bool = UNSET,
    overage: Mapping[str, Any] = UNSET,
    stripe_meter_event: str = UNSET,
) -> tuple[Plan, bool]:
    """Create or update the plan ``key``. Arguments left UNSET keep their current value;
    ``quotas`` (slug -> limit per window) replaces the plan's whole set when given.
    ``overage`` (slug -> unit price in minor units) makes those quotas soft: calls go on past
    them and the excess is billed; the others block. Given, it replaces the set."""
    changes: dict[str, Any] = {"name": name}
    if stripe_meter_event is not UNSET:
        changes["stripe_meter_event"] = stripe_meter_event or ""
    if account_kit_id is not UNSET:
        changes["account_kit"] = (
            None if account_kit_id in (None, "") else account_kit_get(ref=account_kit_id)
        )
    if stripe_price_id is not UNSET:
        changes["stripe_price_id"] = stripe_price_id or ""
        taken = Plan.objects.filter(stripe_price_id=stripe_price_id).exclude(key=key).first()
        if stripe_price_id and taken:
            raise _invalid("stripe_price_id", f"Plan {taken.key!r} already uses this price.")
    if period is not UNSET:
        if period not in PERIODS:
            raise _invalid("period", f"{period!r} is not one of {', '.join(PERIODS)}.")
        changes["period"] = period
    if billing_cadence is not UNSET:
        try:
            validate_iso_duration(billing_cadence)
        except ValidationError as error:
            raise _invalid("billing_cadence", error.messages[0]) from None
        changes["billing_cadence"] = billing_cadence
    if currency is not UNSET:
        if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha()):
            raise _invalid("currency", f"{currency!r} is not a three-letter ISO 4217 code.")
        changes["currency"] = currency.lower()
    if active is not UNSET:
        changes["active"] = bool(active)
    if quotas is not UNSET:
        quotas = {
            _check_primitive("quotas", primitive): _check_count(
                "quotas", limit, what=f"the quota of {primitive}"
            )
            for primitive, limit in quotas.items()
        }

    if overage is not UNSET:
        overage = {
            _check_primitive("overage", primitive): _unit_price(primitive, price)
            for primitive, price in overage.items()
        }

    plan = Plan.objects.select_for_update().filter(key=key).first()
    created = plan is None
    if plan is None:
        plan = Plan(key=key)
    for field, value in changes.items():
        setattr(plan, field, value)
    _full_clean(plan)
    plan.save()
    if quotas is not UNSET:
        plan.quotas.exclude(primitive__in=quotas).delete()
        for primitive, limit in quotas.items():
            PlanQuota.objects.update_or_create(
                plan=plan, primitive=primitive, defaults={"limit": limit}
            )
    if overage is not UNSET:
        unknown = set(overage) - set(plan.quotas.values_list("primitive", flat=True))
        if unknown:
            raise _invalid("overage", f"No quota to bill past for {', '.join(sorted(unknown))}.")
        for quota in plan.quotas.all():
            price = overage.get(quota.primitive)
            quota.overage = PlanQuota.Overage.BLOCK if price is None else PlanQuota.Overage.BILL
            quota.overage_unit_price = price
            quota.save(update_fields=["overage", "overage_unit_price"])
    return plan, created


def _unit_price(primitive: str, price: Any) -> Decimal:
    try:
        value = Decimal(str(price))
    except (InvalidOperation, ValueError):
        value = Decimal("NaN")
    if isinstance(price, bool) or not value.is_finite() or value < 0 or value >= 10**12:
        raise _invalid("overage", f"The unit price of {primitive} must be a decimal >= 0.")
    return value.quantize(Decimal("1e-12"))


def tenant_create(*, email: str) -> AbstractBaseUser:
    """A new tenant: a user of ``AUTH_USER_MODEL`` that logs in with no password."""
    User = get_user_model()
    try:
        validate_email(email)
    except ValidationError:
        raise _invalid("email", f"{email!r} is not an email address.") from None
    email_field = User.get_email_field_name()
    for name in {email_field, User.USERNAME_FIELD}:
        max_length = User._meta.get_field(name).max_length
        if max_length and len(email) > max_length:
            raise _invalid("email", f"An email may have at most {max_length} characters.")
    if User._default_manager.filter(**{f"{email_field}__iexact": email}).exists():
        raise _invalid("email", "A user with this email exists already.")
    fields = {email_field: email}
    if email_field != User.USERNAME_FIELD:
        fields[User.USERNAME_FIELD] = email
    user = User._default_manager.create_user(**fields)  # type: ignore[attr-defined]
    user.set_unusable_password()
    user.save()
    return user  # type: ignore[no-any-return]


def tenant_token_issue(
    *, user: Any, name: str = "api", expiry_date: datetime | None = None
) -> tuple[TenantToken, str]:
    """A new token for ``user``; the returned key is shown once and stored only hashed."""
    token, key = TenantToken.objects.create_key(user=user, name=name[:50], expiry_date=expiry_date)
    return token, key  # type: ignore[return-value]


def operator_key_create(
    *, name: str, expiry_date: datetime | None = None
) -> tuple[OperatorKey, str]:
    """A new operator key; the returned key is shown once and stored only hashed."""
    if not name:
        raise _invalid("name", "An operator key needs a name.")
    operator_key, key = OperatorKey.objects.create_key(name=name[:50], expiry_date=expiry_date)
    return operator_key, key  # type: ignore[return-value]


def api_key_revoke(*, key: OperatorKey | TenantToken) -> None:
    key.revoked = True
    key.save(update_fields=["revoked"])


def kit_assign(*, user: Any, kit: AccountKit | None) -> KitAssignment | None:
    """Give ``user`` the kit ``kit``, or no kit (no kit gating) when it is None."""
    if kit is None:
        KitAssignment.objects.filter(user=user).delete()
        return None
    assignment, _ = KitAssignment.objects.update_or_create(user=user, defaults={"kit": kit})
    return assignment


@transaction.atomic
def subscription_set(
    *,
    user: Any,
    plan_key: str,
    status: str = UNSET,
    stripe_customer_id: str = UNSET,
    stripe_subscription_id: str = UNSET,
    current_period_start: datetime | None = UNSET,
    current_period_end: datetime | None = UNSET,
    cancel_at_period_end: bool = UNSET,
    assign_kit: bool = True,
) -> Subscription:
    """Put ``user`` on ``plan_key``: the one way a subscription changes, whether the operator
    API, the admin or a Stripe webhook asks. Arguments left UNSET keep their current value.
    With ``assign_kit`` the tenant's kit becomes the plan's kit in the same transaction."""
    try:
        plan = Plan.objects.select_related("account_kit").get(key=plan_key)
    except Plan.DoesNotExist:
        raise _invalid("plan_key", f"No plan with key {plan_key!r}.") from None
    if status is not UNSET and status not in SubscriptionStatus.values:
        raise _invalid(
            "status", f"{status!r} is not one of {', '.join(SubscriptionStatus.values)}."
        )

    now = timezone.now()
    subscription = Subscription.objects.select_for_update().filter(user=user).first()
    if subscription is None:
        subscription = Subscription(user=user, status_changed_at=now)
    if status is not UNSET and status != subscription.status:
        subscription.status_changed_at = now
    changed_plan = subscription.pk is not None and subscription.plan_id != plan.pk
    if changed_plan and billing_settings.CHANGE_PLAN_USAGE == "reset":
        subscription.usage_reset_at = now
    subscription.plan = plan
    for field, value in {
        "status": status,
        "stripe_customer_id": stripe_customer_id,
        "stripe_subscription_id": stripe_subscription_id,
        "current_period_start": current_period_start,
        "current_period_end": current_period_end,
        "cancel_at_period_end": cancel_at_period_end,
    }.items():
        if value is not UNSET:
            setattr(
                subscription, field, "" if value is None and field.startswith("stripe") else value
            )
    _full_clean(subscription)
    subscription.save()
    if assign_kit:
        kit_assign(user=user, kit=plan.account_kit)
    # Keep the usage records in step: a period moved on closes the old cycle; a
    # cancellation finalizes the open one.
    cycles.follow(user=user)
    outbox.webhook(
        "subscription.updated",
        key=f"billing-subscription-{subscription.pk}-{subscription.updated_at.timestamp()}",
        data={
            "userId": subscription.user_id,
            "plan": plan.key,
            "status": subscription.status,
            "stripeSubscriptionId": subscription.stripe_subscription_id,
            "currentPeriodStart": _iso(subscription.current_period_start),
            "currentPeriodEnd": _iso(subscription.current_period_end),
            "cancelAtPeriodEnd": subscription.cancel_at_period_end,
        },
    )
    return subscription


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _full_clean(instance: Any) -> None:
    try:
        instance.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        raise InvalidInput(error.message_dict) from None


# Metering. The success path of a metered call is `usage_reserve`: one transaction that
# writes the usage event and raises the counter only while it stays within the quota. A
# call that fails afterwards is undone by `usage_refund`. Counters therefore always equal
# the sum of their window's events, even if a process dies between the two.


@dataclass(frozen=True)
class Reservation:
    event_id: int
    user_id: Any
    primitive: str
    quantity: int
    window: Window
    used: int  # the window's usage after this call
    limit: int | None
    occurred_at: datetime
    idempotency_key: str = ""
    duplicate: bool = False  # the idempotency key was recorded before: nothing changed


class _Refused(Exception):
    """Rolls back the reservation's transaction."""


def _counter_sql() -> str:
    table = UsageCounter._meta.db_table
    # One statement that creates the window's row or raises it, but only while
    # used + quantity stays within the limit: exact under any concurrency, because the
    # database checks the condition on the locked row.
    return (
        f"INSERT INTO {table} (user_id, primitive, window_start, window_end, used) "
        "VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (user_id, primitive, window_start) DO UPDATE "
        f"SET used = {table}.used + excluded.used "
        f"WHERE (%s OR {table}.used + excluded.used <= %s) "
        f"AND {table}.used <= {MAX_BIGINT} - excluded.used "
        "RETURNING used"
    )


def _event_sql() -> str:
    table = UsageEvent._meta.db_table
    return (
        f"INSERT INTO {table} (user_id, primitive, quantity, occurred_at, recorded_at, "
        "window_start, idempotency_key, fingerprint) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (user_id, idempotency_key) WHERE NOT (idempotency_key = '') DO NOTHING "
        "RETURNING id"
    )


def usage_reserve(
    *,
    user_id: Any,
    primitive: str,
    quantity: int,
    window: Window,
    limit: int | None,
    occurred_at: datetime,
    idempotency_key: str = "",
    fingerprint: str = "",
    soft: bool = False,
) -> Reservation:
    """Record ``quantity`` of ``primitive`` for the tenant in ``window``, if it fits in
    ``limit`` (None: unlimited). Raises ``QuotaExceeded``-ready ``UsageRefused`` when it does
    not; answers the first reservation (``duplicate=True``) for a known idempotency key, or
    raises ``Conflict`` when that key came with another body. A ``soft`` limit is only
    reported, never enforced: usage past it is overage, billed when the cycle closes."""
    if limit is not None and quantity > limit and not soft:
        raise UsageRefused(used=usage_used(user_id=user_id, primitive=primitive, window=window))
    adapt = connection.ops.adapt_datetimefield_value
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                _event_sql(),
                [
                    user_id,
                    primitive,
                    quantity,
                    adapt(occurred_at),
                    adapt(timezone.now()),
                    adapt(window.start),
                    idempotency_key,
                    fingerprint,
                ],
            )
            row = cursor.fetchone()
            if row is None:
                return _replay(
                    user_id=user_id, key=idempotency_key, fingerprint=fingerprint, limit=limit
                )
            event_id = row[0]
            cursor.execute(
                _counter_sql(),
                [
                    user_id,
                    primitive,
                    adapt(window.start),
                    adapt(window.end),
                    quantity,
                    limit is None or soft,
                    limit or 0,
                ],
            )
            counted = cursor.fetchone()
            if counted is None:
                raise _Refused
    except _Refused:
        used = usage_used(user_id=user_id, primitive=primitive, window=window)
        if used > MAX_BIGINT - quantity:
            raise _invalid("quantity", "The window's counter cannot hold that much more.") from None
        raise UsageRefused(used=used) from None
    return Reservation(
        event_id,
        user_id,
        primitive,
        quantity,
        window,
        counted[0],
        limit,
        occurred_at,
        idempotency_key,
    )


class UsageRefused(Exception):
    """Over the limit; ``used`` is the window's usage as it stands."""

    def __init__(self, *, used: int) -> None:
        super().__init__(used)
        self.used = used


def _replay(*, user_id: Any, key: str, fingerprint: str, limit: int | None) -> Reservation:
    event = UsageEvent.objects.get(user_id=user_id, idempotency_key=key)
    if fingerprint and event.fingerprint and fingerprint != event.fingerprint:
        raise Conflict({"idempotencyKey": [f"{key!r} was used before with a different request."]})
    counter = UsageCounter.objects.get(
        user_id=user_id, primitive=event.primitive, window_start=event.window_start
    )
    window = Window(counter.window_start, counter.window_end)
    return Reservation(
        event.pk,
        user_id,
        event.primitive,
        event.quantity,
        window,
        counter.used,
        limit,
        event.occurred_at,
        key,
        duplicate=True,
    )


def usage_used(*, user_id: Any, primitive: str, window: Window) -> int:
    used = (
        UsageCounter.objects.filter(user_id=user_id, primitive=primitive, window_start=window.start)
        .values_list("used", flat=True)
        .first()
    )
    return used or 0


def usage_refund(*, reservation: Reservation) -> None:
    """Undo a reservation whose call failed: its event goes, its counter comes down."""
    if reservation.duplicate:
        return
    with transaction.atomic():
        deleted, _ = UsageEvent.objects.filter(pk=reservation.event_id).delete()
        if deleted:
            UsageCounter.objects.filter(
                user_id=reservation.user_id,
                primitive=reservation.primitive,
                window_start=reservation.window.start,
            ).update(used=F("used") - reservation.quantity)


@dataclass(frozen=True)
class IngestItem:
    """One valid event of a batch, ready to write."""

    user_id: Any
    primitive: str
    quantity: int
    occurred_at: datetime
    window: Window
    idempotency_key: str
    fingerprint: str


def usage_ingest(
    *, items: list[IngestItem], limits: Mapping[tuple[Any, str], int | None] | None = None
) -> list[tuple[str, int]]:
    """Write a batch of reported usage: one statement for the events, one for the counters,
    in one transaction. Answers ("created" | "duplicate" | "conflict", event id) per item,
    in order. Reported usage is recorded whatever the quota (overage): it already happened.
    """
    if not items:
        return []
    adapt = connection.ops.adapt_datetimefield_value
    now = adapt(timezone.now())
    rows = [
        (
            item.user_id,
            item.primitive,
            item.quantity,
            adapt(item.occurred_at),
            now,
            adapt(item.window.start),
            item.idempotency_key,
            item.fingerprint,
        )
        for item in items
    ]
    source, params = _rows_source(
        UsageEvent,
        (
            "user",
            "primitive",
            "quantity",
            "occurred_at",
            "recorded_at",
            "window_start",
            "idempotency_key",
            "fingerprint",
        ),
        rows,
    )
    events = UsageEvent._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {events} (user_id, primitive, quantity, occurred_at, recorded_at, "
            f"window_start, idempotency_key, fingerprint) {source} "
            "ON CONFLICT (user_id, idempotency_key) WHERE NOT (idempotency_key = '') "
            "DO NOTHING RETURNING id, user_id, idempotency_key",
            params,
        )
        returned = cursor.fetchall()
        # Keyed rows are matched by key; unkeyed ones come back in the order sent, as
        # Django's bulk_create also relies on.
        keyed = {(user_id, key): pk for pk, user_id, key in returned if key}
        unkeyed = iter(pk for pk, _, key in returned if not key)
        results: list[tuple[str, int]] = []
        inserted: list[IngestItem] = []
        replays: list[int] = []
        for index, item in enumerate(items):
            if not item.idempotency_key:
                results.append(("created", next(unkeyed)))
                inserted.append(item)
            elif (pk := keyed.pop((item.user_id, item.idempotency_key), None)) is not None:
                results.append(("created", pk))
                inserted.append(item)
            else:
                results.append(("duplicate", 0))
                replays.append(index)
        if replays:
            known = {
                (e.user_id, e.idempotency_key): e
                for e in UsageEvent.objects.filter(
                    user_id__in={items[i].user_id for i in replays},
                    idempotency_key__in={items[i].idempotency_key for i in replays},
                ).only("id", "user_id", "idempotency_key", "fingerprint")
            }
            for index in replays:
                item = items[index]
                first = known[(item.user_id, item.idempotency_key)]
                same = first.fingerprint == item.fingerprint
                results[index] = ("duplicate" if same else "conflict", first.pk)
        _counters_add(inserted, limits or {})
    return results


def _rows_source(model: Any, names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Any:
    """``rows`` as the source of an ``INSERT``, and its parameters. On PostgreSQL one array
    per column, as Django's bulk_create does: psycopg binds on the client and splits the
    statement at every placeholder, which for eight per event cost more than the insert."""
    if connection.vendor == "postgresql":
        by_name = {f.name: f for f in model._meta.concrete_fields}
        types = [(by_name[name].db_type(connection) or "").split("(")[0] for name in names]
        arrays = ", ".join(f"%s::{kind}[]" for kind in types)
        return f"SELECT * FROM unnest({arrays})", [list(c) for c in zip(*rows, strict=True)]
    row = "(" + ", ".join(["%s"] * len(names)) + ")"
    return "VALUES " + ", ".join([row] * len(rows)), [value for row in rows for value in row]


def _as_aware(value: Any) -> datetime:
    """A timestamp from a raw cursor (SQLite gives naive or text) as an aware datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return timezone.make_aware(value, UTC) if timezone.is_naive(value) else value


def _counters_add(items: list[IngestItem], limits: Mapping[tuple[Any, str], int | None]) -> None:
    """Add the batch's quantities to their counters; the usage alerts of thresholds the
    additions crossed (each counter's value after ours comes back from the upsert)."""
    totals: dict[tuple[Any, str, datetime, datetime], int] = {}
    for item in items:
        key = (item.user_id, item.primitive, item.window.start, item.window.end)
        totals[key] = totals.get(key, 0) + item.quantity
    if not totals:
        return
    adapt = connection.ops.adapt_datetimefield_value
    table = UsageCounter._meta.db_table
    # Sorted, so concurrent batches lock shared counter rows in the same order.
    rows = [
        (user_id, primitive, adapt(start), adapt(end), used)
        for (user_id, primitive, start, end), used in sorted(totals.items())
    ]
    # unnest keeps the sorted order.
    source, params = _rows_source(
        UsageCounter, ("user", "primitive", "window_start", "window_end", "used"), rows
    )
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (user_id, primitive, window_start, window_end, used) "
                f"{source} ON CONFLICT (user_id, primitive, window_start) DO UPDATE "
                f"SET used = {table}.used + excluded.used "
                "RETURNING user_id, primitive, window_start, used",
                params,
            )
            counted = cursor.fetchall() if limits else []
    except (DataError, OverflowError):
        raise _invalid("events", "A counter cannot hold that much more usage.") from None
    added = {(u, p, start): (end, used) for (u, p, start, end), used in totals.items()}
    for user_id, primitive, start, after in counted:
        limit = limits.get((user_id, primitive))
        if limit:
            start = _as_aware(start)
            end, quantity = added[(user_id, primitive, start)]
            alerts.note(
                user_id=user_id,
                primitive=primitive,
                window=Window(start, end),
                before=after - quantity,
                after=after,
                limit=limit,
            )
