"""The migrations: in step with the models, and a real ``migrate`` on a fresh database
for the settings module under test (the customer model, and its key type, is chosen
before the first migrate)."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from billing_app.conf import customer_model

ROOT = Path(__file__).resolve().parent.parent


def customer_columns() -> set[tuple[str, str]]:
    """(table, column) of every billing column that points at the customer."""
    return {
        (model._meta.db_table, field.column)
        for model in apps.get_app_config("billing_app").get_models()
        for field in model._meta.concrete_fields
        if field.is_relation and field.related_model is customer_model()
    }


@pytest.mark.django_db
def test_models_and_migrations_agree():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def manage(*args: str, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def column_types(url: str) -> dict[tuple[str, str], str]:
    import psycopg

    with psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as fresh:
        rows = fresh.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_name LIKE 'billing_app_%%'"
        ).fetchall()
    return {(table, column): data_type for table, column, data_type in rows}


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_migrate_runs_on_a_fresh_postgresql_database():
    name = f"migrate_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + f"/{name}"
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "DJANGO_SETTINGS_MODULE": settings.SETTINGS_MODULE,
        }

        migrate = manage("migrate", "--no-input", env=env)
        assert migrate.returncode == 0, migrate.stderr
        shown = manage("showmigrations", "billing_app", env=env, timeout=120)
        assert "[X] 0001_initial" in shown.stdout
        assert "[ ]" not in shown.stdout

        # The customer columns have the customer's key type (integer for auth.User, uuid
        # for the organisations of tests.settings_org): the model chosen before migrate.
        expected = customer_model()._meta.pk.rel_db_type(connection)
        assert expected in ("integer", "bigint", "uuid")
        types = column_types(url)
        columns = customer_columns()
        assert len(columns) >= 5
        assert {column: types.get(column) for column in columns} == dict.fromkeys(columns, expected)

        # And it unapplies cleanly (a deploy rolled back), then applies again.
        for args in (("migrate", "billing_app", "zero"), ("migrate", "billing_app")):
            step = manage(*args, "--no-input", env=env)
            assert step.returncode == 0, step.stderr
        assert "[X] 0001_initial" in manage("showmigrations", "billing_app", env=env).stdout
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
