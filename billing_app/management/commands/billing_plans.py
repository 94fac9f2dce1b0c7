import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing_app.catalog.files import (
    catalog_apply,
    catalog_diff,
    catalog_dump,
    catalog_export,
    catalog_file_errors,
    catalog_parse,
    catalog_read,
)
from billing_app.exceptions import InvalidInput

# Exit statuses: a file that is wrong or refused, and (--check) a database that differs.
INVALID, DIFFERS = 2, 1


class Command(BaseCommand):
    help = (
        "Plans as code. 'apply FILE' makes the catalog (products, Account Kits, plans) what FILE "
        "(JSON or YAML; '-' reads stdin) says, in one transaction, and prints the changes; "
        "--dry-run rolls them back, --check only compares and exits 1 when the database "
        "differs, --prune retires plans that customers are on. 'export' writes the catalog "
        "in the same shape."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        # One parser, not subcommands: Django's own options (--settings) then work anywhere.
        parser.add_argument("action", choices=["apply", "export"])
        parser.add_argument("file", nargs="?", help="apply: the file, or '-' for stdin.")
        parser.add_argument("--dry-run", action="store_true", help="apply: show, apply nothing.")
        parser.add_argument(
            "--check", action="store_true", help="apply: exit 1 when the database differs (CI)."
        )
        parser.add_argument(
            "--prune",
            action="store_true",
            help="apply: retire plans with live subscriptions that the file retires or omits.",
        )
        parser.add_argument(
            "--format", choices=["json", "yaml"], help="Default: by the file's extension, json."
        )
        parser.add_argument("--output", "-o", help="export: a file to write instead of stdout.")

    def handle(self, *args: Any, action: str, file: str | None, **options: Any) -> None:
        if action == "export":
            if file is not None:
                raise CommandError("export writes to stdout, or to --output FILE.")
            output = options["output"] or ""
            syntax = options["format"] or ("yaml" if output.endswith((".yaml", ".yml")) else "json")
            text = catalog_dump(catalog_export(), syntax=syntax)
            if options["output"]:
                Path(options["output"]).write_text(text, encoding="utf-8")
            else:
                self.stdout.write(text, ending="")
            return
        if file is None:
            raise CommandError("apply needs a FILE (or '-' for stdin).", returncode=INVALID)
        self.apply(file=file, **options)

    def apply(
        self, *, file: str, dry_run: bool, check: bool, prune: bool, format: str | None, **_: Any
    ) -> None:
        syntax = format or ("yaml" if file.endswith((".yaml", ".yml")) else "json")
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"Cannot read {file}: {error}", returncode=INVALID) from None
        desired = None
        try:
            desired = catalog_read(catalog_parse(text, syntax=syntax))
            if check:
                changes = catalog_diff(desired)
            else:
                changes = catalog_apply(desired, prune=prune, dry_run=dry_run)
        except InvalidInput as error:
            if dry_run and desired is not None:
                # What the file would change, beside why it cannot be applied as it is.
                for change in catalog_diff(desired):
                    for line in change.lines(prune=prune):
                        self.stdout.write(line)
            for line in catalog_file_errors(error):
                self.stderr.write(line)
            raise CommandError(
                f"{file}: {len(error.fields)} problem(s); nothing applied.", returncode=INVALID
            ) from None
        for change in changes:
            for line in change.lines(prune=prune):
                self.stdout.write(line)
        if check and changes:
            raise CommandError(
                f"The database differs from {file}: {len(changes)} change(s).", returncode=DIFFERS
            )
        if not changes:
            self.stderr.write("The database is as the file says: nothing to change.")
        elif dry_run:
            self.stderr.write(f"Dry run: {len(changes)} change(s), none applied.")
        elif not check:
            self.stderr.write(f"{len(changes)} change(s) applied.")
