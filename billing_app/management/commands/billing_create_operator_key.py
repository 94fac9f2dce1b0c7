from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing_app.customers.services import operator_key_create
from billing_app.exceptions import InvalidInput


class Command(BaseCommand):
    help = "Create an operator key for the /v1/ API. The key is printed once, on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="What the key is for, e.g. 'backend'.")

    def handle(self, *args: Any, name: str, **options: Any) -> None:
        try:
            operator_key, key = operator_key_create(name=name)
        except InvalidInput as error:
            raise CommandError(str(error)) from None
        self.stderr.write(
            f"Operator key {operator_key.name!r} ({operator_key.prefix}). "
            "Store it now: only its hash is kept."
        )
        self.stdout.write(key)
