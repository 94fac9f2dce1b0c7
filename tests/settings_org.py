"""The suite again, for a host that bills organisations keyed by UUID, with a custom user
model keyed by UUID: BILLING_CUSTOMER_MODEL is swapped before the first migrate, as the
docs say, and dj-stripe's subscriber is the same model."""

from .settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.orgs"]  # noqa: F405
AUTH_USER_MODEL = "orgs.User"
BILLING_CUSTOMER_MODEL = "orgs.Organization"
DJSTRIPE_SUBSCRIBER_MODEL = "orgs.Organization"
