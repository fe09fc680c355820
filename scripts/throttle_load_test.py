"""
The throttle on a 2-worker gunicorn: does "120/minute" hold across processes?

Run by `make loadtest-throttle` (not part of `make test`; about two and a half
minutes). It prepares the load test's database as `make loadtest` does
(scripts/load_test.py: migrate, grant the app role, seed_demo, as the owner),
then serves the demo with gunicorn (2 workers, as the app role, DEBUG off) twice,
at the default rate, and sends one user's requests from CLIENTS clients, each
every INTERVAL seconds, on a new connection each time so that both workers
answer:

1. with `DJANGO_CACHE_URL` naming Redis (LOAD_REDIS_URL, else REDIS_URL, else
   redis://127.0.0.1:6379/0): the count is shared; the busiest span of one
   period must admit the rate within 5 % (the script fails otherwise);
2. with no cache URL (Django's local-memory cache): each worker counts apart,
   which is what the issue saw (the rate admitted once per worker).

For each: the requests admitted in the busiest span of one period (from the
clients' clocks), in the first one, per worker (gunicorn's access log), and the
Retry-After values of the 429s. Results go to the "Throttle" section of
docs/load-test.md (kept when `make loadtest` rewrites the rest of the page).
Only loopback is contacted.
"""

import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load_test  # noqa: E402

RATE = os.environ.get("THROTTLE_RATE", "120/minute")
CALLER = "northwind-engineer"
CLIENTS = int(os.environ.get("THROTTLE_CLIENTS", "4"))
INTERVAL = float(os.environ.get("THROTTLE_INTERVAL", "0.25"))
SHARED_SECONDS = float(os.environ.get("THROTTLE_SHARED_SECONDS", "70"))
LOCAL_SECONDS = float(os.environ.get("THROTTLE_LOCAL_SECONDS", "40"))
WORKERS = 2
REDIS_URL = os.environ.get("LOAD_REDIS_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
TOLERANCE = 0.05
SECTION_START, SECTION_END = "<!-- throttle -->", "<!-- /throttle -->"


def period_seconds(rate):
    return {"s": 1, "m": 60, "h": 3600, "d": 86400}[rate.split("/")[1][0]]


def clear_counts():
    """The throttle's counts in Redis, left by an earlier run (the demo's key prefix, this scope)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match="flowpilot_analytics:*throttle_analytics_*"):
        client.delete(key)


def serve(cache_url, access_log):
    env = {
        key: value for key, value in os.environ.items() if key not in {"REDIS_URL", "DJANGO_CACHE_URL"}
    }
    env.update({
        "DATABASE_URL": load_test.app_url(),
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": load_test.serving.SECRET_KEY,
        "DJANGO_ALLOWED_HOSTS": load_test.HOST,
        "DJANGO_CONN_MAX_AGE": "60",
        "DJANGO_ANALYTICS_THROTTLE_RATE": RATE,
        # Not a line per 429 from django.request.
        "DJANGO_LOG_LEVEL": "ERROR",
    })
    if cache_url:
        env["DJANGO_CACHE_URL"] = cache_url
    command = [
        str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application",
        "--bind", f"{load_test.HOST}:{load_test.PORT}", "--workers", str(WORKERS),
        "--worker-class", "gthread", "--threads", "4", "--log-level", "warning",
        "--access-logfile", str(access_log), "--access-logformat", "%(p)s %(s)s %(U)s",
    ]
    server = subprocess.Popen(command, cwd=load_test.ROOT, env=env)
    load_test.wait_until_serving(server)
    return server, command


def hammer(token, seconds):
    """CLIENTS clients, each sending a request every INTERVAL seconds: [(time since start, status, retry)]."""
    answers, lock = [], threading.Lock()
    started = time.monotonic()
    headers = {**load_test.PROXY_HEADERS, "Authorization": f"Token {token}", "Connection": "close"}

    def client(offset):
        next_at = started + offset
        while next_at < started + seconds:
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += INTERVAL
            try:
                conn = http.client.HTTPConnection(load_test.HOST, load_test.PORT, timeout=30)
                conn.request("GET", f"{load_test.URL}?period=7d", headers=headers)
                response = conn.getresponse()
                response.read()
                conn.close()
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    answers.append((time.monotonic() - started, type(exc).__name__, None))
                continue
            retry = response.getheader("Retry-After")
            with lock:
                answers.append((time.monotonic() - started, response.status, retry))

    threads = [threading.Thread(target=client, args=(index * INTERVAL / CLIENTS,))
               for index in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(answers, key=lambda answer: answer[0])


def busiest_span(times, span):
    """The most admitted requests within any ``span`` seconds (a sliding window over the times)."""
    best, first = 0, 0
    for last, at in enumerate(times):
        while times[first] <= at - span:
            first += 1
        best = max(best, last - first + 1)
    return best


def per_worker(access_log):
    counts = Counter()
    for line in access_log.read_text().splitlines():
        match = re.fullmatch(r"<?(\d+)>? (\d{3}) (\S+)", line.strip())
        if match and match.group(3) == load_test.URL:
            counts[match.group(1), int(match.group(2))] += 1
    pids = sorted({pid for pid, _ in counts})
    return {pid: (counts[pid, 200], counts[pid, 429]) for pid in pids}


def run_phase(label, cache_url, token, seconds, work):
    access_log = work / ("shared.log" if cache_url else "local.log")
    if cache_url:
        clear_counts()
    server, command = serve(cache_url, access_log)
    try:
        print(f"{label}: {CLIENTS} clients, each every {INTERVAL:g} s, for {seconds:g} s", flush=True)
        answers = hammer(token, seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    if cache_url:
        clear_counts()
    period = period_seconds(RATE)
    admitted = [at for at, status, _ in answers if status == 200]
    retries = sorted(int(retry) for _, status, retry in answers if status == 429 and retry)
    statuses = Counter(status for _, status, _ in answers)
    return {
        "label": label,
        "seconds": seconds,
        "sent": len(answers),
        "statuses": dict(sorted(statuses.items(), key=str)),
        "busiest": busiest_span(admitted, period),
        "first": sum(1 for at in admitted if at <= period),
        "workers": per_worker(access_log),
        "retry": (retries[0], retries[-1]) if retries else None,
        "command": command,
    }


def write_section(shared, local, data):
    limit = int(RATE.split("/")[0])

    def row(result):
        workers = ", ".join(f"{admitted} admitted / {refused} refused" for admitted, refused in
                            result["workers"].values())
        change = (result["busiest"] - limit) / limit
        retry = "–" if result["retry"] is None else f"{result['retry'][0]}–{result['retry'][1]} s"
        return (f"| {result['label']} | {result['sent']} | {result['first']} | {result['busiest']} "
                f"({change:+.1%}) | {workers} | {retry} |")

    verdict = "holds" if abs(shared["busiest"] - limit) <= TOLERANCE * limit else "does NOT hold"
    command = " ".join(Path(part).name if part.startswith("/") else part for part in shared["command"])
    command = command.replace("shared.log", "<file>")
    section = f"""{SECTION_START}
## Throttle across workers

Generated by `make loadtest-throttle` ([scripts/throttle_load_test.py](../scripts/throttle_load_test.py))
on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, on the load test's database ({data['handoffs']} handoffs).
`{command}` (the app role, `DJANGO_DEBUG=false`), at `DJANGO_ANALYTICS_THROTTLE_RATE={RATE}`;
one user's requests from {CLIENTS} clients, each every {INTERVAL:g} s ({CLIENTS / INTERVAL:g} requests a
second offered), each on a new connection so that both workers answer. "Busiest minute": the most
200s within any {period_seconds(RATE)} s of the clients' clock.

| cache | requests | 200s, first minute | 200s, busiest minute (vs {limit}) | per worker | Retry-After |
|---|---|---|---|---|---|
{row(shared)}
{row(local)}

With Redis the 2-worker server {verdict} the rate within {TOLERANCE:.0%} ({shared['seconds']:g} s run,
statuses {shared['statuses']}). The count is kept per slot of a sixtieth of the period and the window
counts one slot more than the period, so no span of one period admits more than the rate; a client
refused gets a Retry-After of at most the period plus one slot. With Django's default local-memory
cache ({local['seconds']:g} s run, statuses {local['statuses']}) each worker admits the whole rate:
set `DJANGO_CACHE_URL` (or `REDIS_URL`) wherever more than one process serves.
{SECTION_END}
"""
    report = load_test.REPORT
    text = report.read_text() if report.exists() else ""
    if SECTION_START in text:
        start, end = text.index(SECTION_START), text.index(SECTION_END) + len(SECTION_END) + 1
        text = text[:start] + section + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    report.write_text(text)
    print(section)
    return verdict == "holds"


def main():
    tokens, data = load_test.prepare_database()
    work = Path(tempfile.mkdtemp(prefix="flowpilot-throttle-"))
    try:
        shared = run_phase("Redis (DJANGO_CACHE_URL)", REDIS_URL, tokens[CALLER], SHARED_SECONDS, work)
        local = run_phase("local memory, per process", None, tokens[CALLER], LOCAL_SECONDS, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not write_section(shared, local, data):
        raise SystemExit(f"FAIL: the shared throttle admitted {shared['busiest']} in its busiest period "
                         f"at {RATE}")


if __name__ == "__main__":
    main()
