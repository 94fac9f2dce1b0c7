"""Management commands: thin entry points onto services."""

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from billing_app.models import OperatorKey

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("billing_create_operator_key", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_create_operator_key_prints_the_key_alone_on_the_last_line():
    out, err = run("--name", "x")

    last_line = out.rstrip("\n").splitlines()[-1]
    assert re.fullmatch(r"sk_[A-Za-z0-9]+\.[A-Za-z0-9]+", last_line)
    operator_key = OperatorKey.objects.get_from_key(last_line)
    assert operator_key.name == "x"
    assert OperatorKey.objects.count() == 1
    # The key goes to stdout only, so `key=$(manage.py billing_create_operator_key ...)` works.
    assert last_line not in err
    assert operator_key.prefix in err


def test_each_run_creates_a_new_key():
    first = run("--name", "a")[0].split()[-1]
    second = run("--name", "b")[0].split()[-1]
    assert first != second
    assert OperatorKey.objects.get_from_key(first).name == "a"
    assert OperatorKey.objects.get_from_key(second).name == "b"


def test_create_operator_key_needs_a_name():
    with pytest.raises(CommandError, match="--name"):
        run()
    assert not OperatorKey.objects.exists()


def test_create_operator_key_refuses_an_empty_name_cleanly():
    with pytest.raises(CommandError):
        run("--name", "")
    assert not OperatorKey.objects.exists()


@pytest.mark.parametrize("option", ["--customer", "--user"])
@pytest.mark.parametrize(
    "customer_id", ["999999", "abc", str(2**128 - 1), "12345678-1234-1234-1234-12345678901z"]
)
def test_sync_subscriptions_of_an_unknown_customer_is_a_command_error(option, customer_id):
    # Refused before Stripe is asked anything: no stand-in is running here.
    with pytest.raises(CommandError, match="No customer"):
        call_command("billing_sync_subscriptions", option, customer_id, stdout=StringIO())


def test_retention_says_what_it_did_on_each_database():
    err = StringIO()
    call_command("billing_partitions", "--retain-months", "13", stderr=err, stdout=StringIO())
    if connection.vendor == "postgresql":
        assert "removed" in err.getvalue()
    else:
        assert err.getvalue() == "Nothing to do: usage events are partitioned on PostgreSQL only.\n"


@pytest.mark.parametrize(("name", "first"), [("plans.yaml", "billing:"), ("plans.json", "{")])
def test_export_writes_the_format_of_its_files_extension(tmp_path, name, first):
    call_command("billing_plans", "export", "-o", str(tmp_path / name))
    assert (tmp_path / name).read_text().startswith(first)
