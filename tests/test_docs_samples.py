"""Every code sample in the docs runs, and the reference tables list what the code has.

The convention (docs/index.md says it to readers):

- ``python`` samples run page by page, in order, in one namespace per page, against the
  test database (rolled back after the page), with Stripe answered by the stand-in.
- A ``python`` sample whose first line names a file is part of a small host project:
  ``# mysite/settings.py`` runs with the project's settings to extend, and its ``BILLING_*``
  names apply to the rest of the page (and must pass the system checks);
  ``# mysite/urls.py`` extends a startproject URLconf that the rest of the page is served
  by; any other ``# pkg/module.py`` becomes that importable module.
  ``# python manage.py shell`` is an ordinary sample.
- ``sh`` samples: ``python manage.py billing_...`` lines run (call_command), in a working
  directory of the page's own, with ``| python manage.py billing_...`` and ``> FILE``
  followed; the other lines are classified below as not runnable here (curl, the Stripe
  CLI, pip, cron), and a line of no known kind fails the test, so a new kind is a decision.
- ``json`` samples parse; one whose only member is ``"billing"`` is a plans file, written
  to ``config.json`` in that directory for the page's later commands to read. ``django``
  (template) samples compile, so every tag they use exists in a library they load.
- The README's install and quickstart, and docs/howto/organisations.md, are followed in a
  freshly made project by tests/test_install.py instead (they create models and migrate).
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import types
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core import checks
from django.core.management import call_command, get_commands
from django.template import Template
from django.test import override_settings
from django.urls import URLPattern, URLResolver, clear_url_caches, get_resolver

from billing_app.conf import DEFAULTS, customer_is_user

from .test_install import README, blocks_of

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# Followed literally in a fresh project by tests/test_install.py.
FOLLOWED_BY_INSTALL = {"howto/organisations.md"}
# manage.py commands that build a project's database: the test database is built already.
PROJECT_COMMANDS = {"migrate", "makemigrations", "startapp", "runserver", "shell", "check"}
# Shell lines that reach outside this machine or this process.
NOT_RUN_HERE = re.compile(
    r"^(curl |  -H |  -d |stripe |pip |export |scripts/|\.venv/bin/mkdocs |"
    r"\*/\d+ |\* \* )"
)

STARTPROJECT_URLS = """
from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
"""


def pages() -> list[str]:
    return sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))


class Page:
    """Runs one page's samples; undoes what they changed afterwards."""

    def __init__(self) -> None:
        self.namespace: dict[str, object] = {"__name__": "docs_sample"}
        self.overrides: list[override_settings] = []
        self.modules: list[str] = []
        self.cwd = tempfile.mkdtemp(prefix="billing-docs-")

    def run(self, lang: str, text: str) -> None:
        first = text.splitlines()[0] if text.strip() else ""
        if lang == "python":
            target = re.fullmatch(r"# ([\w/]+\.py)", first)
            if target:
                self.host_file(target[1], text)
            else:
                exec(compile(text, "<docs sample>", "exec"), self.namespace)
        elif lang == "sh":
            for line in text.splitlines():
                self.shell(line)
        elif lang == "json":
            sample = json.loads(text)
            if isinstance(sample, dict) and sample.keys() == {"billing"}:
                Path(self.cwd, "config.json").write_text(text)
        elif lang == "django":
            Template(text)
        elif lang != "text":  # diagrams and output
            raise AssertionError(f"no rule runs {lang!r} samples: add one to this test")

    def shell(self, line: str) -> None:
        if not line.strip() or line.lstrip().startswith("#") or NOT_RUN_HERE.match(line):
            return
        words = shlex.split(line, comments=True)
        target = None
        if ">" in words:
            words, (target,) = words[: words.index(">")], words[words.index(">") + 1 :]
        piped = ""
        while words:
            stage = words[: words.index("|")] if "|" in words else words
            words = words[len(stage) + 1 :]
            assert stage[:2] == ["python", "manage.py"], f"not a kind this test knows: {line!r}"
            if stage[2] in PROJECT_COMMANDS:
                return
            assert stage[2].startswith("billing_"), line
            piped = self.command(stage[2:], stdin=piped)
        if target is not None:
            Path(self.cwd, target).write_text(piped)

    def command(self, words: list[str], *, stdin: str) -> str:
        """One manage.py command in the page's directory; what it printed."""
        out, saved = io.StringIO(), (os.getcwd(), sys.stdin)
        os.chdir(self.cwd)
        sys.stdin = io.StringIO(stdin)
        try:
            call_command(*words, stdout=out)
        finally:
            os.chdir(saved[0])
            sys.stdin = saved[1]
        return out.getvalue()

    def host_file(self, path: str, text: str) -> None:
        if path.endswith("settings.py"):
            self.settings_file(text)
            return
        assert not path.endswith("models.py"), "models need a migrate: see test_install.py"
        name = path.removesuffix(".py").replace("/", ".")
        module = sys.modules.get(name)
        if module is None:
            module = self.module(name)
            if name.endswith(".urls"):
                exec(STARTPROJECT_URLS, module.__dict__)
        exec(compile(text, path, "exec"), module.__dict__)
        if name.endswith(".urls"):
            self.apply(ROOT_URLCONF=name)
            clear_url_caches()

    def module(self, name: str) -> types.ModuleType:
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            dotted = ".".join(parts[:depth])
            if dotted not in sys.modules:
                sys.modules[dotted] = types.ModuleType(dotted)
                sys.modules[dotted].__path__ = []  # type: ignore[attr-defined]
                self.modules.append(dotted)
        return sys.modules[name]

    def settings_file(self, text: str) -> None:
        seeded = {
            name: copy.deepcopy(getattr(settings, name))
            for name in ("INSTALLED_APPS", "MIDDLEWARE", "DATABASES", "CACHES")
        }
        found: dict[str, object] = dict(seeded)
        exec(compile(text, "settings.py", "exec"), found)
        names = {k: v for k, v in found.items() if k.isupper()}
        assert set(names["INSTALLED_APPS"]) <= set(settings.INSTALLED_APPS)
        assert set(names["MIDDLEWARE"]) <= set(settings.MIDDLEWARE)
        billing = {k: v for k, v in names.items() if k.startswith("BILLING_")}
        unknown = {k for k in billing if k.removeprefix("BILLING_") not in DEFAULTS}
        assert not unknown, f"no such setting: {unknown}"
        if "CELERY_BEAT_SCHEDULE" in names:
            from billing_app import tasks

            known = {task.name for task in vars(tasks).values() if hasattr(task, "delay")}
            scheduled = {entry["task"] for entry in names["CELERY_BEAT_SCHEDULE"].values()}
            assert scheduled <= known
        self.apply(**billing)
        errors = [m for m in checks.run_checks() if (m.id or "").startswith("billing_app.")]
        assert errors == []

    def apply(self, **values: object) -> None:
        override = override_settings(**values)
        override.enable()
        self.overrides.append(override)

    def close(self) -> None:
        for override in reversed(self.overrides):
            override.disable()
        for name in self.modules:
            sys.modules.pop(name, None)
        clear_url_caches()
        shutil.rmtree(self.cwd, ignore_errors=True)


@pytest.mark.django_db
@pytest.mark.parametrize("page", pages())
def test_every_sample_of_the_page_runs(page, stripe_stub):
    if page in FOLLOWED_BY_INSTALL:
        pytest.skip("followed in a fresh project by tests/test_install.py")
    if not customer_is_user():
        pytest.skip("the samples bill users, as a fresh project does")
    runner = Page()
    try:
        for block in blocks_of(DOCS / page):
            runner.run(block.lang, block.text)
    finally:
        runner.close()


def test_the_readmes_other_samples_parse():
    for block in blocks_of(README):
        if block.lang == "json":
            json.loads(block.text)
        assert block.lang in ("sh", "python", "json"), block.lang


def test_the_readme_counts_the_settings_a_host_adds():
    """ "three settings: five apps, one middleware, one dj-stripe setting", as the block has."""
    import ast

    (block,) = [b for b in blocks_of(README) if b.first_line == "# mysite/settings.py"]
    tree = ast.parse(block.text)
    names = [
        node.target.id if isinstance(node, ast.AugAssign) else node.targets[0].id
        for node in tree.body
    ]
    assert names == ["INSTALLED_APPS", "MIDDLEWARE", "DJSTRIPE_FOREIGN_KEY_TO_FIELD"]
    apps, middleware = (len(node.value.elts) for node in tree.body[:2])
    assert (apps, middleware) == (5, 1)
    prose = " ".join(README.read_text().split())
    assert "three settings: five apps, one middleware, one dj-stripe setting" in prose


# --- the reference lists what the code has --------------------------------------------


def table_names(page: str, pattern: str) -> set[str]:
    return set(re.findall(pattern, (DOCS / page).read_text(), re.MULTILINE))


def test_settings_reference_lists_every_setting():
    listed = table_names("reference/settings.md", r"^\| `BILLING_(\w+)` \|")
    assert listed == set(DEFAULTS)


def test_checks_reference_lists_every_check():
    source = (ROOT / "billing_app" / "checks.py").read_text()
    assert table_names("reference/checks.md", r"^\| `(billing_app\.[EW]\d{3})` \|") == set(
        re.findall(r'"(billing_app\.[EW]\d{3})"', source)
    )


def test_commands_reference_lists_every_command():
    listed = table_names("reference/commands.md", r"^\| `(billing_\w+)")
    assert listed == {name for name, app in get_commands().items() if app == "billing_app"}


def routes(patterns, prefix="/") -> set[str]:
    found = set()
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            found |= routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            found.add(re.sub(r"<[^>]+>", "<>", route))
    return found


@override_settings(ROOT_URLCONF="billing_app.urls")
def test_api_reference_lists_every_endpoint():
    clear_url_caches()
    try:
        served = routes(get_resolver().url_patterns)
    finally:
        clear_url_caches()
    listed = {
        re.sub(r"<[^>]+>", "<>", path)
        for path in table_names("reference/api.md", r"^\| [A-Z, ]+ \| `(/[^`]+)` \|")
    }
    assert listed == served


def test_errors_reference_lists_every_refusal_code():
    from billing_app import exceptions

    codes = {
        kind.code
        for kind in vars(exceptions).values()
        if isinstance(kind, type) and issubclass(kind, exceptions.CallRefused)
    } - {"refused"}
    listed = table_names("reference/errors.md", r"^\| \d{3} \| `([a-z_]+)` \|")
    assert listed == codes | {"usage_limit_exceeded"}


def test_every_page_is_in_the_nav():
    def flatten(entries):
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            if isinstance(value, list):
                yield from flatten(value)
            else:
                yield value

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    assert sorted(flatten(nav)) == pages()
