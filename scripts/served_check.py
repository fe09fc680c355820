"""
The served app under a hostile outside client: no 5xx but a JSON 503 with Retry-After.

Run by `make served-check` (CI runs it; needs PostgreSQL, about a minute). It:

1. prepares a database as the owner (created if missing, migrated, the app role
   granted, the demo data loaded afresh: `seed_demo --reset`);
2. serves it with gunicorn as the app role (two workers, DEBUG off, kept-alive
   database connections, the throttle lifted);
3. runs Schemathesis as an outside client against the served schema, once per
   caller (anonymous, viewer, engineer, admin, a member of two accounts, staff
   without membership), every request with ``Accept: text/html`` as a browser
   sends, and fails on any 5xx;
4. sends requests to every endpoint (JSON, the browsable API's HTML, CSV, the
   streamed drill-down export) from four clients while a second connection
   terminates the app role's backends every 50 ms (``pg_terminate_backend``),
   and fails on any 5xx but a 503 in JSON with ``Retry-After``, or a CSV that
   ends neither complete nor with its ``# Interrupted`` line; then checks that
   every endpoint answers 200 again;
5. writes the figures into docs/load-test.md (its ``served-check`` section) and
   exits non-zero on any failure.

With SERVED_CHECK_BASELINE set to a git ref (e.g. ``main``), step 4 runs also
against a clean copy of that ref, for comparison (its failures do not fail the run).
"""

import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.report_sections import write_section  # noqa: E402
from scripts.serving import (  # noqa: E402
    HOST, PROXY_HEADERS, app_url, git_copy, manage, prepare_database, shown, start_gunicorn, stop,
)

OWNER_URL = os.environ.get("SERVED_CHECK_OWNER_URL", "postgres://postgres@127.0.0.1:5432/flowpilot_served")
APP_ROLE = os.environ.get("SERVED_CHECK_APP_ROLE", "flowpilot_app")
PORT = int(os.environ.get("SERVED_CHECK_PORT", "8053"))
EXAMPLES = int(os.environ.get("SERVED_CHECK_EXAMPLES", "25"))
REQUESTS = int(os.environ.get("SERVED_CHECK_REQUESTS", "600"))
BASELINE = os.environ.get("SERVED_CHECK_BASELINE", "")
REPORT = ROOT / os.environ.get("SERVED_CHECK_REPORT", "docs/load-test.md")
# The servers' own output (a warning per 503, the traceback of any 500), kept out of the terminal.
SERVER_LOG = ROOT / os.environ.get("SERVED_CHECK_SERVER_LOG", "var/served-check-server.log")
SECTION = "served-check"

BASE = "/api/v1/analytics/flowpilot/escalations"
CALLERS = {
    "anonymous": None,
    "viewer": "northwind-viewer",
    "engineer": "northwind-engineer",
    "admin": "northwind-admin",
    "two accounts": "multi",
    "staff (no membership)": "staff",
}
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
# (path and query, Accept) the storm rotates over: every endpoint, every renderer.
STORM_REQUESTS = [
    (f"{BASE}?period=90d", "application/json"),
    (f"{BASE}?period=30d&compare=previous", BROWSER),
    (f"{BASE}/trend?period=90d", "text/csv"),
    (f"{BASE}/by-engineer?period=90d", BROWSER),
    (f"{BASE}/handoffs?period=90d&page_size=100", "application/json"),
    (f"{BASE}/handoffs?period=90d&format=csv", "*/*"),
]


def tokens():
    with psycopg.connect(OWNER_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT u.username, t.key FROM authtoken_token t JOIN auth_user u ON u.id = t.user_id"
        ).fetchall()
    return dict(rows)


def schemathesis(schema_path, token):
    """One Schemathesis run as one caller, every request with ``Accept: text/html``: (ok, statuses, html)."""
    with tempfile.TemporaryDirectory() as reports:
        har = Path(reports) / "run.har"
        command = [
            str(Path(sys.executable).parent / "schemathesis"), "run", str(schema_path),
            "--url", f"http://{HOST}:{PORT}", "--header", "Accept: text/html",
            *(part for name, value in PROXY_HEADERS.items() for part in ("--header", f"{name}: {value}")),
            "--checks", "not_a_server_error", "--max-examples", str(EXAMPLES), "--workers", "2",
            "--report", "har", "--report-har-path", str(har), "--no-color",
        ]
        if os.environ.get("CI"):
            command += ["--seed", "2026"]  # CI replays the same cases; elsewhere each run explores anew
        if token:
            command += ["--header", f"Authorization: Token {token}"]
        # Run where its cache (.schemathesis/) goes away with the reports.
        finished = subprocess.run(command, capture_output=True, text=True, cwd=reports)
        statuses, html = Counter(), 0
        for entry in json.loads(har.read_text())["log"]["entries"] if har.exists() else []:
            statuses[entry["response"]["status"]] += 1
            headers = {header["name"].lower(): header["value"] for header in entry["response"]["headers"]}
            content_type = headers.get("content-type", "")
            html += content_type.startswith("text/html")
    if finished.returncode != 0:
        print(finished.stdout[-4000:], finished.stderr[-2000:], sep="\n")
    return finished.returncode == 0, statuses, html


def storm(callers, *, database):
    """Requests from 4 clients while the app role's backends are terminated every 50 ms.

    ``callers``: ``[(token, extra query)]``, each sent every request of STORM_REQUESTS in turn.
    """
    plan = [(path + extra, accept, token) for token, extra in callers for path, accept in STORM_REQUESTS]
    lock, sent, stop_killing = threading.Lock(), [0], threading.Event()
    answers, problems, killed = Counter(), [], [0]

    def killer():
        with psycopg.connect(OWNER_URL, autocommit=True) as conn:
            while not stop_killing.wait(0.05):
                killed[0] += conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE usename = %s AND datname = %s AND pid <> pg_backend_pid()",
                    [APP_ROLE, database],
                ).fetchone()[0]

    def client():
        while True:
            with lock:
                if sent[0] >= REQUESTS:
                    return
                path, accept, token = plan[sent[0] % len(plan)]
                sent[0] += 1
            conn = http.client.HTTPConnection(HOST, PORT, timeout=60)
            try:
                headers = {**PROXY_HEADERS, "Authorization": f"Token {token}", "Accept": accept}
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    answers["transport: " + type(exc).__name__] += 1
                    problems.append(f"{path}: {type(exc).__name__}")
                continue
            finally:
                conn.close()
            kind = response.getheader("Content-Type", "").split(";")[0]
            verdict = judge(path, response.status, kind, response.getheader("Retry-After"), body)
            with lock:
                cut = " (ends # Interrupted)" if verdict == "interrupted" else ""
                answers[f"{response.status} {kind}{cut}"] += 1
                if verdict not in ("ok", "interrupted"):
                    problems.append(f"{path} [{accept}]: {verdict}")

    killing = threading.Thread(target=killer)
    killing.start()
    clients = [threading.Thread(target=client) for _ in range(4)]
    started = time.monotonic()
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    elapsed = time.monotonic() - started
    stop_killing.set()
    killing.join()
    return answers, problems, killed[0], elapsed


def judge(path, status, kind, retry_after, body):
    if status == 503:
        if kind != "application/json" or not retry_after:
            return f"503 without JSON and Retry-After ({kind}, Retry-After {retry_after})"
        return "ok"
    if status >= 500:
        return f"{status} {kind}"
    if status == 200 and "handoffs" in path and "format=csv" in path:
        last = body.decode().rstrip("\r\n").rsplit("\n", 1)[-1]
        if last.startswith("# Interrupted"):
            return "interrupted"
        if last.startswith("#"):
            return f"export ended with {last[:60]!r}"
    return "ok"


def recovered(engineer):
    """Every storm request answers 200 to ``engineer`` (a token) once nothing kills the connections."""
    failures = []
    for path, accept in STORM_REQUESTS:
        conn = http.client.HTTPConnection(HOST, PORT, timeout=60)
        headers = {**PROXY_HEADERS, "Authorization": f"Token {engineer}", "Accept": accept}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        conn.close()
        if response.status != 200:
            failures.append(f"{path} [{accept}]: {response.status} after the storm")
    return failures


def serve(log, app_dir=ROOT):
    return start_gunicorn(
        database_url=app_url(OWNER_URL, APP_ROLE), port=PORT, workers=2, threads=2, app_dir=app_dir,
        env={"DJANGO_CONN_MAX_AGE": "60"}, timeout=60, log=log,
    )


def storm_table(answers):
    return "\n".join(f"| {answer} | {count} |" for answer, count in sorted(answers.items()))


def main():
    prepare_database(OWNER_URL, APP_ROLE)
    print("loading the demo data (seed_demo --reset)", flush=True)
    manage("seed_demo", "--reset", database_url=OWNER_URL)
    by_username = tokens()
    by_caller = {caller: by_username.get(username) for caller, username in CALLERS.items()}
    # The member of two accounts names one: the storm's requests are then all answerable.
    with psycopg.connect(OWNER_URL, autocommit=True) as conn:
        multi_account = conn.execute(
            "SELECT min(m.account_id) FROM flowpilot_analytics_membership m JOIN auth_user u"
            " ON u.id = m.user_id WHERE u.username = 'multi' AND m.role IN ('engineer', 'admin')"
        ).fetchone()[0]
    storm_callers = [
        (by_caller["engineer"], ""),
        (by_caller["admin"], ""),
        (by_caller["two accounts"], f"&account={multi_account}"),
    ]
    database = OWNER_URL.rsplit("/", 1)[1]
    failures = []

    SERVER_LOG.parent.mkdir(parents=True, exist_ok=True)
    log = SERVER_LOG.open("w")
    print(f"the servers' output goes to {SERVER_LOG}", flush=True)
    server, command = serve(log)
    try:
        with tempfile.TemporaryDirectory() as directory:
            schema_path = Path(directory) / "schema.json"
            conn = http.client.HTTPConnection(HOST, PORT, timeout=30)
            headers = {**PROXY_HEADERS, "Accept": "application/json"}
            conn.request("GET", "/api/schema/?format=json", headers=headers)
            schema_path.write_bytes(conn.getresponse().read())
            conn.close()
            fuzz = {}
            for caller, token in by_caller.items():
                print(f"Schemathesis as {caller}, Accept: text/html", flush=True)
                ok, statuses, html = schemathesis(schema_path, token)
                fuzz[caller] = (ok, statuses, html)
                if not ok or any(status >= 500 for status in statuses):
                    failures.append(f"Schemathesis as {caller}: {dict(statuses)}")
        print(f"{REQUESTS} requests while the app role's backends are terminated every 50 ms", flush=True)
        answers, problems, killed, elapsed = storm(storm_callers, database=database)
        failures += problems
        time.sleep(1)
        failures += recovered(by_caller["engineer"])
    finally:
        stop(server)

    baseline = None
    if BASELINE:
        with tempfile.TemporaryDirectory(prefix="served-check-baseline-") as directory:
            commit = git_copy(BASELINE, directory)
            print(f"the same storm against {BASELINE} ({commit})", flush=True)
            server, _ = serve(log, app_dir=directory)
            try:
                baseline = (BASELINE, commit, *storm(storm_callers, database=database))
            finally:
                stop(server)

    log.close()
    text = report(fuzz, answers, killed, elapsed, failures, command, baseline)
    write_section(REPORT, SECTION, text)
    print(text)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures[:50]), file=sys.stderr)
        print(f"The servers' output (tracebacks included): {SERVER_LOG}", file=sys.stderr)
        raise SystemExit(1)


def report(fuzz, answers, killed, elapsed, failures, command, baseline):
    fuzz_rows = "\n".join(
        f"| {caller} | {sum(statuses.values())} | {html} | "
        f"{', '.join(f'{status}: {count}' for status, count in sorted(statuses.items()))} | "
        f"{'none' if ok and not any(status >= 500 for status in statuses) else 'FOUND'} |"
        for caller, (ok, statuses, html) in fuzz.items()
    )
    before = ""
    if baseline:
        ref, commit, b_answers, _, b_killed, b_elapsed = baseline
        server_errors = sum(count for answer, count in b_answers.items() if answer.startswith("5"))
        before = f"""
The same storm against `{ref}` ({commit}), before this change ({b_killed} backends terminated in
{b_elapsed:.0f} s; {server_errors} of {sum(b_answers.values())} answers were 5xx):

| answer | count |
|---|---|
{storm_table(b_answers)}
"""
    return f"""## The served app under a hostile client: `make served-check`

Generated by `make served-check` ([scripts/served_check.py](../scripts/served_check.py)) on
{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC ({os.cpu_count()} cores, Python {platform.python_version()}).
Served by `{shown(command)}` as `{APP_ROLE}`, `DJANGO_DEBUG=false` (the production HTTPS
settings: every request sends `X-Forwarded-Proto: https` as the TLS-terminating proxy would),
`DJANGO_CONN_MAX_AGE=60`, the demo data (`seed_demo --reset`), the throttle lifted.
Result: **{'no failure' if not failures else f'{len(failures)} failures'}**.

**Schemathesis as an outside client** (its CLI against the served schema, check
`not_a_server_error`, {EXAMPLES} examples per operation and phase, every request with
`Accept: text/html`; a request's own `format=` may still ask for JSON or CSV):

| caller | requests | answered in HTML | statuses | 5xx |
|---|---|---|---|---|
{fuzz_rows}

**Connections killed under load**: {REQUESTS} requests over every endpoint and
renderer (JSON, the browsable API's HTML, CSV, the streamed export) from 4
clients, while a second connection ran `pg_terminate_backend` on the app role's
backends every 50 ms ({killed} terminated in {elapsed:.0f} s). A 503 must be JSON
with `Retry-After`; an export cut once its 200 was sent must end with its
`# Interrupted` line. Afterwards every endpoint answered 200 again.

| answer | count |
|---|---|
{storm_table(answers)}
{before}"""


if __name__ == "__main__":
    main()
