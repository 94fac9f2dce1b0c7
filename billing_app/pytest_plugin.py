"""pytest fixtures for host projects, installed with the package (a ``pytest11`` entry
point): nothing to add to ``conftest.py``. They need pytest-django's ``db``.

- ``billing_customer``: a new customer of ``BILLING_CUSTOMER_MODEL`` (a user, or your
  organisation model), made by ``customers.services.customer_create``.
- ``billing_subscribed``: that customer on a plan made for the test; say which with
  ``@pytest.mark.billing_plan(quotas={"seo": 2}, features=["sso"], ...)`` (the arguments
  of ``testutils.subscribe``).
- ``billing_token``: a tenant token acting for ``billing_customer``, for
  ``Authorization: Bearer``.
- ``billing_clock``: the app's clock, frozen at the real time: ``billing_clock.set(...)``,
  ``billing_clock.advance(days=1)``.

Nothing Django is imported before a fixture runs, so a project that does not use them
pays nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

_numbers = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "billing_plan(**subscribe_arguments): the plan billing_subscribed puts its customer "
        "on (billing_app.testutils.subscribe's arguments).",
    )


@pytest.fixture
def billing_customer(db: Any) -> Any:
    from .customers.services import customer_create

    return customer_create(email=f"billing-customer-{next(_numbers)}@example.com")


@pytest.fixture
def billing_subscribed(request: pytest.FixtureRequest, billing_customer: Any) -> Any:
    from .testutils import subscribe

    marker = request.node.get_closest_marker("billing_plan")
    subscribe(billing_customer, **(marker.kwargs if marker else {}))
    return billing_customer


@pytest.fixture
def billing_token(billing_customer: Any) -> str:
    from .customers.services import tenant_token_issue

    return tenant_token_issue(customer=billing_customer, name="tests")[1]


@pytest.fixture
def billing_clock() -> Iterator[Any]:
    from .testutils import freeze_billing_clock

    with freeze_billing_clock() as clock:
        yield clock
