"""What every benchmark needs: a throwaway PostgreSQL (durable, as production runs it), one
migrate, gunicorn with 2 workers, and a load generator that runs in a separate process;
for side_by_side.py also Redis and the CPU time of each server's processes.

A benchmark script calls ``start()`` (PostgreSQL, environment, migrate, ``django.setup()``),
creates its data with the app's services or SQL, then ``start_gunicorn()``, and for each
measurement ``spawn_load(__file__, spec)``: that runs the script again as
``script --load -`` with the spec as JSON on standard input, and its ``main`` hands the
spec to ``load_child`` with a function building its requests. The child prints one JSON
object, which ``spawn_load`` returns.

What is missing is installed on first use: the ``bench`` extra of pyproject.toml into
.venv, and the Debian packages postgresql (and, for side_by_side.py, wrk and redis-server)
with apt-get, as root or through sudo.
"""

from __future__ import annotations

import atexit
import glob
import http.client
import importlib
import importlib.util
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
GUNICORN = str(ROOT / ".venv" / "bin" / "gunicorn")
PY_SPY = str(ROOT / ".venv" / "bin" / "py-spy")
SETTINGS = "benchmarks.settings"
WORKERS = 2
# PostgreSQL as production runs it: every commit durable. Printed by side_by_side.py.
POSTGRES_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "300",
}


# --- installing what is missing --------------------------------------------------------


def ensure_debian_package(command: str, package: str) -> str:
    """The path of ``command``, installing Debian's ``package`` first when it is missing
    (apt-get, as root or through sudo, as scripts/test installs postgresql)."""
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() == 0:
        sudo: list[str] = []
    elif shutil.which("sudo"):
        sudo = ["sudo"]
    else:
        sys.exit(
            f"{command} is missing and neither root nor sudo can install it: "
            f"install the Debian package {package} (apt-get install {package})."
        )
    print(f"Installing {package} (apt-get)...", flush=True)
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        done = subprocess.run([*sudo, *step], env=environment, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(
                f"Could not install {package} ({' '.join(step)} exited {done.returncode}):\n"
                f"{done.stderr.strip()[-2000:]}\nInstall it by hand: apt-get install {package}"
            )
    found = shutil.which(command)
    if not found:
        sys.exit(f"{package} is installed but {command} is still not on PATH.")
    return found


def ensure_bench_extra() -> None:
    """Install pyproject.toml's ``bench`` extra into .venv when part of it is missing."""
    missing = [
        name
        for name in ("gunicorn", "redis", "psycopg", "environ")
        if importlib.util.find_spec(name) is None
    ]
    if not missing and all(os.access(tool, os.X_OK) for tool in (GUNICORN, PY_SPY)):
        return
    with open(ROOT / "pyproject.toml", "rb") as file:
        requirements = tomllib.load(file)["project"]["optional-dependencies"]["bench"]
    print(f"Installing the bench extra ({', '.join(requirements)})...", flush=True)
    subprocess.run([PYTHON, "-m", "pip", "install", "--quiet", *requirements], check=True)
    importlib.invalidate_caches()


# --- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_pg(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


def pg_bin() -> str:
    for _ in range(2):
        for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
            if os.access(f"{directory}/initdb", os.X_OK):
                return directory
        # The binaries live outside PATH; pg_ctlcluster comes with the same install.
        ensure_debian_package("pg_ctlcluster", "postgresql")
    sys.exit("PostgreSQL not found: install the Debian package postgresql (see scripts/test).")


@dataclass
class Postgres:
    bindir: str
    datadir: str
    port: int

    def pid(self) -> int:
        """The postmaster's; its children are the backends and background processes."""
        with open(f"{self.datadir}/postmaster.pid") as file:
            return int(file.readline())


POSTGRES: Postgres | None = None


def start_postgres(*, durable: bool = True) -> str:
    """A server in a temporary directory; returns its DATABASE_URL. ``durable`` (the
    default): fsync, synchronous_commit and full_page_writes on, as production runs it;
    off (as scripts/test does) only for a figure that must leave the disk out."""
    global POSTGRES
    bindir = pg_bin()
    pgdir = tempfile.mkdtemp(prefix="billing-bench-pg.")
    if os.geteuid() == 0:
        shutil.chown(pgdir, "postgres")
    port = free_port()

    def stop() -> None:
        subprocess.run(
            as_pg(f"{bindir}/pg_ctl", "-D", f"{pgdir}/data", "-m", "immediate", "stop"),
            capture_output=True,
        )
        shutil.rmtree(pgdir, ignore_errors=True)

    atexit.register(stop)
    subprocess.run(
        as_pg(
            f"{bindir}/initdb",
            "-D",
            f"{pgdir}/data",
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        ),
        check=True,
        capture_output=True,
    )
    settings = dict(POSTGRES_SETTINGS)
    if not durable:
        settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
    options = f"-h 127.0.0.1 -p {port} -k {pgdir} " + " ".join(
        f"-c {name}={value}" for name, value in settings.items()
    )
    subprocess.run(
        as_pg(
            f"{bindir}/pg_ctl",
            "-D",
            f"{pgdir}/data",
            "-l",
            f"{pgdir}/log",
            "-w",
            "-o",
            options,
            "start",
        ),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        as_pg(
            f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "billing"
        ),
        check=True,
    )
    POSTGRES = Postgres(bindir, f"{pgdir}/data", port)
    return f"postgres://postgres@127.0.0.1:{port}/billing"


def start(
    *, count_queries: bool = False, durable: bool = True, redis_url: str | None = None
) -> None:
    """PostgreSQL, the environment gunicorn inherits, one migrate, then ``django.setup()``
    in this process so the script can create its data. With ``count_queries`` the served
    responses carry ``X-Bench-Queries`` (benchmarks/middleware.py); with ``redis_url``
    Django's cache is that Redis (benchmarks/settings.py), else a per-process LocMemCache."""
    ensure_bench_extra()
    os.chdir(ROOT)
    # The code beside this file, also when it is a copy of the repository (an editable
    # install of billing_app would otherwise point the subprocesses at the original).
    os.environ["PYTHONPATH"] = str(ROOT)
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    os.environ["DATABASE_URL"] = start_postgres(durable=durable)
    os.environ["DEBUG"] = "False"
    if count_queries:
        os.environ["BENCH_COUNT_QUERIES"] = "1"
    if redis_url:
        os.environ["BENCH_REDIS_URL"] = redis_url
    print("Migrating (dj-stripe takes about a minute)...", flush=True)
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True)
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()


def close_connections() -> None:
    from django.db import connections

    connections.close_all()


GUNICORN_PID: int | None = None  # the arbiter's; the workers are its children


def start_gunicorn(*, workers: int = WORKERS, worker_class: str = "sync") -> int:
    """gunicorn with ``workers`` workers (sync by default: one request at a time each, and
    the connection closed after every response) on a free port; returns the port."""
    global GUNICORN_PID
    close_connections()
    port = free_port()
    server = subprocess.Popen(
        [
            GUNICORN,
            "-w",
            str(workers),
            "-k",
            worker_class,
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "project.wsgi",
        ],
        cwd=ROOT,
        start_new_session=True,
    )
    GUNICORN_PID = server.pid

    def stop() -> None:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)

    atexit.register(stop)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return port
        except OSError:
            time.sleep(0.1)
    sys.exit("gunicorn did not start")


REDIS_PID: int | None = None


def start_redis() -> str:
    """Debian's redis-server on a free loopback port in a temporary directory, with no
    persistence (a cache); stopped at exit. Returns its URL."""
    global REDIS_PID
    binary = ensure_debian_package("redis-server", "redis-server")
    directory = tempfile.mkdtemp(prefix="billing-bench-redis.")
    port = free_port()
    server = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            directory,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            f"{directory}/log",
        ],
        start_new_session=True,
    )
    REDIS_PID = server.pid

    def stop() -> None:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(directory, ignore_errors=True)

    atexit.register(stop)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0"
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("redis-server did not start")


# --- CPU time of the servers' processes ------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, own CPU ticks, CPU ticks of its reaped children), from
    /proc/<pid>/stat: utime + stime, and cutime + cstime."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as file:
                text = file.read()
        except OSError:
            continue  # exited meanwhile
        fields = text[text.rindex(")") + 2 :].split()
        table[int(name)] = (
            int(fields[1]),
            int(fields[11]) + int(fields[12]),
            int(fields[13]) + int(fields[14]),
        )
    return table


def tree_cpu(table: dict[int, tuple[int, int, int]], pid: int, *, own: bool = True) -> float:
    """CPU seconds of ``pid``'s children (living, plus those it has reaped) and, with
    ``own``, of ``pid`` itself. A child that exits between two readings still counts in
    full: its time moves into the parent's reaped ticks."""
    if pid not in table:
        return 0.0
    _, own_ticks, reaped = table[pid]
    ticks = reaped + (own_ticks if own else 0)
    for parent, child_ticks, child_reaped in table.values():
        if parent == pid:
            ticks += child_ticks + child_reaped
    return ticks / CLOCK_TICKS


def system_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as file:
        values = [int(v) for v in file.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def sql(statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on the benchmark database from the script's process."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


# --- load generator (runs in its own process) ------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


# (connection index, request number on that connection) -> the request to send
RequestFor = Callable[[int, int], Request]
# (response, body) -> counts to add to the result's "counts"
Inspect = Callable[[http.client.HTTPResponse, bytes], dict[str, int]]


def drive(
    port: int,
    request_for: RequestFor,
    *,
    connections: int,
    seconds: float = 0.0,
    warmup: float = 0.0,
    per_connection: int | None = None,
    inspect: Inspect | None = None,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Each thread sends requests in a loop on one connection, reconnecting when the server
    closes it (gunicorn's sync workers close after every response).

    Time mode (``per_connection`` None): runs ``warmup + seconds``; statuses and latencies
    count requests started after the warm-up. Count mode: each thread sends exactly
    ``per_connection`` requests and all of them count. ``status_total`` always counts every
    request (status "0": no response), for checking the database afterwards; so do the
    ``counts`` of ``inspect``.
    """
    start = time.monotonic()
    measure_from = start + warmup
    stop_at = measure_from + seconds if per_connection is None else math.inf
    measured: list[Counter[str]] = [Counter() for _ in range(connections)]
    total: list[Counter[str]] = [Counter() for _ in range(connections)]
    counts: list[Counter[str]] = [Counter() for _ in range(connections)]
    latencies: list[list[float]] = [[] for _ in range(connections)]

    def worker(i: int) -> None:
        conn = None
        n = 0
        while (now := time.monotonic()) < stop_at and (
            per_connection is None or n < per_connection
        ):
            request = request_for(i, n)
            n += 1
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            began = time.perf_counter()
            try:
                conn.request(request.method, request.path, request.body, request.headers)
                response = conn.getresponse()
                body = response.read()
                status = str(response.status)
                if inspect is not None:
                    counts[i].update(inspect(response, body))
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                status = "0"
                conn.close()
                conn = None
            elapsed = time.perf_counter() - began
            total[i][status] += 1
            if now >= measure_from:
                measured[i][status] += 1
                latencies[i].append(elapsed)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - start
    times = sorted(t for per_thread in latencies for t in per_thread)
    status = sum(measured, Counter())
    ok = sum(n for code, n in status.items() if code.startswith("2"))
    return {
        "seconds": seconds if per_connection is None else wall,
        "ok": ok,
        "failed": sum(status.values()) - ok,
        "rps": ok / (seconds if per_connection is None else wall),
        "status": dict(status),
        "status_total": dict(sum(total, Counter())),
        "counts": dict(sum(counts, Counter())),
        "latency_ms": latency_summary(times),
    }


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def latency_summary(times: list[float]) -> dict[str, float]:
    return {
        "mean": 1000 * sum(times) / len(times) if times else math.nan,
        "p50": 1000 * percentile(times, 0.50),
        "p95": 1000 * percentile(times, 0.95),
        "p99": 1000 * percentile(times, 0.99),
        "max": 1000 * (times[-1] if times else math.nan),
    }


def spawn_load(script: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``script --load -`` in a new process, the spec as JSON on its standard input
    (a list of tokens may be longer than a command-line argument may be), and return the
    JSON it prints.

    ``spec`` needs ``port`` and ``connections``; ``seconds``, ``warmup``,
    ``per_connection`` as in ``drive``; anything else is for the script's requests."""
    completed = subprocess.run(
        [sys.executable, script, "--load", "-"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        sys.exit(f"load generator failed:\n{completed.stderr}")
    return json.loads(completed.stdout)  # type: ignore[no-any-return]


def load_child(
    spec_json: str,
    requests: Callable[[dict[str, Any]], tuple[RequestFor, Inspect | None]],
) -> None:
    """The ``--load`` side of ``spawn_load`` (``spec_json`` "-": read it from standard
    input): ``requests(spec)`` gives the request builder (and optional inspector); the
    result of ``drive`` is printed as JSON."""
    spec = json.loads(sys.stdin.read() if spec_json == "-" else spec_json)
    request_for, inspect = requests(spec)
    result = drive(
        spec["port"],
        request_for,
        connections=spec["connections"],
        seconds=spec.get("seconds", 0.0),
        warmup=spec.get("warmup", 0.0),
        per_connection=spec.get("per_connection"),
        inspect=inspect,
    )
    print(json.dumps(result))


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"
