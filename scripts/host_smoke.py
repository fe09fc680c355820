"""
The wheel in a fresh host project: build, check, install outside the source tree, smoke-test the host.

    python scripts/host_smoke.py [--host-dir examples/host] [--settings host.settings]
                                 [--rls-settings host.settings_rls] [--extra-app APP ...]
                                 [--cross-account-role ROLE] [--compare-with DIR:SETTINGS]
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
   temporary directory, with ``examples/smoke_kit`` (what every host's suite shares)
   on its path, and, for each database (SQLite, and PostgreSQL when ``--postgres-url``
   names one, created if missing and emptied first): ``migrate``, ``check``,
   ``makemigrations --check``, ``metric_indexes`` then ``metric_indexes --apply`` (the
   indexes a host's own tables lack), ``escalation_report``, then the host's own
   pytest suite (its ``pytest.ini``) against that database. On PostgreSQL also
   ``grant_app_role`` (with ``--extra-app``: the host's own apps) and, when the
   cross-account role is the app's, ``grant_cross_account_role``; then, as the app
   role: ``escalation_report`` refused (it cannot read across accounts, and says so),
   and with the cross-account alias (``--rls-settings``, connecting as
   ``--cross-account-role``) ``check --database`` (no warning: RLS binds the app role,
   the alias reads every account, no index missing), ``escalation_report``, and the
   host's tests marked ``rls_settings`` under those settings;
5. with ``--compare-with DIR:SETTINGS`` (another host, e.g. examples/host with the
   app's own models): on each database, that host's ``smoke/test_same_figures.py``
   too, on a database of its own, and the two dumps of the shared scenario
   (``smoke_kit/scenario.json``) must be equal: the same figures, whatever the
   models are called.

Exits non-zero at the first failure, saying which step failed. Standard library only.
"""

import argparse
import difflib
import json
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
SMOKE_KIT = ROOT / "examples" / "smoke_kit"
HOST_REQUIREMENTS = ["pytest>=8.0", "pytest-django>=4.9"]
APP_ROLE = "flowpilot_app"
CROSS_ACCOUNT_ROLE = "flowpilot_cross_account"
# The stock startproject's apps whose tables a role serving the whole host needs.
HOST_APPS = ["auth", "contenttypes", "sessions", "admin"]


class StepFailed(Exception):
    pass


# pytest's exit status when no test was selected (a host without tests of that mark).
NO_TESTS = 5


def run(command, *, cwd=None, env=None, label, accept=()):
    print(f"== {label}", flush=True)
    started = time.monotonic()
    result = subprocess.run(command, cwd=cwd, env=env)
    if result.returncode != 0 and result.returncode not in accept:
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


def with_suffix(url, suffix):
    """The URL of the database named like ``url``'s with ``suffix``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path + suffix, "", ""))


def host_env(python, shared, *, settings, database_url):
    """The environment of a host's commands: its settings, its database, the shared smoke kit on the path."""
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
        "PYTHONPATH": str(shared),
    })
    if database_url:
        env["HOST_DATABASE_URL"] = database_url
    return env


def smoke(python, host, shared, *, settings, rls_settings, database_url, label, extra_apps,
          cross_account_role, dump):
    env = host_env(python, shared, settings=settings, database_url=database_url)
    sqlite_file = host / "db.sqlite3"
    if sqlite_file.exists():
        sqlite_file.unlink()
    manage = [python, "manage.py"]
    run([*manage, "migrate", "--noinput", "-v", "0"], cwd=host, env=env, label=f"[{label}] migrate")
    run([*manage, "check", "--fail-level", "WARNING"], cwd=host, env=env, label=f"[{label}] check")
    run([*manage, "makemigrations", "--check", "--dry-run", "-v", "0"], cwd=host, env=env,
        label=f"[{label}] no migration missing")
    run([*manage, "metric_indexes"], cwd=host, env=env,
        label=f"[{label}] metric_indexes: the indexes the metric needs and the host's tables lack")
    run([*manage, "metric_indexes", "--apply"], cwd=host, env=env, label=f"[{label}] metric_indexes --apply")
    run([*manage, "escalation_report", "--format", "json"], cwd=host, env=env,
        label=f"[{label}] escalation_report")
    if database_url:
        run([*manage, "grant_app_role", APP_ROLE, "--extra-app", *extra_apps], cwd=host, env=env,
            label=f"[{label}] grant_app_role {APP_ROLE} --extra-app {' '.join(extra_apps)}")
        if cross_account_role == CROSS_ACCOUNT_ROLE:
            run([*manage, "grant_cross_account_role", CROSS_ACCOUNT_ROLE], cwd=host, env=env,
                label=f"[{label}] grant_cross_account_role {CROSS_ACCOUNT_ROLE}")
        app = {**env, "HOST_DATABASE_URL": as_role(database_url, APP_ROLE)}
        run_refused([*manage, "escalation_report", "--format", "json"], cwd=host, env=app,
                    label=f"[{label}] escalation_report as {APP_ROLE} alone: refused, saying why",
                    saying="CROSS_ACCOUNT_DB_ALIAS")
        served = {**app, "DJANGO_SETTINGS_MODULE": rls_settings,
                  "HOST_CROSS_ACCOUNT_DATABASE_URL": as_role(database_url, cross_account_role)}
        run([*manage, "check", "--database", "default", "--database", "cross_account",
             "--fail-level", "WARNING"], cwd=host, env=served,
            label=f"[{label}] check --database default --database cross_account, as {APP_ROLE} and "
                  f"{cross_account_role}: bound by RLS, the cross-account faces able to read every account")
        run([*manage, "escalation_report", "--format", "json"], cwd=host, env=served,
            label=f"[{label}] escalation_report as {APP_ROLE}, reading through {cross_account_role}")
    index_dump = dump.with_name(f"{dump.stem}-first-action-index.json")
    run([python, "-m", "pytest", "-q", "--create-db", f"--ds={settings}"], cwd=host,
        env={**env, "HOST_SMOKE_DUMP": str(dump), "HOST_SMOKE_DUMP_FIRST_ACTION_INDEX": str(index_dump)},
        label=f"[{label}] the host's smoke suite")
    if index_dump.exists():
        # The host's suite asked the scenario again with the first-action index on (PostgreSQL).
        print(f"== [{label}] the answers with the first-action index equal those without", flush=True)
        compare(dump, index_dump, "without the index", "with the index",
                failure=f"[{label}] the first-action index changes the host's answers")
    if database_url:
        served_suite = {**env, "DJANGO_SETTINGS_MODULE": rls_settings,
                        "HOST_CROSS_ACCOUNT_DATABASE_URL": as_role(database_url, cross_account_role)}
        run([python, "-m", "pytest", "-q", "--create-db", f"--ds={rls_settings}", "-m", "rls_settings"],
            cwd=host, env=served_suite, label=f"[{label}] the host's tests served as {APP_ROLE}, with the "
                                              f"cross-account alias ({rls_settings})", accept=(NO_TESTS,))


def compare(expected, actual, expected_name, actual_name, *, failure):
    """The two dumps must be equal (else the start of their diff, and ``failure``); returns the answers."""
    theirs, ours = expected.read_text(encoding="utf-8"), actual.read_text(encoding="utf-8")
    if ours != theirs:
        diff = difflib.unified_diff(theirs.splitlines(), ours.splitlines(), expected_name, actual_name,
                                    lineterm="", n=2)
        print("\n".join(list(diff)[:80]), file=sys.stderr)
        raise StepFailed(failure)
    return json.loads(ours)


def same_figures(python, reference, shared, *, settings, database_url, label, dump, reference_dump):
    """The reference host's scenario, on a database of its own; its dump must equal the host's."""
    env = host_env(python, shared, settings=settings, database_url=database_url)
    sqlite_file = reference / "db.sqlite3"
    if sqlite_file.exists():
        sqlite_file.unlink()
    run([python, "-m", "pytest", "-q", "--create-db", f"--ds={settings}", "smoke/test_same_figures.py"],
        cwd=reference, env={**env, "HOST_SMOKE_DUMP": str(reference_dump)},
        label=f"[{label}] the shared scenario with {reference.name}'s models ({settings})")
    print(f"== [{label}] the two hosts' answers to the scenario are equal", flush=True)
    answers = compare(reference_dump, dump, reference.name, "this host",
                      failure=f"[{label}] the host's answers differ from {reference.name}'s for the same scenario")
    print(f"   equal: {len(answers['api'])} API questions, {len(answers['export'])} exports cut and resumed "
          f"({sum(len(item['answers']) for item in answers['export'])} parts), {len(answers['dashboard'])} "
          f"dashboard pages, the admin page's {len(answers['widget']['cells'])} cells, the report's "
          f"{len(answers['report'])} accounts", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--host-dir", type=Path, default=ROOT / "examples" / "host",
                        help="the host project to install into (default examples/host)")
    parser.add_argument("--settings", default="host.settings",
                        help="its settings module (default host.settings)")
    parser.add_argument("--rls-settings", default="host.settings_rls",
                        help="the settings module of the host served as the RLS-bound app role, with the "
                             "cross-account alias (default host.settings_rls)")
    parser.add_argument("--extra-app", dest="extra_apps", action="extend", nargs="+", default=None,
                        metavar="APP_LABEL",
                        help=f"the host's apps served as the app role (default: {' '.join(HOST_APPS)})")
    parser.add_argument("--cross-account-role", default=CROSS_ACCOUNT_ROLE,
                        help=f"the role the cross-account alias connects as (default {CROSS_ACCOUNT_ROLE}, "
                             "made by grant_cross_account_role; another is the host's own)")
    parser.add_argument("--compare-with", metavar="DIR:SETTINGS",
                        help="another host (e.g. examples/host:host.settings) whose answers to the shared "
                             "scenario must equal this host's")
    parser.add_argument("--postgres-url", default=os.environ.get("HOST_SMOKE_DATABASE_URL") or None,
                        help="also run on this PostgreSQL database (created afresh; its name should "
                             "say it is the smoke suite's)")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)

    host_dir = args.host_dir.resolve()
    if not (host_dir / "manage.py").is_file():
        parser.error(f"--host-dir {host_dir} has no manage.py")
    reference_dir = reference_settings = None
    if args.compare_with:
        directory, _, reference_settings = args.compare_with.partition(":")
        reference_dir = Path(directory).resolve()
        if not reference_settings or not (reference_dir / "smoke" / "test_same_figures.py").is_file():
            parser.error(f"--compare-with {args.compare_with}: give DIR:SETTINGS of a host with "
                         "smoke/test_same_figures.py")
    work = Path(tempfile.mkdtemp(prefix="flowpilot-host-smoke-"))
    if ROOT == work or ROOT in work.parents:
        parser.error(f"the temporary directory {work} is inside the source tree; set TMPDIR elsewhere")
    started = time.monotonic()
    try:
        wheel = build_wheel(work)
        python = make_virtualenv(work, wheel)
        ignore = shutil.ignore_patterns("__pycache__", "db.sqlite3")
        host = work / "host"
        shutil.copytree(host_dir, host, ignore=ignore)
        shared = work / "shared"
        shutil.copytree(SMOKE_KIT, shared / SMOKE_KIT.name, ignore=ignore)
        reference = None
        if reference_dir is not None:
            reference = work / "reference"
            shutil.copytree(reference_dir, reference, ignore=ignore)
        databases = [] if args.no_sqlite else [("SQLite", None)]
        if args.postgres_url:
            reset_postgres_database(python, args.postgres_url)
            databases.append(("PostgreSQL", args.postgres_url))
        if not databases:
            parser.error("nothing to run: --no-sqlite and no --postgres-url")
        for label, url in databases:
            dump = work / f"answers-{label.lower()}.json"
            smoke(python, host, shared, settings=args.settings, rls_settings=args.rls_settings, database_url=url,
                  label=label, extra_apps=args.extra_apps or HOST_APPS, cross_account_role=args.cross_account_role,
                  dump=dump)
            if reference is not None:
                reference_url = None
                if url:
                    reference_url = with_suffix(url, "_reference")
                    reset_postgres_database(python, reference_url)
                same_figures(python, reference, shared, settings=reference_settings, database_url=reference_url,
                             label=label, dump=dump, reference_dump=work / f"reference-{label.lower()}.json")
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
