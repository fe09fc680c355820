"""
`make bench`: what the escalation metric costs on PostgreSQL, from 1k to 1M handoffs.

Builds (or reuses) the data set of :mod:`bench.data` in the database named by
BENCH_DATABASE_URL, then times, in interleaved rounds so that machine noise
hits every variant alike, and prints medians and ratios:

* the endpoint's query (``escalation_metrics``: one statement),
* the full request through Django's test client (token auth, DRF, JSON),
* the naive Python path (every handoff's lag pulled into Python),
* the best query shape written by hand (a LATERAL ... LIMIT 1 join),
* the floor: a bare index count of the same handoffs,

for one account at about 1k, 60k and 600k claimed handoffs and for 100 accounts
(about 1M) at once, plus client memory, the same query under other index
layouts, and the plans (EXPLAIN ANALYZE, BUFFERS). Everything goes to
docs/benchmarks.md.

    python -m bench.escalations [--quick] [--skip-indexes] [--output PATH]
"""

import argparse
import gc
import os
import platform
import statistics
import sys
import time
import tracemalloc
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from pathlib import Path
from unittest import mock

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/flowpilot_bench"
ROOT = Path(__file__).resolve().parent.parent
API_URL = "/api/v1/analytics/flowpilot/escalations"
PERIOD = "90d"

TARGET_REQUEST_1K_MS = 15
TARGET_BEST_RATIO = 1.5
TARGET_NAIVE_RATIO = 1.3
TARGET_CROSS_S = 2.5
# "Constant" client memory: the endpoint's peak may not grow by more than this
# from 1k to 600k handoffs (the naive path grows by hundreds of bytes a handoff).
CONSTANT_MEMORY_SLACK = 64 * 1024
# The naive path is several times slower; three timed rounds give its median.
NAIVE_ROUNDS = {"naive Python": 3}
CROSS_NAIVE_ROUNDS = {"naive Python": 2}
# Session settings an analytics connection (or replica role) may carry; shown for information.
TUNED_SESSION = {"jit": "off", "work_mem": "'32MB'"}

# The best shape we know, written by hand: the probe as a LATERAL join, then the
# same aggregates as the endpoint (every figure of the summary, not only the
# contract's five), so that the two do the same work.
def best_sql():
    from flowpilot_analytics.selectors import _AGGREGATES_SQL

    return (
        "SELECT account_id, "
        + _AGGREGATES_SQL
        + """
FROM (
    SELECT h.account_id, h.claimed_at, f.lag_us
    FROM session_handoff h
    LEFT JOIN LATERAL (
        SELECT round(date_part('epoch', s.created_at - h.claimed_at) * 1000000)::bigint AS lag_us
        FROM ai_session_step s
        WHERE s.account_id = h.account_id AND s.session_id = h.session_id AND s.created_at > h.claimed_at
        ORDER BY s.created_at
        LIMIT 1
    ) f ON true
    WHERE h.account_id = ANY(%s) AND h.claimed_at >= %s AND h.claimed_at <= %s
) AS lags
GROUP BY account_id
"""
    )


def best_params(account_ids, start, end):
    return (None, list(account_ids), start, end)  # no target; then the handoffs' filter


# Earlier shapes of the endpoint's statement, kept to show what the current one avoids.
# The first version: the ORM queryset in a MATERIALIZED CTE (every row spilled to
# a tuplestore), then GROUP BY account (a sort before the percentiles).
CTE_SQL = """
WITH claimed AS MATERIALIZED ({handoffs}),
lags AS (
    SELECT account_id,
           CASE WHEN first_action_at IS NULL THEN NULL
                ELSE GREATEST(0, round(date_part('epoch', first_action_at - claimed_at) * 1000000))::bigint
           END AS lag_us
    FROM claimed
)
SELECT account_id, count(*), count(lag_us), sum(lag_us),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_us),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY lag_us)
FROM lags
GROUP BY account_id
"""
SHAPE_NAMES = ("previous: CTE", "no fence (trap)")
SHAPES_AT = {"bench-60k": SHAPE_NAMES, "bench-600k": SHAPE_NAMES[:1]}

# Index layouts of the step table compared with the shipped one (built inside
# a transaction that is rolled back).
INDEX_LAYOUTS = {
    "issue layout: (session, created_at) INCLUDE (account)": [
        "DROP INDEX step_account_session_created",
        "DROP INDEX step_session_created",
        "CREATE INDEX bench_step_session_created_incl ON ai_session_step (session_id, created_at) INCLUDE (account_id)",
    ],
    "Django default: foreign-key index on session only": [
        "DROP INDEX step_account_session_created",
        "DROP INDEX step_session_created",
        "CREATE INDEX bench_step_session ON ai_session_step (session_id)",
    ],
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run; figures noisier)")
    parser.add_argument("--skip-indexes", action="store_true", help="skip the index layout comparison")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"), help="report file")
    args = parser.parse_args(argv)

    url = os.environ.get("BENCH_DATABASE_URL") or DEFAULT_URL
    _prepare_database(url)
    _setup_django(url)
    Bench(quick=args.quick, compare_indexes=not args.skip_indexes).run(Path(args.output))


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def _prepare_database(url):
    """Reach PostgreSQL, creating the benchmark database if it is missing; fail clearly otherwise."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        name = conninfo_to_dict(url).get("dbname") or ""
    except psycopg.ProgrammingError as error:
        fail(f"BENCH_DATABASE_URL is not a PostgreSQL URL ({error})")
    if "bench" not in name:
        fail(
            f"the benchmark empties the app's tables of its database; {name!r} does not look like a "
            "benchmark database (its name must contain 'bench'). Set BENCH_DATABASE_URL."
        )
    try:
        psycopg.connect(url, connect_timeout=5).close()
        return
    except psycopg.OperationalError as error:
        if f'database "{name}" does not exist' not in str(error):
            fail(f"cannot connect to PostgreSQL at BENCH_DATABASE_URL={_redacted(url)}: {str(error).strip()}")
    try:
        with psycopg.connect(
            make_conninfo(url, dbname="postgres"), autocommit=True, connect_timeout=5
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as error:
        fail(f"cannot create the benchmark database {name!r}: {str(error).strip()}")
    print(f"Created database {name}.")


def _redacted(url):
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def _setup_django(url):
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    # DEBUG off: no query log growing in memory, as in production.
    os.environ["DJANGO_DEBUG"] = "false"
    os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-only-not-a-secret-" + "x" * 40)
    os.environ.pop("FLOWPILOT_ANALYTICS_DATABASE_URL", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


class Bench:
    def __init__(self, *, quick, compare_indexes):
        self.quick = quick
        self.compare_indexes = compare_indexes
        self.lines = []

    def log(self, message=""):
        print(message, flush=True)

    # -- the run ---------------------------------------------------------------

    def run(self, output):
        from django.core.management import call_command
        from django.db import connection

        from bench.data import ANCHOR, WINDOW_DAYS, ensure_dataset

        started = time.perf_counter()
        load_before = os.getloadavg()
        self.log(
            f"Benchmark database: {connection.settings_dict['NAME']} on {connection.settings_dict['HOST']}"
        )
        call_command("migrate", verbosity=0, interactive=False)
        build_started = time.perf_counter()
        accounts, built = ensure_dataset(self.log)
        build_seconds = time.perf_counter() - build_started
        self.start, self.end = ANCHOR - timedelta(days=WINDOW_DAYS), ANCHOR

        per_account = []
        for slug, rounds in (("bench-1k", 15), ("bench-60k", 15), ("bench-600k", 5)):
            per_account.append(self.measure_account(accounts[slug], rounds=3 if self.quick else rounds))
        cross = self.measure_cross_account(list(accounts.values()), rounds=2 if self.quick else 5)
        layouts = self.measure_index_layouts(accounts) if self.compare_indexes else []
        plans = self.collect_plans(accounts)
        load_after = os.getloadavg()

        report = Report(
            environment=self.environment(),
            data=self.data_shape(),
            build_seconds=build_seconds if built else None,
            per_account=per_account,
            cross=cross,
            layouts=layouts,
            plans=plans,
            load=(load_before, load_after),
            total_seconds=time.perf_counter() - started,
            quick=self.quick,
        )
        text = report.markdown()
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        self.log("")
        self.log(report.summary())
        self.log(f"\nWritten to {output} ({report.total_seconds:.0f} s in all).")

    # -- variants --------------------------------------------------------------

    def variants_for(self, account_ids, *, token=None, tuned=False, shapes=()):
        """The variants as callables returning comparable figures (n, n_action, avg, median, p95)."""
        from django.db import connection
        from django.test import Client

        from flowpilot_analytics import selectors
        from flowpilot_analytics.models import SessionHandoff

        single = len(account_ids) == 1
        window = {"start": self.start, "end": self.end}

        def endpoint():
            if single:
                return figures_of(
                    selectors.escalation_metrics(account=account_ids[0], period=PERIOD, now=self.end)
                )
            by_account = selectors.escalation_metrics_by_account(
                accounts=account_ids, period=PERIOD, now=self.end
            )
            return {account_id: figures_of(metrics) for account_id, metrics in by_account.items()}

        def naive():
            queryset = selectors.claimed_handoffs_with_first_action(
                accounts=account_ids, start=self.start, end=self.end
            )
            summaries = selectors._summaries_in_python(queryset)
            return pick(
                single,
                account_ids,
                {key: summary_figures(value, **window) for key, value in summaries.items()},
            )

        def best():
            with connection.cursor() as cursor:
                cursor.execute(best_sql(), best_params(account_ids, self.start, self.end))
                rows = cursor.fetchall()
            return pick(
                single, account_ids, {row[0]: summary_figures(row_summary(row[1:]), **window) for row in rows}
            )

        def floor():
            return SessionHandoff.objects.filter(
                account_id__in=account_ids, claimed_at__gte=self.start, claimed_at__lte=self.end
            ).count()

        variants = {"endpoint query": endpoint}
        if token is not None:
            client = Client()

            def request():
                response = client.get(API_URL, {"period": PERIOD}, HTTP_AUTHORIZATION=f"Token {token}")
                if response.status_code != 200:
                    fail(f"the API answered {response.status_code}: {response.content[:300]!r}")
                return figures_of(response.json())

            variants["full request"] = request

        def endpoint_tuned():
            with connection.cursor() as cursor:
                for name, value in TUNED_SESSION.items():
                    cursor.execute(f"SET {name} = {value}")
            try:
                return endpoint()
            finally:
                with connection.cursor() as cursor:
                    for name in TUNED_SESSION:
                        cursor.execute(f"RESET {name}")

        def previous_cte():
            queryset = selectors.claimed_handoffs_with_first_action(accounts=account_ids, **window)
            handoffs = queryset.values("account_id", "claimed_at", "first_action_at")
            sql, params = handoffs.query.get_compiler(connection=connection).as_sql()
            return run_summary(CTE_SQL.format(handoffs=sql), params)

        def no_fence():
            sql, params = selectors.summary_sql(account_ids=account_ids, connection=connection, **window)
            # Without OFFSET 0 the planner flattens the handoffs subquery into the
            # aggregates: one probe per reference to the lag, not per handoff.
            return run_summary(sql.replace("OFFSET 0", ""), params)

        def run_summary(sql, params):
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                rows = cursor.fetchall()
            return pick(
                single, account_ids, {row[0]: summary_figures(row_summary(row[1:]), **window) for row in rows}
            )

        variants.update({"naive Python": naive, "best shape": best, "floor": floor})
        if len(account_ids) > 1 or tuned:
            variants["endpoint, tuned session"] = endpoint_tuned
        shape_variants = {"previous: CTE": previous_cte, "no fence (trap)": no_fence}
        for name in shapes:
            variants[name] = shape_variants[name]
        return variants

    def measure_account(self, account, *, rounds):
        from bench.data import bench_token

        self.log(f"\n{account.slug}: {rounds} rounds of each variant")
        variants = self.variants_for(
            [account.pk],
            token=bench_token(account),
            tuned=account.slug == "bench-600k",
            shapes=SHAPES_AT.get(account.slug, ()),
        )
        with self.clock_at_anchor():
            timings, results = interleaved(variants, rounds=rounds, max_rounds=NAIVE_ROUNDS)
        agree(results, account.slug)
        memory = {name: peak_memory(variants[name]) for name in ("endpoint query", "naive Python")}
        result = Measurement(
            label=f"one account, {results['floor']:,} claimed",
            slug=account.slug,
            handoffs=results["floor"],
            timings=timings,
            memory=memory,
        )
        self.log(result.line())
        return result

    def measure_cross_account(self, accounts, *, rounds):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from flowpilot_analytics import selectors

        account_ids = sorted(account.pk for account in accounts)
        self.log(f"\n{len(account_ids)} accounts at once: {rounds} rounds of each variant")
        with CaptureQueriesContext(connection) as queries:
            selectors.escalation_metrics_by_account(accounts=account_ids, period=PERIOD, now=self.end)
        variants = self.variants_for(account_ids)
        timings, results = interleaved(variants, rounds=rounds, max_rounds=CROSS_NAIVE_ROUNDS)
        agree(results, "all accounts")
        # The naive path's memory is measured per account (tracemalloc slows it a lot).
        memory = {"endpoint query": peak_memory(variants["endpoint query"])}
        result = Measurement(
            label=f"{len(account_ids)} accounts, {results['floor']:,} claimed",
            slug="all",
            handoffs=results["floor"],
            timings=timings,
            memory=memory,
            statements=len(queries.captured_queries),
        )
        self.log(result.line())
        return result

    def measure_index_layouts(self, accounts):
        from django.db import connection, transaction

        self.log("\nIndex layouts of the step table (each built in a transaction, then rolled back)")
        cases = [(slug, [accounts[slug].pk]) for slug in ("bench-1k", "bench-60k", "bench-600k")]
        rounds = 2 if self.quick else 3
        layouts = [("shipped: (account, session, created_at) + (session, created_at)", [])]
        layouts += list(INDEX_LAYOUTS.items())
        measured = []
        for name, statements in layouts:
            with transaction.atomic():
                build_started = time.perf_counter()
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
                    for statement in statements:
                        cursor.execute(statement)
                    if statements:
                        cursor.execute("ANALYZE ai_session_step")
                build = time.perf_counter() - build_started
                variants = {slug: self.variants_for(ids)["endpoint query"] for slug, ids in cases}
                # No warm-up round: the index was just built, its pages are cached.
                timings, _ = interleaved(variants, rounds=rounds, warmup=0)
                transaction.set_rollback(True)
            measured.append((name, timings, build))
            self.log(f"  {name}: " + ", ".join(f"{slug} {seconds(t.median)}" for slug, t in timings.items()))
        return measured

    def collect_plans(self, accounts):
        from django.db import connection

        from flowpilot_analytics.selectors import summary_sql

        self.log("\nEXPLAIN (ANALYZE, BUFFERS) of the endpoint's statement and of the best shape")
        all_ids = sorted(account.pk for account in accounts.values())
        cases = [
            ("endpoint statement, bench-1k", "endpoint", [accounts["bench-1k"].pk]),
            ("endpoint statement, bench-600k", "endpoint", [accounts["bench-600k"].pk]),
            ("best shape, bench-600k", "best", [accounts["bench-600k"].pk]),
            ("endpoint statement, all 100 accounts", "endpoint", all_ids),
            ("best shape, all 100 accounts", "best", all_ids),
        ]
        plans = []
        with connection.cursor() as cursor:
            for title, kind, ids in cases:
                if kind == "endpoint":
                    sql, params = summary_sql(
                        account_ids=ids, start=self.start, end=self.end, connection=connection
                    )
                else:
                    sql, params = best_sql(), best_params(ids, self.start, self.end)
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                plans.append((title, "\n".join(row[0] for row in cursor.fetchall())))
        return plans

    # -- context ---------------------------------------------------------------

    def clock_at_anchor(self):
        """The API has no ``now`` parameter: pin Django's clock to the data's anchor."""
        return mock.patch("django.utils.timezone.now", return_value=self.end)

    def environment(self):
        from django.db import connection

        with connection.cursor() as cursor:
            settings = {}
            for name in (
                "server_version",
                "shared_buffers",
                "work_mem",
                "jit",
                "random_page_cost",
                "effective_cache_size",
                "max_parallel_workers_per_gather",
            ):
                cursor.execute(f"SHOW {name}")
                settings[name] = cursor.fetchone()[0]
        memory = ""
        meminfo = Path("/proc/meminfo")
        if meminfo.exists():
            total_kb = int(meminfo.read_text().split("\n")[0].split()[1])
            memory = f", {total_kb / 1024 / 1024:.0f} GiB RAM"
        import django

        return {
            "machine": f"{os.cpu_count()} CPUs{memory}, {platform.system()} {platform.release()}",
            "software": f"Python {platform.python_version()}, Django {django.get_version()}, "
            f"PostgreSQL {settings.pop('server_version').split()[0]}",
            "postgresql settings": ", ".join(f"{key}={value}" for key, value in settings.items()),
        }

    def data_shape(self):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("""
                SELECT (SELECT count(*) FROM flowpilot_analytics_account),
                       (SELECT count(*) FROM ai_session),
                       (SELECT count(*) FROM session_handoff),
                       (SELECT count(*) FROM session_handoff WHERE claimed_at IS NOT NULL),
                       (SELECT count(*) FROM ai_session_step),
                       pg_size_pretty(pg_total_relation_size('ai_session_step')),
                       pg_size_pretty(pg_relation_size('step_account_session_created')),
                       pg_size_pretty(pg_total_relation_size('session_handoff'))
                """)
            row = cursor.fetchone()
        return dict(
            zip(
                [
                    "accounts",
                    "sessions",
                    "handoffs",
                    "claimed handoffs",
                    "steps",
                    "step table with indexes",
                    "probe index",
                    "handoff table with indexes",
                ],
                row,
            )
        )


# -- measuring -----------------------------------------------------------------


class Timing:
    def __init__(self, samples):
        self.samples = samples
        self.median = statistics.median(samples)
        self.low = min(samples)
        self.high = max(samples)


def interleaved(variants, *, rounds, warmup=1, max_rounds=None):
    """Time each variant ``rounds`` times, one of each per round, after ``warmup`` untimed rounds.

    ``max_rounds`` caps the timed rounds of slow variants (``{name: n}``).
    """
    samples = {name: [] for name in variants}
    results = {}
    for round_index in range(warmup + rounds):
        for name, variant in variants.items():
            if round_index >= warmup + (max_rounds or {}).get(name, rounds):
                continue
            started = time.perf_counter()
            results[name] = variant()
            elapsed = time.perf_counter() - started
            if round_index >= warmup:
                samples[name].append(elapsed)
    return {name: Timing(values) for name, values in samples.items()}, results


def peak_memory(variant):
    """Peak Python memory allocated while ``variant`` runs (tracemalloc, bytes)."""
    gc.collect()
    tracemalloc.start()
    try:
        variant()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


CONTRACT_FIGURES = (
    "n_handoffs_claimed",
    "n_handoffs_with_action",
    "avg_seconds_to_first_action",
    "median_seconds_to_first_action",
    "p95_seconds_to_first_action",
)


def figures_of(source):
    """The contract's five figures of an ``EscalationMetrics`` or an API response body, comparable."""
    if isinstance(source, dict):
        return tuple(source[name] for name in CONTRACT_FIGURES)
    return tuple(getattr(source, name) for name in CONTRACT_FIGURES)


def summary_figures(summary, *, start, end):
    from flowpilot_analytics.selectors import EscalationMetrics
    from flowpilot_analytics.windows import Window

    window = Window(start=start, end=end, closed=True, period=PERIOD)
    return figures_of(EscalationMetrics.from_summary(summary, window=window, now=end))


def row_summary(row):
    """A ``LagSummary`` from a hand-written statement's row, converted as the selector converts its own.

    The endpoint's and the best shape's rows carry every aggregate; the earlier
    CTE shape's only the contract's five figures.
    """
    from flowpilot_analytics.stats import LagSummary, mean_seconds, to_seconds

    if len(row) == 5:
        n_claimed, n_with_action, total_us, p50_us, p95_us = row
        return LagSummary(
            n_claimed, n_with_action, mean_seconds(total_us, n_with_action), to_seconds(p50_us), to_seconds(p95_us)
        )
    from flowpilot_analytics.selectors import summary_from_row

    return summary_from_row(row)


def pick(single, account_ids, by_account):
    empty = (0, 0, None, None, None)
    if single:
        return by_account.get(account_ids[0], empty)
    return {account_id: by_account.get(account_id, empty) for account_id in account_ids}


def agree(results, label):
    """Every variant must return the same figures: a fast wrong answer is no answer."""
    reference = results["endpoint query"]
    for name, result in results.items():
        if name != "floor" and result != reference:
            fail(f"{label}: {name} disagrees with the endpoint query: {result!r} != {reference!r}")
    claimed = reference[0] if isinstance(reference, tuple) else sum(f[0] for f in reference.values())
    if claimed != results["floor"]:
        fail(f"{label}: the endpoint counts {claimed} claimed handoffs, the floor {results['floor']}")


def seconds(value):
    if value >= 1:
        return f"{value:.2f} s"
    return f"{value * 1000:.1f} ms"


def kib(value):
    return f"{value / 1024:,.0f} KiB"


class Measurement:
    def __init__(self, *, label, slug, handoffs, timings, memory, statements=None):
        self.label = label
        self.slug = slug
        self.handoffs = handoffs
        self.timings = timings
        self.memory = memory
        self.statements = statements

    def median(self, name):
        return self.timings[name].median

    def ratio(self, numerator, denominator):
        """Median of the per-round ratios: a burst of noise slows both variants of a round."""
        pairs = zip(self.timings[numerator].samples, self.timings[denominator].samples)
        return statistics.median(a / b for a, b in pairs)

    def line(self):
        return "  " + ", ".join(f"{name} {seconds(t.median)}" for name, t in self.timings.items())


# -- the report ----------------------------------------------------------------

PREAMBLE = """\
# Benchmarks

Generated by `make bench` (`bench/escalations.py`); rerun it to refresh this
file. What it measures and why the metric's SQL has its shape:
[docs/scaling.md](scaling.md). Every variant returns the same figures (the run
fails otherwise), and the rounds are interleaved, one of each variant per round,
so that the noise of a shared machine hits all of them alike: read the ratios
first, the absolute times second.

| variant | what runs |
|---|---|
| endpoint query | `escalation_metrics()` on PostgreSQL: one statement, one row per account, `percentile_cont` in SQL |
| full request | `GET /api/v1/analytics/flowpilot/escalations?period=90d` through Django's test client with a token: authentication, membership, the statement, JSON |
| naive Python | the same ORM queryset (`Subquery`/`OuterRef` probe) with every handoff's lag pulled into Python and aggregated there (`_summaries_in_python`, what SQLite runs) |
| best shape | the fastest statement we know, written by hand: the probe as `LEFT JOIN LATERAL (... ORDER BY created_at LIMIT 1)`, `GROUP BY` account |
| floor | `count()` of the same handoffs: a bare index-only scan of `(account, claimed_at)`, no probe |
| previous: CTE | this project's first statement: the ORM queryset in a `MATERIALIZED` CTE (every row written to a tuplestore), then `GROUP BY` account (a sort before the percentiles) |
| no fence (trap) | the endpoint's statement without its `OFFSET 0`: PostgreSQL flattens the subquery and runs the probe once per reference to the lag |
| endpoint, tuned session | the endpoint query in a session with `jit = off` and `work_mem = 32MB`, settings an analytics connection or replica role may carry (for information; the targets use the server's defaults) |

Period: 90 days, ending at the data's anchor (the clock is pinned for the request).
"""


class Report:
    def __init__(self, **fields):
        self.__dict__.update(fields)

    def targets(self):
        """``[(target, measured, met)]``."""
        by_slug = {m.slug: m for m in self.per_account}
        rows = []
        request_1k = by_slug["bench-1k"].median("full request")
        rows.append(
            (
                f"1k: full request < {TARGET_REQUEST_1K_MS} ms median",
                seconds(request_1k),
                request_1k * 1000 < TARGET_REQUEST_1K_MS,
            )
        )
        base_memory = by_slug["bench-1k"].memory["endpoint query"]
        for slug in ("bench-60k", "bench-600k"):
            m = by_slug[slug]
            scale = slug.split("-")[1]
            best = m.ratio("endpoint query", "best shape")
            naive = m.ratio("naive Python", "endpoint query")
            growth = m.memory["endpoint query"] - base_memory
            rows.append(
                (
                    f"{scale}: endpoint within {TARGET_BEST_RATIO}x of the best shape",
                    f"{best:.2f}x",
                    best <= TARGET_BEST_RATIO,
                )
            )
            rows.append(
                (
                    f"{scale}: endpoint at least {TARGET_NAIVE_RATIO}x faster than naive Python",
                    f"{naive:.2f}x",
                    naive >= TARGET_NAIVE_RATIO,
                )
            )
            rows.append(
                (
                    f"{scale}: constant client memory (endpoint peak within {kib(CONSTANT_MEMORY_SLACK)} of 1k's)",
                    f"{kib(m.memory['endpoint query'])} vs {kib(base_memory)} at 1k "
                    f"(naive: {kib(m.memory['naive Python'])})",
                    growth <= CONSTANT_MEMORY_SLACK,
                )
            )
        cross = self.cross.median("endpoint query")
        rows.append(
            (
                f"all accounts: one statement, < {TARGET_CROSS_S} s median",
                f"{self.cross.statements} statement(s), {seconds(cross)}",
                self.cross.statements == 1 and cross < TARGET_CROSS_S,
            )
        )
        return rows

    def why_not_met(self):
        """A plain reason for each target missed, from this run's own figures."""
        reasons = []
        for target, measured, met in self.targets():
            if met:
                continue
            if target.startswith("all accounts"):
                cross = self.cross
                per_handoff = cross.median("endpoint query") / max(cross.handoffs, 1) * 1e6
                tuned = cross.timings.get("endpoint, tuned session")
                reasons.append(
                    f"- {target}: the best hand-written statement takes {seconds(cross.median('best shape'))}"
                    f" on the same data in the same rounds (endpoint ÷ best"
                    f" {cross.ratio('endpoint query', 'best shape'):.2f}). Both are bound by the per-handoff"
                    f" probe, {per_handoff:.1f} µs a handoff here, which PostgreSQL 15 runs on one core (a"
                    " correlated subquery is parallel-restricted)"
                    + (
                        f"; with `jit = off` and `work_mem = 32MB` it takes {seconds(tuned.median)}"
                        if tuned
                        else ""
                    )
                    + ". See docs/scaling.md."
                )
            else:
                reasons.append(
                    f"- {target}: measured {measured}. Check the spread in the table below: rounds disturbed"
                    " by other work on the machine move medians; rerun `make bench` on a quiet machine."
                )
        return reasons

    def results_table(self):
        names = [
            "endpoint query",
            "full request",
            "naive Python",
            "best shape",
            "floor",
            "endpoint, tuned session",
        ]
        lines = [
            "| scale | " + " | ".join(names) + " | endpoint ÷ best | naive ÷ endpoint | endpoint ÷ floor |",
            "|---|" + "---:|" * (len(names) + 3),
        ]
        for m in [*self.per_account, self.cross]:
            cells = []
            for name in names:
                t = m.timings.get(name)
                cells.append(f"{seconds(t.median)} ({seconds(t.low)}–{seconds(t.high)})" if t else "—")
            lines.append(
                f"| {m.label} | "
                + " | ".join(cells)
                + f" | {m.ratio('endpoint query', 'best shape'):.2f} | {m.ratio('naive Python', 'endpoint query'):.2f}"
                + f" | {m.ratio('endpoint query', 'floor'):.1f} |"
            )
        return "\n".join(lines)

    def shapes_table(self):
        names = ["endpoint query", "best shape", *SHAPE_NAMES]
        lines = ["| scale | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for m in self.per_account:
            if not any(name in m.timings for name in SHAPE_NAMES):
                continue
            cells = []
            for name in names:
                if name not in m.timings:
                    cells.append("—")
                    continue
                cells.append(f"{seconds(m.median(name))} ({m.ratio(name, 'endpoint query'):.2f}x)")
            lines.append(f"| {m.label} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def memory_table(self):
        lines = ["| scale | endpoint query | naive Python | naive per handoff |", "|---|---:|---:|---:|"]
        for m in [*self.per_account, self.cross]:
            naive = m.memory.get("naive Python")
            naive_cells = f"{kib(naive)} | {naive / max(m.handoffs, 1):.0f} B" if naive else "— | —"
            lines.append(f"| {m.label} | {kib(m.memory['endpoint query'])} | {naive_cells} |")
        return "\n".join(lines)

    def layouts_table(self):
        if not self.layouts:
            return "_Skipped (`--skip-indexes`)._"
        slugs = list(self.layouts[0][1])
        shipped = self.layouts[0][1]
        lines = [
            "| step-table indexes | " + " | ".join(slugs) + " | index build |",
            "|---|" + "---:|" * (len(slugs) + 1),
        ]
        for name, timings, build in self.layouts:
            cells = []
            for slug in slugs:
                ratio = timings[slug].median / shipped[slug].median
                cells.append(f"{seconds(timings[slug].median)} ({ratio:.1f}x)")
            lines.append(
                f"| {name} | " + " | ".join(cells) + f" | {seconds(build) if build > 0.01 else '—'} |"
            )
        return "\n".join(lines)

    def markdown(self):
        out = [PREAMBLE]
        out.append("## This run\n")
        when = datetime.now(dt_timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        out.append(
            f"- When: {when}{' (quick run: fewer rounds)' if self.quick else ''}; "
            f"{self.total_seconds:.0f} s in all, data "
            f"{'reused' if self.build_seconds is None else 'built in ' + seconds(self.build_seconds)}."
        )
        for key, value in self.environment.items():
            out.append(f"- {key.capitalize()}: {value}")
        out.append(
            "- Data: "
            + ", ".join(
                f"{key} {value:,}" if isinstance(value, int) else f"{key} {value}"
                for key, value in self.data.items()
            )
        )
        out.append(
            f"- Load average (1, 5, 15 min) before {tuple(round(x, 2) for x in self.load[0])}, "
            f"after {tuple(round(x, 2) for x in self.load[1])}: other work shares these 2 cores, so"
            " absolute times move from run to run; the ratios hold better."
        )
        out.append("\n## Targets\n")
        out.append("| target | measured | met |\n|---|---|---|")
        for target, measured, met in self.targets():
            out.append(f"| {target} | {measured} | {'yes' if met else '**NO**'} |")
        reasons = self.why_not_met()
        if reasons:
            out.append("\nWhy not met:\n")
            out.extend(reasons)
        out.append(
            "\nQuery count per request: constant, asserted in `tests/test_api.py` and `tests/test_metrics.py`."
        )
        out.append("\n## Medians (min–max) per variant\n")
        out.append(self.results_table())
        out.append("\n## Shapes of the statement (medians; per-round ratio to the endpoint query)\n")
        out.append(self.shapes_table())
        out.append("\n## Client memory (Python allocations, tracemalloc peak)\n")
        out.append(self.memory_table())
        out.append("\n## Index layouts of the step table (endpoint query, medians)\n")
        out.append(self.layouts_table())
        out.append("\n## Plans\n")
        for title, plan in self.plans:
            out.append(f"### {title}\n\n```\n{plan}\n```\n")
        return "\n".join(out)

    def summary(self):
        lines = ["Targets:"]
        for target, measured, met in self.targets():
            lines.append(f"  [{'met' if met else 'NOT MET'}] {target}: {measured}")
        lines.append("")
        lines.append(self.results_table())
        return "\n".join(lines)


if __name__ == "__main__":
    main()
