"""The README's install section and quickstart, followed literally by a new user.

A fresh ``django-admin startproject mysite`` in a temporary directory gets exactly the
README's lines, read from README.md (so the README cannot drift from what works): its files
are appended to, its commands run, its ``manage.py shell`` session typed in. Under
``tests.settings_org`` the host bills organisations instead, following
docs/howto/organisations.md (an ``Organization`` keyed by UUID, seats, a quota per seat)
before the first migrate, as it says. The database is the suite's: a fresh PostgreSQL
database when ``DATABASE_URL`` names PostgreSQL, else the project's own SQLite file.

Then the project is served by ``runserver``, and the quickstart's ``@metered`` view and
``MeteredMixin`` view are called with the printed token until the quota refuses them; the
API docs page and every asset it loads are fetched from the server (nothing from a CDN);
``check`` and ``check --deploy`` report nothing but Django's own deployment advice about a
fresh project (DEBUG, SECRET_KEY, HTTPS).

One thing is not literal: ``pip install`` is not run; the checkout is put on
``PYTHONPATH`` of this interpreter, whose environment holds the same dependencies (the test
asserts the README's line installs this checkout with the ``postgres`` extra).

One migrate per database and variant: about two minutes in all on this machine, most of it
dj-stripe's migrations.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ORGANISATIONS = ROOT / "docs" / "howto" / "organisations.md"

pytestmark = pytest.mark.install


@dataclass
class Block:
    lang: str
    text: str
    heading: str

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0] if self.text else ""


def blocks_of(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, each with the heading it is under."""
    found, heading, lang, lines = [], "", None, []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if lang is None and line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif lang is None and stripped.startswith("```"):
            lang, lines = stripped[3:].strip(), []
        elif lang is not None and stripped == "```":
            found.append(Block(lang, textwrap.dedent("\n".join(lines)) + "\n", heading))
            lang = None
        elif lang is not None:
            lines.append(line)
    return found


def section(path: Path, heading: str) -> list[Block]:
    chosen = [block for block in blocks_of(path) if block.heading == heading]
    assert chosen, f"{path.name} has no code under {heading!r}"
    return chosen


def is_migrate(block: Block) -> bool:
    return block.lang == "sh" and "manage.py migrate" in block.text


class Host:
    """A project made by startproject, driven as its README says."""

    def __init__(self, directory: Path, database_url: str | None) -> None:
        self.dir = directory
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")
        }
        self.env["PYTHONPATH"] = str(ROOT)
        self.server: subprocess.Popen | None = None
        self.base = ""
        self.token = ""
        self.calls: list[str] = []
        self.run("python", "-m", "django", "startproject", "mysite", ".")
        if database_url:
            import environ

            # Not a README line: the suite's PostgreSQL instead of startproject's SQLite.
            config = environ.Env.db_url_config(database_url)
            with open(self.dir / "mysite" / "settings.py", "a") as file:
                file.write(f"\nDATABASES = {{'default': {config!r}}}\n")

    def run(self, *args: str, stdin: str | None = None, timeout: int = 600) -> str:
        if args[0] == "python":
            args = (sys.executable, *args[1:])
        done = subprocess.run(
            args,
            cwd=self.dir,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"{shlex.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def follow(self, block: Block) -> None:
        if block.lang == "python" and block.first_line == "# python manage.py shell":
            printed = self.run("python", "manage.py", "shell", stdin=block.text, timeout=120)
            self.token = printed.strip().splitlines()[-1]
            assert self.token.startswith("tk_"), printed
        elif block.lang == "python":
            target = block.first_line.removeprefix("# ").strip()
            assert re.fullmatch(r"[\w/]+\.py", target), f"which file? {block.first_line!r}"
            path = self.dir / target
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as file:
                file.write("\n" + block.text)
        elif block.lang == "sh":
            for line in block.text.splitlines():
                self.command(line.split("  #")[0].strip())
        else:
            raise AssertionError(f"no way to follow a {block.lang!r} block")

    def command(self, line: str) -> None:
        words = shlex.split(line, comments=True)
        if not words:
            return
        if words[:2] == ["pip", "install"]:
            assert words[2:] == ["/path/to/this/checkout[postgres]"], line
        elif words[:3] == ["python", "manage.py", "runserver"]:
            self.serve()
        elif words[0] == "curl":
            self.calls.append(line)
        elif re.fullmatch(r"TOKEN=tk_\.\.\.", line):
            assert self.token, "the token is printed before it is used"
        elif words[:2] == ["python", "manage.py"]:
            self.run(*words)
        else:
            raise AssertionError(f"The test does not know how to follow {line!r}")

    def serve(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=self.dir,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.get("/v1/docs/")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("runserver did not answer within a minute")

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.base + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(timeout=30)


@pytest.fixture
def database_url(transactional_db):
    """A fresh PostgreSQL database on the suite's server, or None for SQLite."""
    if connection.vendor != "postgresql":
        yield None
        return
    name = f"install_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield os.environ["DATABASE_URL"].rsplit("/", 1)[0] + f"/{name}"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# The how-to's organisation is keyed by UUID; a host's may be keyed by a string.
UUID_KEY = "    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)\n"
STRING_KEY = (
    "    id = models.CharField(primary_key=True, max_length=32, default=new_key, editable=False)\n"
)
ORGANISATIONS_KEYED = settings.SETTINGS_MODULE == "tests.settings_org"


def keyed_by_a_string(block: Block) -> Block:
    """The how-to's model with ``org_...`` string keys instead of UUIDs."""
    if UUID_KEY not in block.text:
        return block
    text = block.text.replace(UUID_KEY, STRING_KEY).replace(
        "class Organization(models.Model):",
        'def new_key():\n    return f"org_{uuid.uuid4().hex[:28]}"\n\n\n'
        "class Organization(models.Model):",
    )
    return Block(block.lang, text, block.heading)


@pytest.mark.parametrize("key", ["uuid", "string"] if ORGANISATIONS_KEYED else ["integer"])
def test_readme_install_and_quickstart_work_literally(tmp_path, database_url, key):
    organisations = settings.SETTINGS_MODULE == "tests.settings_org"
    install = section(README, "Install in your project")
    quickstart = section(README, "Quickstart: a metered view")
    shell = [b for b in quickstart if b.first_line == "# python manage.py shell"]
    files = [b for b in quickstart if b.lang == "python" and b not in shell]
    serve = [b for b in quickstart if b.lang == "sh"]
    if organisations:
        # The how-to's steps go before the README's migrate, as it says; its own shell
        # session subscribes an organisation instead of a user.
        install = [b for b in install if not is_migrate(b)]
        install += section(ORGANISATIONS, "The model and two settings")
        if key == "string":
            install = [keyed_by_a_string(block) for block in install]
            assert any(STRING_KEY in block.text for block in install)
        shell = section(ORGANISATIONS, "Seats, and quotas per seat")
        quota = 6
        assert "answer 200 six times, then 429" in ORGANISATIONS.read_text()
    else:
        quota = 3
        assert "The first three calls (of either view) answer 200" in README.read_text()
    assert sum(map(is_migrate, install)) == 1

    host = Host(tmp_path, database_url)
    try:
        for block in [*install, *files, *shell, *serve]:
            host.follow(block)
        paths = [re.search(r"http://127\.0\.0\.1:8000(/\S*)", call)[1] for call in host.calls]
        assert paths == ["/report/", "/api/report/"]
        assert all('-H "Authorization: Bearer $TOKEN"' in call for call in host.calls)

        authorized = {"Authorization": f"Bearer {host.token}"}
        answers = [host.get(paths[n % 2], **authorized) for n in range(quota + 2)]
        assert [status for status, _, _ in answers] == [200] * quota + [429, 429]
        assert json.loads(answers[0][2]) == {"report": "ready"}
        for _, headers, body in answers[quota:]:
            refusal = json.loads(body)
            assert refusal["error"] == "rate_limited"
            assert refusal["primitive"] == "reports"
            assert refusal["usage"] == {"current": quota, "limit": quota}
            assert int(headers["Retry-After"]) > 0
        for path in paths:
            status, headers, _ = host.get(path)
            assert status == 401, path
            assert headers["WWW-Authenticate"] == 'Bearer realm="billing"'

        # The API docs page, offline: every asset it loads comes from this server.
        status, _, page = host.get("/v1/docs/")
        assert status == 200
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.decode())
        assert len(assets) == 5
        for asset in assets:
            assert asset.startswith("/static/"), asset
            assert host.get(asset)[0] == 200, asset
        status, _, schema = host.get("/v1/schema/?format=json")
        assert status == 200
        assert "/billing/usage" in json.loads(schema)["paths"]
    finally:
        host.stop()

    assert "System check identified no issues" in host.run("python", "manage.py", "check")
    deploy = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=host.dir,
        env=host.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    ids = re.findall(r"^\?: \(([\w.]+)\)", deploy.stdout + deploy.stderr, re.MULTILINE)
    assert ids, deploy.stderr
    # Django's advice about a fresh startproject (DEBUG, SECRET_KEY, HTTPS), nothing else.
    assert [i for i in ids if not i.startswith("security.")] == []
