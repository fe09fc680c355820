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
docs/benchmarks.md. The pieces: :mod:`bench.data` (the data set),
:mod:`bench.variants` (what is timed), :mod:`bench.timing` (how),
:mod:`bench.report` (the report and its targets).

With ``--host-schema`` the same runs against a host's own models
(tests/settings_host_models.py: tests/host_app's tables, other names, no account
column on the steps, the indexes ``manage.py metric_indexes`` asks for), to
docs/benchmarks-host-schema.md (no index layouts: those are the app's tables').

    python -m bench.escalations [--quick] [--skip-indexes] [--host-schema] [--output PATH]
"""

import argparse
import os
import platform
import sys
import time
from datetime import timedelta
from pathlib import Path
from unittest import mock

from . import business
from .report import Report
from .timing import Measurement, interleaved, peak_memory, seconds
from .variants import PERIOD, SHAPES_AT, agree, best_params, best_sql, endpoint_statement, fail, variants_for

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/flowpilot_bench"
ROOT = Path(__file__).resolve().parent.parent
# The naive path is several times slower; three timed rounds give its median.
NAIVE_ROUNDS = {"naive Python": 3}
CROSS_NAIVE_ROUNDS = {"naive Python": 2}
APP_SETTINGS = "config.settings"
HOST_SCHEMA_SETTINGS = "tests.settings_host_models"

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
    parser.add_argument("--host-schema", action="store_true",
                        help="a host's own models and tables (tests/host_app), to docs/benchmarks-host-schema.md; "
                             "use a database of its own")
    parser.add_argument("--business-only", action="store_true",
                        help="only the business clock at 60k and 600k (issue 15): its section of the report "
                             "is replaced, the rest of the file kept")
    parser.add_argument("--output", default=None, help="report file (default docs/benchmarks.md, or "
                                                       "docs/benchmarks-host-schema.md with --host-schema)")
    args = parser.parse_args(argv)

    url = os.environ.get("BENCH_DATABASE_URL") or DEFAULT_URL
    output = args.output or str(ROOT / "docs" / ("benchmarks-host-schema.md" if args.host_schema else "benchmarks.md"))
    _prepare_database(url)
    _setup_django(url, settings=HOST_SCHEMA_SETTINGS if args.host_schema else APP_SETTINGS)
    Bench(quick=args.quick, compare_indexes=not (args.skip_indexes or args.host_schema),
          host_schema=args.host_schema, business_only=args.business_only).run(Path(output))


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


def _setup_django(url, *, settings):
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = settings
    # DEBUG off: no query log growing in memory, as in production.
    os.environ["DJANGO_DEBUG"] = "false"
    os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-only-not-a-secret-" + "x" * 40)
    os.environ.pop("FLOWPILOT_ANALYTICS_DATABASE_URL", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


class Bench:
    """One run: the data set, then each measurement, then the report."""

    def __init__(self, *, quick, compare_indexes, host_schema=False, business_only=False):
        self.quick = quick
        self.business_only = business_only
        self.compare_indexes = compare_indexes
        self.host_schema = host_schema

    def log(self, message=""):
        print(message, flush=True)

    # -- the run ---------------------------------------------------------------

    def run(self, output):
        from django.core.management import call_command
        from django.db import connection

        from .data import ANCHOR, WINDOW_DAYS, ensure_dataset, schema

        started = time.perf_counter()
        load_before = os.getloadavg()
        self.log(
            f"Benchmark database: {connection.settings_dict['NAME']} on {connection.settings_dict['HOST']}"
        )
        call_command("migrate", verbosity=0, interactive=False)
        if self.host_schema:
            # The indexes a host is told to make (manage.py metric_indexes), before the data.
            call_command("metric_indexes", "--apply", stdout=sys.stdout)
        self.schema = schema()
        build_started = time.perf_counter()
        accounts, built = ensure_dataset(self.log)
        build_seconds = time.perf_counter() - build_started
        self.start, self.end = ANCHOR - timedelta(days=WINDOW_DAYS), ANCHOR
        if self.business_only:
            self.business_section(output, load_before)
            return

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
        if not self.host_schema:
            text = business.splice(text, self.business_text(load_before))
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        self.log("")
        self.log(report.summary())
        self.log(f"\nWritten to {output} ({report.total_seconds:.0f} s in all).")

    def business_text(self, load_before):
        from .data import ensure_dataset

        accounts, _ = ensure_dataset(self.log)
        measured = business.measure(
            accounts, start=self.start, end=self.end, rounds=3 if self.quick else 7, log=self.log
        )
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load = (tuple(round(x, 2) for x in load_before), tuple(round(x, 2) for x in os.getloadavg()))
        return business.section(measured, when=when, load=load)

    def business_section(self, output, load_before):
        """``--business-only``: the business clock's section of ``output``, the rest of the file kept."""
        text = self.business_text(load_before)
        existing = output.read_text() if output.exists() else ""
        output.write_text(business.splice(existing, text))
        self.log("\n" + text)
        self.log(f"Written to {output}.")

    def measure_account(self, account, *, rounds):
        from .data import account_key, bench_token

        key = account_key(account)
        self.log(f"\n{key}: {rounds} rounds of each variant")
        variants = variants_for(
            [account.pk],
            start=self.start,
            end=self.end,
            token=bench_token(account),
            tuned=key == "bench-600k",
            shapes=SHAPES_AT.get(key, ()),
        )
        with self.clock_at_anchor():
            timings, results = interleaved(variants, rounds=rounds, max_rounds=NAIVE_ROUNDS)
        agree(results, key)
        memory = {name: peak_memory(variants[name]) for name in ("endpoint query", "naive Python")}
        result = Measurement(
            label=f"one account, {results['floor']:,} claimed",
            slug=key,
            handoffs=results["floor"],
            timings=timings,
            memory=memory,
        )
        self.log(result.line())
        return result

    def measure_cross_account(self, accounts, *, rounds):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from flowpilot_analytics.selectors import escalation_metrics_by_account

        account_ids = sorted(account.pk for account in accounts)
        self.log(f"\n{len(account_ids)} accounts at once: {rounds} rounds of each variant")
        with CaptureQueriesContext(connection) as queries:
            escalation_metrics_by_account(accounts=account_ids, period=PERIOD, now=self.end)
        variants = variants_for(account_ids, start=self.start, end=self.end)
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
                variants = {
                    slug: variants_for(ids, start=self.start, end=self.end)["endpoint query"]
                    for slug, ids in cases
                }
                # No warm-up round: the index was just built, its pages are cached.
                timings, _ = interleaved(variants, rounds=rounds, warmup=0)
                transaction.set_rollback(True)
            measured.append((name, timings, build))
            self.log(f"  {name}: " + ", ".join(f"{slug} {seconds(t.median)}" for slug, t in timings.items()))
        return measured

    def collect_plans(self, accounts):
        from django.db import connection

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
                    sql, params = endpoint_statement(ids, self.start, self.end)
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
            "schema": (
                "a host's own models (tests/host_app: desk_ticket, desk_ticket_event without an account column, "
                "desk_escalation; the indexes metric_indexes asks for)"
                if self.host_schema else "the app's own models (ai_session, ai_session_step, session_handoff)"
            ),
            "machine": f"{os.cpu_count()} CPUs{memory}, {platform.system()} {platform.release()}",
            "software": f"Python {platform.python_version()}, Django {django.get_version()}, "
            f"PostgreSQL {settings.pop('server_version').split()[0]}",
            "postgresql settings": ", ".join(f"{key}={value}" for key, value in settings.items()),
        }

    def data_shape(self):
        from django.db import connection

        from flowpilot_analytics.indexes import existing_indexes, wanted_indexes

        names = self.schema
        probe = next(index for index in wanted_indexes() if index.purpose == "probe")
        probe_index = next(index.name for index in existing_indexes(connection, probe.table) if probe.served_by(index))
        with connection.cursor() as cursor:
            cursor.execute(f"""
                SELECT (SELECT count(*) FROM {names.account_table}),
                       (SELECT count(*) FROM {names.session_table}),
                       (SELECT count(*) FROM {names.handoff_table}),
                       (SELECT count(*) FROM {names.handoff_table} WHERE {names.handoff_claimed} IS NOT NULL),
                       (SELECT count(*) FROM {names.step_table}),
                       pg_size_pretty(pg_total_relation_size(%s)),
                       pg_size_pretty(pg_relation_size(%s)),
                       pg_size_pretty(pg_total_relation_size(%s))
                """, [names.step_table, probe_index, names.handoff_table])
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
                    f"probe index ({probe_index})",
                    "handoff table with indexes",
                ],
                row,
            )
        )

if __name__ == "__main__":
    main()
