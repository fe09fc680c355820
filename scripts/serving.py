"""Serving the demo project as in production, for the measurements of scripts/ (loopback only).

A database prepared as the owner (created if missing, migrated, the app role
granted), and gunicorn serving it as the app role with DEBUG off.
"""

import http.client
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# gunicorn serves plain HTTP on loopback with the production settings (DEBUG off: HTTPS only,
# behind a TLS-terminating proxy); every request sends what that proxy would.
PROXY_HEADERS = {"X-Forwarded-Proto": "https"}
# The demo project's own tables its serving role needs beside the app's.
DEMO_APPS = ("auth", "contenttypes", "sessions", "admin", "authtoken")


def app_url(owner_url, app_role):
    """``owner_url`` with the app role as the user (trusted local connection, no password)."""
    parts = urlsplit(owner_url)
    return urlunsplit((parts.scheme, f"{app_role}@{parts.hostname}:{parts.port or 5432}", parts.path, "", ""))


# The served processes' secret, and the one `migrate` / `grant_app_role` derive the Row-Level Security
# binding's key from: they must agree, or the served app role sees no row (docs/security.md).
SECRET_KEY = "loopback-measurement-only-not-a-secret-" + "x" * 32


def manage(*args, database_url):
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SECRET_KEY": SECRET_KEY}
    command = [sys.executable, "manage.py", *args]
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def prepare_database(owner_url, app_role):
    """Create the database if missing, migrate it and grant ``app_role``, as the owner."""
    parts = urlsplit(owner_url)
    name = parts.path.lstrip("/")
    maintenance = urlunsplit((parts.scheme, parts.netloc, "/postgres", "", ""))
    with psycopg.connect(maintenance, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    print(f"migrating {name} and granting {app_role} (as the owner)", flush=True)
    manage("migrate", "--noinput", database_url=owner_url)
    manage("grant_app_role", app_role, "--extra-app", *DEMO_APPS, database_url=owner_url)


def start_gunicorn(
    *, database_url, port, workers=1, threads=2, env=None, app_dir=ROOT, timeout=300, log=None
):
    """gunicorn serving ``app_dir``'s demo on loopback, DEBUG off, once it answers: ``(process, command)``.

    ``log``: a file for the server's own output (its warnings and tracebacks), else this terminal.
    """
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "DJANGO_ALLOWED_HOSTS": HOST,
        # The measurements send more than a user would: the throttle has its own tests.
        "DJANGO_ANALYTICS_THROTTLE_RATE": "100000000/minute",
        **(env or {}),
    }
    environment = {name: value for name, value in environment.items() if value is not None}
    command = [
        str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application", "--bind", f"{HOST}:{port}",
        "--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads),
        "--timeout", str(timeout), "--log-level", "warning",
    ]
    # gunicorn puts its working directory first on sys.path: the app served is app_dir's.
    server = subprocess.Popen(command, cwd=app_dir, env=environment, stdout=log, stderr=log)
    wait_until_serving(server, port)
    return server, command


def wait_until_serving(server, port, timeout=30):
    """Until gunicorn answers on HOST:``port``; stops it and exits when it does not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/api/schema/", headers=PROXY_HEADERS)
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited with {server.returncode}")
    server.terminate()
    raise SystemExit(f"gunicorn did not answer on {HOST}:{port} within {timeout} s")


def stop(server):
    server.terminate()
    server.wait(timeout=30)


def shown(command):
    """The gunicorn command line for a report, without this machine's paths."""
    return " ".join(Path(part).name if part.startswith("/") else part for part in command)


def git_copy(ref, directory):
    """A clean copy of ``ref`` of this repository in ``directory`` (git archive); its short commit."""
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, check=True, capture_output=True)
    return commit.stdout.decode().strip()
