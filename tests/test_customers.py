"""Customers: creating one, finding one by id, its kit, and the keys that act for it."""

import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from billing_app.conf import customer_is_user, customer_model
from billing_app.customers import selectors as customers_selectors
from billing_app.customers import services as customers
from billing_app.entitlements import version_of
from billing_app.exceptions import InvalidInput, NotFound
from billing_app.models import KitAssignment, OperatorKey, TenantToken, UsageEvent
from billing_app.subscriptions import services as subscriptions
from billing_app.testutils import subscribe

from .factories import AccountKitFactory, CustomerFactory, UserFactory
from .utils import bearer, customers_count, error_fields, post_json

pytestmark = pytest.mark.django_db

# A valid address (labels of 63 characters) longer than any column holds an email: the
# user's username (150) or an organisation's EmailField (254).
TOO_LONG_EMAIL = "a" * 64 + "@" + ".".join(["b" * 63] * 3) + ".com"


# customer_create


def test_customer_create_makes_a_customer_of_the_billed_model():
    created = customers.customer_create(email="ada@example.com", name="Ada Ltd")

    created.refresh_from_db()
    assert isinstance(created, customer_model())
    assert created.email == "ada@example.com"
    assert customers_count() == 1


@pytest.mark.skipif(not customer_is_user(), reason="a user that logs in by email")
def test_customer_create_makes_a_passwordless_user_named_by_email():
    user = customers.customer_create(email="ada@example.com")
    user.refresh_from_db()
    assert user.get_username() == "ada@example.com"
    assert not user.has_usable_password()


@pytest.mark.skipif(customer_is_user(), reason="an organisation has a name")
def test_customer_create_names_an_organisation_by_its_email_unless_named():
    assert customers.customer_create(email="ada@example.com").name == "ada@example.com"
    assert customers.customer_create(email="bob@example.com", name="Bob Ltd").name == "Bob Ltd"


@pytest.mark.parametrize("email", ["not-an-email", "", "ada@", "@example.com", TOO_LONG_EMAIL])
def test_customer_create_refuses_a_bad_email_and_creates_nothing(email):
    with pytest.raises(InvalidInput) as excinfo:
        customers.customer_create(email=email)
    assert "email" in error_fields(excinfo)
    assert customers_count() == 0


@pytest.mark.skipif(not customer_is_user(), reason="users log in by email: one user per email")
def test_customer_create_refuses_an_existing_email_whatever_its_case():
    customers.customer_create(email="ada@example.com")
    with pytest.raises(InvalidInput) as excinfo:
        customers.customer_create(email="ADA@Example.com")
    assert error_fields(excinfo) == {"email"}
    assert customers_count() == 1


# customer_get


def test_customer_get_finds_the_customer_by_its_key_or_the_key_as_text(customer):
    assert customers_selectors.customer_get(customer_id=customer.pk) == customer
    assert customers_selectors.customer_get(customer_id=str(customer.pk)) == customer


@pytest.mark.parametrize(
    "customer_id",
    [
        "abc",
        "",
        None,
        -1,
        "999999",
        str(2**128 - 1),
        2**128 - 1,
        "12345678-1234-1234-1234-12345678901z",
        str(uuid.uuid4()),
        "1.5",
    ],
    ids=repr,
)
def test_customer_get_answers_not_found_for_unknown_and_malformed_ids(customer, customer_id):
    with pytest.raises(NotFound):
        customers_selectors.customer_get(customer_id=customer_id)


# Tokens and keys


def test_tenant_token_issue_returns_a_tk_key_stored_only_hashed(customer):
    token, key = customers.tenant_token_issue(customer=customer, name="backend")

    assert key.startswith("tk_")
    assert TenantToken.objects.get_from_key(key) == token
    assert token.customer == customer
    assert token.grantee is None
    assert token.name == "backend"
    stored = TenantToken.objects.filter(pk=token.pk).values().get()
    assert all(key not in str(value) for value in stored.values())
    assert all(key.partition(".")[2] not in str(value) for value in stored.values())


def test_tenant_token_issue_may_name_a_grantee(customer, user):
    token, key = customers.tenant_token_issue(customer=customer, grantee=user)
    assert TenantToken.objects.get_from_key(key).grantee == user
    assert token.customer == customer


def test_operator_key_create_returns_an_sk_key_stored_only_hashed():
    operator_key, key = customers.operator_key_create(name="backend")

    assert key.startswith("sk_")
    assert OperatorKey.objects.get_from_key(key) == operator_key
    assert operator_key.name == "backend"
    stored = OperatorKey.objects.filter(pk=operator_key.pk).values().get()
    assert all(key not in str(value) for value in stored.values())
    assert all(key.partition(".")[2] not in str(value) for value in stored.values())


def test_operator_key_create_needs_a_name():
    with pytest.raises(InvalidInput) as excinfo:
        customers.operator_key_create(name="")
    assert error_fields(excinfo) == {"name"}
    assert not OperatorKey.objects.exists()


def test_each_key_is_new():
    keys = {customers.operator_key_create(name="k")[1] for _ in range(5)}
    assert len(keys) == 5


def test_a_tenant_token_is_not_an_operator_key(customer_token):
    with pytest.raises(OperatorKey.DoesNotExist):
        OperatorKey.objects.get_from_key(customer_token)
    # Not even with the operator scheme in front of it.
    with pytest.raises(OperatorKey.DoesNotExist):
        OperatorKey.objects.get_from_key("sk_" + customer_token.removeprefix("tk_"))


def test_an_operator_key_is_not_a_tenant_token(operator_key):
    with pytest.raises(TenantToken.DoesNotExist):
        TenantToken.objects.get_from_key(operator_key)


@pytest.mark.parametrize(
    "forge",
    [
        lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"),  # wrong secret
        lambda key: key.partition(".")[0],  # no secret
        lambda key: "sk_unknown." + key.partition(".")[2],  # unknown prefix
        lambda key: "",
    ],
)
def test_a_forged_operator_key_does_not_authenticate(operator_key, forge):
    with pytest.raises(OperatorKey.DoesNotExist):
        OperatorKey.objects.get_from_key(forge(operator_key))


def test_an_expired_operator_key_does_not_authenticate():
    operator_key, key = customers.operator_key_create(name="old")
    operator_key.expiry_date = timezone.now() - timedelta(minutes=1)
    operator_key.save()
    with pytest.raises(OperatorKey.DoesNotExist):
        OperatorKey.objects.get_from_key(key)


@pytest.mark.parametrize("kind", ["operator", "tenant"])
def test_a_revoked_key_no_longer_authenticates(kind, customer):
    if kind == "operator":
        model, (record, key) = OperatorKey, customers.operator_key_create(name="k")
    else:
        model, (record, key) = TenantToken, customers.tenant_token_issue(customer=customer)
    other_record, other_key = customers.operator_key_create(name="other")
    assert model.objects.get_from_key(key) == record

    customers.api_key_revoke(key=record)

    record.refresh_from_db()
    assert record.revoked
    with pytest.raises(model.DoesNotExist):
        model.objects.get_from_key(key)
    # Only that key.
    assert OperatorKey.objects.get_from_key(other_key) == other_record


# Kits of customers


def test_kit_assign_gives_replaces_and_removes_the_kit(customer):
    first, second = AccountKitFactory(), AccountKitFactory()

    customers.kit_assign(customer=customer, kit=first)
    assert customers_selectors.kit_of(customer=customer) == first

    customers.kit_assign(customer=customer, kit=second)
    assert customers_selectors.kit_of(customer=customer) == second
    assert KitAssignment.objects.filter(customer=customer).count() == 1

    assert customers.kit_assign(customer=customer, kit=None) is None
    assert customers_selectors.kit_of(customer=customer) is None
    # Removing a kit the customer does not have is fine.
    customers.kit_assign(customer=customer, kit=None)
    assert not KitAssignment.objects.exists()


def test_kit_assign_touches_only_that_customer(customer):
    kit, other = AccountKitFactory(), CustomerFactory()
    customers.kit_assign(customer=other, kit=kit)
    customers.kit_assign(customer=customer, kit=AccountKitFactory())
    customers.kit_assign(customer=customer, kit=None)
    assert customers_selectors.kit_of(customer=other) == kit


def test_kit_assign_raises_the_entitlement_version_of_that_customer_only(customer):
    other = CustomerFactory()
    customers.kit_assign(customer=other, kit=AccountKitFactory())
    before, other_before = version_of(customer.pk), version_of(other.pk)

    customers.kit_assign(customer=customer, kit=AccountKitFactory())
    assert version_of(customer.pk) == before + 1
    customers.kit_assign(customer=customer, kit=None)
    assert version_of(customer.pk) == before + 2
    assert version_of(other.pk) == other_before


# From a request to its customer (BILLING_CUSTOMER_RESOLVER)


def workspace_resolver(request):
    """A host's resolver: an authenticated request is billed to the customer named in
    ``X-Workspace``, whoever authenticated it; else to nobody."""
    user = getattr(request, "user", None)
    named = request.headers.get("X-Workspace")
    if user is None or not user.is_authenticated or not named:
        return None
    return customers_selectors.customer_get(customer_id=named)


def test_a_custom_resolver_decides_the_customer_everywhere(customer, customer_token, settings):
    """The middleware (@metered), DRF metering (MeteredMixin) and the self-service API all
    bill whom the host's resolver says: here another customer than the token's."""
    settings.BILLING_CUSTOMER_RESOLVER = "tests.test_customers.workspace_resolver"
    workspace = CustomerFactory()
    subscribe(workspace, quotas={"seo": 100}, plan_key="team")
    named = bearer(customer_token, **{"X-Workspace": str(workspace.pk)})

    assert post_json(named, "/demo/seo/").status_code == 200  # the middleware
    assert post_json(named, "/test/reports/").status_code == 200  # DRF metering
    own = named.get("/billing/subscription")  # the self-service API
    assert own.status_code == 200 and own.json()["plan"] == "team"
    assert named.get("/billing/usage").json()["usage"]["seo"] == 2

    assert UsageEvent.objects.filter(customer_id=workspace.pk).count() == 2
    assert not UsageEvent.objects.filter(customer_id=customer.pk).exists()
    # Naming none, the resolver finds none: the token's own customer is not the default.
    anyone = bearer(customer_token)
    assert post_json(anyone, "/demo/seo/").status_code == 401
    assert post_json(anyone, "/test/reports/").status_code == 401
    assert anyone.get("/billing/subscription").status_code == 401
    assert UsageEvent.objects.count() == 2


@pytest.mark.skipif(customer_is_user(), reason="customers are users: a user is its own")
def test_a_user_holding_seats_of_several_customers_names_one(settings):
    """The default resolver: a signed-in user with seats of two organisations must name
    one in X-Billing-Customer, and may name only one it holds a seat of."""
    first, second, unrelated = CustomerFactory(), CustomerFactory(), CustomerFactory()
    for organisation, plan in ((first, "first"), (second, "second"), (unrelated, "third")):
        subscribe(organisation, quotas={"seo": 100}, plan_key=plan)
    member = UserFactory()
    for organisation in (first, second):
        subscriptions.seats_manage(
            subscription_id=organisation.billing_subscription.pk,
            operations=[{"type": "add", "grantee_id": member.pk}],
        )
    client = Client()
    client.force_login(member)

    unnamed = client.get("/billing/subscription")
    assert unnamed.status_code == 401
    assert "X-Billing-Customer" in unnamed.json()["detail"]
    assert post_json(client, "/demo/seo/").status_code == 401

    for organisation, plan in ((first, "first"), (second, "second")):
        header = {"HTTP_X_BILLING_CUSTOMER": str(organisation.pk)}
        assert client.get("/billing/subscription", **header).json()["plan"] == plan
        assert post_json(client, "/demo/seo/", **header).status_code == 200
    assert UsageEvent.objects.filter(customer_id=first.pk).count() == 1
    assert UsageEvent.objects.filter(customer_id=second.pk).count() == 1

    header = {"HTTP_X_BILLING_CUSTOMER": str(unrelated.pk)}
    assert client.get("/billing/subscription", **header).status_code == 403
    assert post_json(client, "/demo/seo/", **header).status_code == 403
    assert UsageEvent.objects.count() == 2
