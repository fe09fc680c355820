"""
The wheel in a fresh host project: build, check, install outside the source tree, smoke-test the host.

    python scripts/host_smoke.py [--host-dir examples/host] [--settings host.settings]
                                 [--postgres-url postgres://user@host:5432/name] [--no-sqlite] [--keep]

`make host-smoke` runs it (CI too, on both databases). Steps:

1. copies the repository's files (tracked and untracked, not ignored) to a
   temporary directory and builds the wheel there with ``pip wheel`` (so no stale
   ``build/`` of the working tree can slip into it);
2. checks the wheel's contents and metadata (``scripts/check_wheel.py``);
3. creates a virtualenv in that temporary directory, outside the source tree, and
   installs the wheel with its ``postgresql`` extra, pytest and pytest-django:
   nothing of the repository is on ``sys.path`` there (the suite checks it);
4. copies the host project (``--host-dir``, settings module ``--settings``) to the
   temporary directory and, for each database (SQLite, and PostgreSQL when
   ``--postgres-url`` names one, created if missing and emptied first): ``migrate``,
   ``check``, ``makemigrations --check``, ``escalation_report``, then the host's
   own pytest suite (its ``pytest.ini``) against that database. On PostgreSQL also
   ``grant_app_role`` (with the host's own apps as extras) and ``grant_cross_account_role``,
   then, as the app role: ``escalation_report`` refused (it cannot read across accounts,
   and says so), and with the cross-account alias (``--rls-settings``) ``check --database``
   (no warning, no missing grant) and ``escalation_report``.

Exits non-zero at the first failure, saying which step failed. Standard library only.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_wheel import wheel_problems  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HOST_REQUIREMENTS = ["pytest>=8.0", "pytest-django>=4.9"]
APP_ROLE = "flowpilot_app"
CROSS_ACCOUNT_ROLE = "flowpilot_cross_account"
# The stock startproject's apps whose tables a role serving the whole host needs.
HOST_APPS = ["auth", "contenttypes", "sessions", "admin"]


class StepFailed(Exception):
    pass


def run(command, *, cwd=None, env=None, label):
    print(f"== {label}", flush=True)
    started = time.monotonic()
    result = subprocess.run(command, cwd=cwd, env=env)
    if result.returncode != 0:
        raise StepFailed(f"{label}: exit status {result.returncode} ({' '.join(map(str, command))})")
    print(f"   ({time.monotonic() - started:.1f} s)", flush=True)


def run_refused(command, *, cwd=None, env=None, label, saying):
    """``command`` must fail, with ``saying`` in its error output."""
    print(f"== {label}", flush=True)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode == 0 or saying not in result.stderr:
        raise StepFailed(f"{label}: expected a refusal saying {saying!r}, got exit status "
                         f"{result.returncode}: {result.stderr.strip() or result.stdout.strip()}")
    print(f"   refused: {result.stderr.strip().splitlines()[-1]}", flush=True)


def as_role(url, role):
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{role}@{parts.hostname}:{parts.port or 5432}", parts.path, "", ""))


def source_copy(destination):
    """The repository's files as a clone would have them, plus uncommitted ones (not ignored)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, check=True, capture_output=True,
        ).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        listed = None
    if listed is None:
        ignore = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                        "db.sqlite3", ".pytest_cache", ".hypothesis", "staticfiles")
        shutil.copytree(ROOT, destination, ignore=ignore)
        return destination
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def build_wheel(work):
    source = source_copy(work / "source")
    dist = work / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", dist, source],
        label="Build the wheel (pip wheel, from a clean copy of the repository)")
    [wheel] = dist.glob("*.whl")
    problems = wheel_problems(wheel, source=source)
    for problem in problems:
        print(f"   wheel check: {problem}", file=sys.stderr)
    if problems:
        raise StepFailed(f"the wheel {wheel.name} failed its check")
    print(f"== Wheel check: {wheel.name} holds only flowpilot_analytics/ and its dist-info", flush=True)
    return wheel


def make_virtualenv(work, wheel):
    venv = work / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    run([base_python, "-m", "venv", venv], label=f"A fresh virtualenv outside the source tree: {venv}")
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "--quiet", f"{wheel}[postgresql]", *HOST_REQUIREMENTS],
        label="Install the wheel (with its postgresql extra), pytest and pytest-django into it")
    return python


def reset_postgres_database(python, url):
    """Creates the database ``url`` names, dropping it first (with its pytest twin) when present."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    maintenance = urlunsplit((parts.scheme, parts.netloc, "/postgres", "", ""))
    script = (
        "import sys, psycopg\n"
        "url, name = sys.argv[1:]\n"
        "with psycopg.connect(url, autocommit=True) as conn:\n"
        "    for db in (f'test_{name}', name):\n"
        "        conn.execute(f'DROP DATABASE IF EXISTS \"{db}\"')\n"
        "    conn.execute(f'CREATE DATABASE \"{name}\"')\n"
    )
    run([python, "-c", script, maintenance, name], label=f"PostgreSQL database {name}: created afresh")


def smoke(python, host, *, settings, rls_settings, database_url, label):
    env = {
        key: value for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "DJANGO_SETTINGS_MODULE", "DATABASE_URL", "HOST_DATABASE_URL",
                       "HOST_CROSS_ACCOUNT_DATABASE_URL", "VIRTUAL_ENV", "PYTHONHOME"}
    }
    env.update({
        "PATH": f"{python.parent}{os.pathsep}{env.get('PATH', '')}",
        "DJANGO_SETTINGS_MODULE": settings,
        "FLOWPILOT_SOURCE_TREE": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    if database_url:
        env["HOST_DATABASE_URL"] = database_url
    sqlite_file = host / "db.sqlite3"
    if sqlite_file.exists():
        sqlite_file.unlink()
    manage = [python, "manage.py"]
    run([*manage, "migrate", "--noinput", "-v", "0"], cwd=host, env=env, label=f"[{label}] migrate")
    run([*manage, "check", "--fail-level", "WARNING"], cwd=host, env=env, label=f"[{label}] check")
    run([*manage, "makemigrations", "--check", "--dry-run", "-v", "0"], cwd=host, env=env,
        label=f"[{label}] no migration missing")
    run([*manage, "escalation_report", "--format", "json"], cwd=host, env=env,
        label=f"[{label}] escalation_report")
    if database_url:
        run([*manage, "grant_app_role", APP_ROLE, "--extra-app", *HOST_APPS], cwd=host, env=env,
            label=f"[{label}] grant_app_role {APP_ROLE} --extra-app {' '.join(HOST_APPS)}")
        run([*manage, "grant_cross_account_role", CROSS_ACCOUNT_ROLE], cwd=host, env=env,
            label=f"[{label}] grant_cross_account_role {CROSS_ACCOUNT_ROLE}")
        app = {**env, "HOST_DATABASE_URL": as_role(database_url, APP_ROLE)}
        run_refused([*manage, "escalation_report", "--format", "json"], cwd=host, env=app,
                    label=f"[{label}] escalation_report as {APP_ROLE} alone: refused, saying why",
                    saying="grant_cross_account_role")
        served = {**app, "DJANGO_SETTINGS_MODULE": rls_settings,
                  "HOST_CROSS_ACCOUNT_DATABASE_URL": as_role(database_url, CROSS_ACCOUNT_ROLE)}
        run([*manage, "check", "--database", "default", "--database", "cross_account",
             "--fail-level", "WARNING"], cwd=host, env=served,
            label=f"[{label}] check --database default --database cross_account, as {APP_ROLE} and "
                  f"{CROSS_ACCOUNT_ROLE}: bound by RLS, the cross-account faces able to read every account")
        run([*manage, "escalation_report", "--format", "json"], cwd=host, env=served,
            label=f"[{label}] escalation_report as {APP_ROLE}, reading through {CROSS_ACCOUNT_ROLE}")
    run([python, "-m", "pytest", "-q", "--create-db", f"--ds={settings}"], cwd=host, env=env,
        label=f"[{label}] the host's smoke suite")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--host-dir", type=Path, default=ROOT / "examples" / "host",
                        help="the host project to install into (default examples/host)")
    parser.add_argument("--settings", default="host.settings",
                        help="its settings module (default host.settings)")
    parser.add_argument("--rls-settings", default="host.settings_rls",
                        help="the settings module of the host served as the RLS-bound app role, with the "
                             "cross-account alias (default host.settings_rls)")
    parser.add_argument("--postgres-url", default=os.environ.get("HOST_SMOKE_DATABASE_URL") or None,
                        help="also run on this PostgreSQL database (created afresh; its name should "
                             "say it is the smoke suite's)")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)

    host_dir = args.host_dir.resolve()
    if not (host_dir / "manage.py").is_file():
        parser.error(f"--host-dir {host_dir} has no manage.py")
    work = Path(tempfile.mkdtemp(prefix="flowpilot-host-smoke-"))
    if ROOT == work or ROOT in work.parents:
        parser.error(f"the temporary directory {work} is inside the source tree; set TMPDIR elsewhere")
    started = time.monotonic()
    try:
        wheel = build_wheel(work)
        python = make_virtualenv(work, wheel)
        host = work / "host"
        shutil.copytree(host_dir, host, ignore=shutil.ignore_patterns("__pycache__", "db.sqlite3"))
        databases = [] if args.no_sqlite else [("SQLite", None)]
        if args.postgres_url:
            reset_postgres_database(python, args.postgres_url)
            databases.append(("PostgreSQL", args.postgres_url))
        if not databases:
            parser.error("nothing to run: --no-sqlite and no --postgres-url")
        for label, url in databases:
            smoke(python, host, settings=args.settings, rls_settings=args.rls_settings, database_url=url,
                  label=label)
    except StepFailed as failure:
        print(f"FAIL: {failure}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"   kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    ran = " and ".join(label for label, _ in databases)
    elapsed = time.monotonic() - started
    print(f"Host smoke passed on {ran} ({host_dir.name}, {args.settings}) in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
