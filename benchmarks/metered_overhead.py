"""Benchmark 1 of issue 3: metered overhead.

Starts a throwaway PostgreSQL, migrates, creates a tenant with a huge seo quota, serves
project + benchmark views with gunicorn (2 workers), then loads three views from a
separate process and prints requests/s:

    unmetered  POST /bench/unmetered/  demo view, tenant token checked, no metering
    metered    POST /demo/seo/         demo view with @metered + QuotaMiddleware
    floor      POST /bench/floor/      token check + one raw SQL statement (counter + event)

Run from the repository root:  .venv/bin/python benchmarks/metered_overhead.py
Options: --seconds 10 --warmup 2 --connections 8 --rounds 2
"""

import argparse
import atexit
import glob
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
GUNICORN = str(ROOT / ".venv" / "bin" / "gunicorn")
SETTINGS = "benchmarks.settings"
VIEWS = {
    "unmetered": "/bench/unmetered/",
    "metered": "/demo/seo/",
    "floor": "/bench/floor/",
}
TARGET = 0.8  # metered >= TARGET x floor


# --- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_pg(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


def pg_bin() -> str:
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(f"{directory}/initdb", os.X_OK):
            return directory
    sys.exit("PostgreSQL not found: install the Debian package postgresql (see scripts/test).")


def start_postgres() -> str:
    """A durability-off server in a temporary directory; returns its DATABASE_URL."""
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
    options = (
        f"-h 127.0.0.1 -p {port} -k {pgdir} -c fsync=off -c synchronous_commit=off "
        "-c full_page_writes=off -c max_connections=300"
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
    return f"postgres://postgres@127.0.0.1:{port}/billing"


def prepare_database() -> str:
    """Migrate, then a tenant on a plan with huge quotas; returns the tenant token."""
    print("Migrating (dj-stripe takes about a minute)...", flush=True)
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True)
    import django

    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    django.setup()
    from django.db import connections

    from billing_app import services

    huge = 10**15
    services.plan_upsert(key="bench", name="Benchmark", quotas={"seo": huge, "aeo": huge})
    tenant = services.tenant_create(email="bench@example.com")
    services.subscription_set(user=tenant, plan_key="bench", status="active")
    _, key = services.tenant_token_issue(user=tenant, name="bench")
    connections.close_all()
    return key


def start_gunicorn() -> int:
    port = free_port()
    server = subprocess.Popen(
        [GUNICORN, "-w", "2", "-b", f"127.0.0.1:{port}", "--log-level", "warning", "project.wsgi"],
        cwd=ROOT,
        start_new_session=True,
    )

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


# --- load generator (runs in its own process: --load) ----------------------------------


def load(port: int, path: str, token: str, seconds: float, warmup: float, connections: int) -> dict:
    """Each thread POSTs in a loop on one connection, reconnecting when the server closes
    it (gunicorn's sync workers close after every response). Counts 2xx after warm-up."""
    start = time.monotonic()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    counts = [[0, 0] for _ in range(connections)]  # ok, failed

    def worker(i: int) -> None:
        conn = None
        while (now := time.monotonic()) < stop_at:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("POST", path, body=b"{}", headers=headers)
                response = conn.getresponse()
                response.read()
                ok = 200 <= response.status < 300
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = None
            if now >= measure_from:
                counts[i][0 if ok else 1] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ok = sum(c[0] for c in counts)
    failed = sum(c[1] for c in counts)
    return {"rps": ok / seconds, "ok": ok, "failed": failed}


def run_load(port: int, name: str, token: str, args: argparse.Namespace) -> dict:
    output = subprocess.run(
        [
            sys.executable,
            __file__,
            "--load",
            str(port),
            VIEWS[name],
            token,
            str(args.seconds),
            str(args.warmup),
            str(args.connections),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output)


# --- main ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--load", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        port, path, token, seconds, warmup, conns = args.load
        print(json.dumps(load(int(port), path, token, float(seconds), float(warmup), int(conns))))
        return

    os.chdir(ROOT)
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    os.environ["DATABASE_URL"] = start_postgres()
    os.environ["DEBUG"] = "False"
    token = prepare_database()
    port = start_gunicorn()
    print(
        f"gunicorn -w 2 on port {port}; {args.connections} connections, "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s per view, {args.rounds} rounds",
        flush=True,
    )

    results: dict[str, list[float]] = {name: [] for name in VIEWS}
    names = list(VIEWS)
    for round_number in range(args.rounds):
        order = names if round_number % 2 == 0 else names[::-1]
        for name in order:
            result = run_load(port, name, token, args)
            results[name].append(result["rps"])
            print(
                f"  round {round_number + 1} {name:9s} {result['rps']:8.1f} req/s "
                f"({result['ok']} ok, {result['failed']} failed)",
                flush=True,
            )

    rps = {name: sum(values) / len(values) for name, values in results.items()}
    print("\nMetered overhead (mean of rounds)")
    for name in names:
        print(f"  {name:9s} {rps[name]:8.1f} req/s   {VIEWS[name]}")
    vs_unmetered = rps["metered"] / rps["unmetered"]
    vs_floor = rps["metered"] / rps["floor"]
    print(f"  metered / unmetered = {vs_unmetered:.2f}")
    print(f"  metered / floor     = {vs_floor:.2f}")
    verdict = "MET" if vs_floor >= TARGET else "NOT MET"
    print(f"  target metered >= {TARGET} x floor: {verdict}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
