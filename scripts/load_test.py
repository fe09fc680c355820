"""
Bounded load test of the escalations endpoint, on loopback, as the RLS-bound app role.

Run by `make loadtest` (not part of `make test`). It:

1. creates the PostgreSQL database if missing, migrates it and grants the app
   role, as the owner (OWNER_URL);
2. loads the demo data (`seed_demo --reset`) and ANALYZEs it;
3. starts gunicorn on 127.0.0.1:PORT, connected as the app role (Row-Level
   Security applies to every request), with kept-alive database connections;
4. sends GET requests from CONCURRENCY keep-alive clients, rotating over the
   demo engineers and admins of both accounts and the three periods, until
   REQUESTS have been sent or DURATION seconds have passed, whichever is first;
5. stops gunicorn and writes requests per second, p50/p90/p99 latency, the
   error count and the answers that did not match the account's figures to
   docs/load-test.md.

Only loopback is ever contacted. Everything is configured by the environment
(see the Makefile's loadtest target).
"""

import http.client
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts import serving  # noqa: E402
from scripts.report_sections import write_keeping_sections  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
URL = "/api/v1/analytics/flowpilot/escalations"
HOST = "127.0.0.1"

OWNER_URL = os.environ.get("LOAD_OWNER_URL", "postgres://postgres@127.0.0.1:5432/flowpilot_load")
APP_ROLE = os.environ.get("LOAD_APP_ROLE", "flowpilot_app")
PORT = int(os.environ.get("LOAD_PORT", "8051"))
DURATION = float(os.environ.get("LOAD_DURATION", "30"))
REQUESTS = int(os.environ.get("LOAD_REQUESTS", "20000"))
CONCURRENCY = int(os.environ.get("LOAD_CONCURRENCY", "8"))
WORKERS = int(os.environ.get("LOAD_WORKERS", "2"))
THREADS = int(os.environ.get("LOAD_THREADS", "4"))
REPORT = ROOT / os.environ.get("LOAD_REPORT", "docs/load-test.md")

CALLERS = ("northwind-engineer", "northwind-admin", "contoso-engineer", "contoso-admin")
# gunicorn serves plain HTTP on loopback with the production settings (DJANGO_DEBUG=false:
# HTTPS only, behind a TLS-terminating proxy); the clients send what that proxy would.
PROXY_HEADERS = {"X-Forwarded-Proto": "https"}
PERIODS = ("7d", "30d", "90d")


def app_url():
    return serving.app_url(OWNER_URL, APP_ROLE)


def prepare_database():
    serving.prepare_database(OWNER_URL, APP_ROLE)
    print("loading the demo data (seed_demo --reset)", flush=True)
    serving.manage("seed_demo", "--reset", database_url=OWNER_URL)
    with psycopg.connect(OWNER_URL, autocommit=True) as conn:
        # Planner statistics for the fresh rows, as autovacuum would gather soon
        # after a bulk load: without them PostgreSQL plans the metric ~50x slower.
        conn.execute("ANALYZE")
        tokens = dict(conn.execute(
            "SELECT u.username, t.key FROM authtoken_token t JOIN auth_user u ON u.id = t.user_id "
            "WHERE u.username = ANY(%s)", [list(CALLERS)]).fetchall())
        handoffs = conn.execute("SELECT count(*) FROM session_handoff").fetchone()[0]
        steps = conn.execute("SELECT count(*) FROM ai_session_step").fetchone()[0]
        server_version = conn.execute("SHOW server_version").fetchone()[0]
    return tokens, {"handoffs": handoffs, "steps": steps, "postgresql": server_version}


def start_server():
    env = {
        **os.environ,
        "DATABASE_URL": app_url(),
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": serving.SECRET_KEY,
        "DJANGO_ALLOWED_HOSTS": HOST,
        "DJANGO_CONN_MAX_AGE": "60",
        # The throttle would answer 429 to a handful of users hammering: lifted
        # so the run measures the stack (its own behaviour is tested in the suite).
        "DJANGO_ANALYTICS_THROTTLE_RATE": "100000000/minute",
    }
    command = [
        str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application",
        "--bind", f"{HOST}:{PORT}", "--workers", str(WORKERS), "--worker-class", "gthread",
        "--threads", str(THREADS), "--keep-alive", "30", "--log-level", "warning",
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    wait_until_serving(server)
    return server, command


def wait_until_serving(server, timeout=30):
    """Until gunicorn answers on HOST:PORT; stops it and exits when it does not."""
    serving.wait_until_serving(server, PORT, timeout)


def get(conn, token, period):
    started = time.perf_counter()
    headers = {**PROXY_HEADERS, "Authorization": f"Token {token}"}
    conn.request("GET", f"{URL}?period={period}", headers=headers)
    response = conn.getresponse()
    body = response.read()
    return time.perf_counter() - started, response.status, body


def baseline(tokens):
    conn = http.client.HTTPConnection(HOST, PORT, timeout=10)
    figures = {}
    for caller in CALLERS:
        for period in PERIODS:
            _, status, body = get(conn, tokens[caller], period)
            if status != 200:
                raise SystemExit(f"{caller} {period}: HTTP {status} before the load: {body[:200]!r}")
            figures[caller, period] = json.loads(body)["n_handoffs_claimed"]
    conn.close()
    return figures


def run_load(tokens, expected):
    plan = [(caller, period) for caller in CALLERS for period in PERIODS]
    lock = threading.Lock()
    sent = [0]
    latencies, statuses, mismatches, failures = [], Counter(), [0], Counter()
    stop_at = time.monotonic() + DURATION

    def client():
        conn = http.client.HTTPConnection(HOST, PORT, timeout=30)
        mine = []
        while True:
            with lock:
                if sent[0] >= REQUESTS or time.monotonic() >= stop_at:
                    break
                caller, period = plan[sent[0] % len(plan)]
                sent[0] += 1
            try:
                elapsed, status, body = get(conn, tokens[caller], period)
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    failures[type(exc).__name__] += 1
                conn.close()
                conn = http.client.HTTPConnection(HOST, PORT, timeout=30)
                continue
            mine.append(elapsed)
            with lock:
                statuses[status] += 1
                if status == 200 and json.loads(body)["n_handoffs_claimed"] != expected[caller, period]:
                    mismatches[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started, sorted(latencies), statuses, mismatches[0], failures


def percentile(ordered, fraction):
    """Nearest rank: the smallest value with at least ``fraction`` of the values at or below it."""
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(round(fraction * len(ordered), 9)))
    return ordered[rank - 1]


def rls_overhead(rounds=10):
    """Median time of the metric for each period: RLS bypassed (the owner) vs applied (the app role).

    Runs in-process through the app's own selector, on one connection, the app
    role taken with SET LOCAL ROLE inside a transaction that binds the account.
    """
    os.environ["DATABASE_URL"] = OWNER_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection, transaction

    from flowpilot_analytics import rls
    from flowpilot_analytics.models import Account
    from flowpilot_analytics.selectors import escalation_metrics

    account = Account.objects.get(slug="northwind")
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
        owner, superuser = cursor.fetchone()
    if not superuser:
        return None  # SET ROLE to the app role needs a superuser (or a member of it)
    results = {}
    for role in (owner, APP_ROLE):
        for period in PERIODS:
            times = []
            for _ in range(rounds):
                with transaction.atomic():
                    with connection.cursor() as cursor:
                        cursor.execute(f"SET LOCAL ROLE {role}")
                    rls.bind_account(account)
                    started = time.perf_counter()
                    metrics = escalation_metrics(account=account, period=period)
                    times.append(time.perf_counter() - started)
            results[role, period] = (sorted(times)[rounds // 2], metrics.n_handoffs_claimed)
    connection.close()
    return owner, superuser, results


def write_report(*, elapsed, latencies, statuses, mismatches, failures, data, command, overhead):
    answered = sum(statuses.values())
    errors = sum(count for status, count in statuses.items() if status != 200) + sum(failures.values())
    ms = lambda seconds: f"{seconds * 1000:.1f}"  # noqa: E731
    rows = [
        ("requests answered", f"{answered}"),
        ("duration (s)", f"{elapsed:.1f}"),
        ("requests per second", f"{answered / elapsed:.1f}"),
        ("latency p50 (ms)", ms(percentile(latencies, 0.50))),
        ("latency p90 (ms)", ms(percentile(latencies, 0.90))),
        ("latency p99 (ms)", ms(percentile(latencies, 0.99))),
        ("latency max (ms)", ms(latencies[-1] if latencies else float("nan"))),
        ("errors (non-200 answers + transport failures)", f"{errors}"),
        ("200s whose figures were not the caller's account's", f"{mismatches}"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    overhead_rounds = 10
    if overhead is None:
        overhead_note, overhead_table = "not measured: LOAD_OWNER_URL is not a superuser", "| | | | |"
    else:
        owner, _, timings = overhead
        overhead_note = f"as `{owner}` (a superuser: RLS bypassed) and as `{APP_ROLE}`"
        overhead_table = "\n".join(
            f"| {period} | {timings[owner, period][1]} | {ms(timings[owner, period][0])} | "
            f"{ms(timings[APP_ROLE, period][0])} |"
            for period in PERIODS
        )
    report = f"""# Load test of the escalations endpoint

Generated by `make loadtest` ([scripts/load_test.py](../scripts/load_test.py)) on
{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Re-run it to refresh this page; the
figures are of this machine ({os.cpu_count()} cores, {platform.machine()}, Python
{platform.python_version()}, PostgreSQL {data['postgresql']}), where the load generator,
gunicorn and PostgreSQL share the cores, so they are a floor rather than a capacity.

## Set-up

* Demo data (`seed_demo --reset`, then `ANALYZE`): two accounts, {data['handoffs']} handoffs and
  {data['steps']} steps over 90 days.
* Server: `{' '.join(Path(part).name if part.startswith('/') else part for part in command)}`,
  `DJANGO_DEBUG=false` (the production HTTPS settings: the clients send `X-Forwarded-Proto: https`
  as the TLS-terminating proxy would), `DJANGO_CONN_MAX_AGE=60`, connected as `{APP_ROLE}`
  (Row-Level Security applies: every request binds its account in its transaction).
  The throttle is lifted for the run; the statement timeout is the default.
* Load: {CONCURRENCY} keep-alive clients on loopback, GET requests rotating over
  {len(CALLERS)} callers (engineer and admin of each account) and the periods
  {', '.join(PERIODS)}; bounded by {REQUESTS} requests and {DURATION:g} s,
  whichever comes first. Each 200 is checked against the caller's account's
  `n_handoffs_claimed` fetched before the run.

## Results

| measure | value |
|---|---|
{table}

Answers by status: {dict(sorted(statuses.items()))}; transport failures: {dict(failures) or 'none'}.

## What Row-Level Security costs

The metric's statement alone (Northwind, median of {overhead_rounds} runs each, in-process),
{overhead_note}:

| period | handoffs | RLS bypassed (ms) | as `{APP_ROLE}`, RLS applied (ms) |
|---|---|---|---|
{overhead_table}

The policies add an equality on `account_id` to each scan of an account table,
a column the statement already filters on, so the two columns should stay
close. The rest of a request's latency above is Django, DRF, gunicorn and the
load generator sharing the same cores.
"""
    # The sections other measurements own (scripts/report_sections.py) stay on the page.
    write_keeping_sections(REPORT, report)
    print(report)


def main():
    tokens, data = prepare_database()
    missing = set(CALLERS) - set(tokens)
    if missing:
        raise SystemExit(f"demo users without a token: {sorted(missing)}")
    server, command = start_server()
    try:
        expected = baseline(tokens)
        print(f"load: {CONCURRENCY} clients, at most {REQUESTS} requests or {DURATION:g} s", flush=True)
        elapsed, latencies, statuses, mismatches, failures = run_load(tokens, expected)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print("timing the metric's statement with and without RLS", flush=True)
    overhead = rls_overhead()
    write_report(elapsed=elapsed, latencies=latencies, statuses=statuses, mismatches=mismatches,
                 failures=failures, data=data, command=command, overhead=overhead)


if __name__ == "__main__":
    main()
