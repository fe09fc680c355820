"""
`make bench` (second part): the first-action index, with and without, on the benchmark's data set.

Reuses (or builds) the data set of :mod:`bench.data` in BENCH_DATABASE_URL, then:

* installs the triggers and times the backfill of every claimed handoff (about 1M),
  and ``verify`` over all of them (the differences must be zero);
* times the endpoint's statement per account (1k, 60k, 600k claimed handoffs,
  90 days) and for the 100 accounts in one statement, with the index off (the
  probe) and on (the stored value), against the floor (a bare index count of the
  same handoffs), in interleaved rounds; the figures must be equal;
* times the writes the triggers slow down, each in a transaction rolled back,
  with the triggers and with them disabled: steps inserted in bulk (one
  statement) and one by one, claims updated in bulk and one by one (from the
  client, and in a server-side PL/pgSQL loop without round trips).

Prints the targets of issue #16 and writes its section of docs/benchmarks.md
(between the ``first-action-index`` markers; the rest of the file is
:mod:`bench.escalations`'). The data set is left as found: the triggers are
removed and the index emptied at the end.

    python -m bench.first_action [--quick] [--output PATH]

(``--host-schema``, which `make bench` may pass on, skips it: the host schema's
tables are not measured here.)
"""

import argparse
import os
import statistics
import time
from datetime import timedelta
from pathlib import Path

from .escalations import APP_SETTINGS, DEFAULT_URL, ROOT, _prepare_database, _setup_django
from .timing import interleaved, seconds
from .variants import PERIOD, agree, fail, figures_of

START_MARK = "<!-- first-action-index -->"
END_MARK = "<!-- /first-action-index -->"
WRITE_ROWS_BULK = 20_000
WRITE_ROWS_SINGLE = 2_000
TARGETS = {
    "ratio_600k": 3.0,       # the 600k account, 90d: at most 3x the floor
    "all_seconds": 0.5,      # 1M handoffs across 100 accounts, one statement
    "write_us": 15.0,        # per step insert and per claim
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    # `make bench` passes the same BENCH_ARGS to both parts.
    parser.add_argument("--skip-indexes", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--host-schema", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.host_schema:
        print("The first-action index is measured on the app's own tables only: skipped with --host-schema.")
        return
    url = os.environ.get("BENCH_DATABASE_URL") or DEFAULT_URL
    _prepare_database(url)
    _setup_django(url, settings=APP_SETTINGS)
    FirstActionBench(quick=args.quick).run(Path(args.output))


def log(message=""):
    print(message, flush=True)


class FirstActionBench:
    def __init__(self, *, quick):
        self.quick = quick
        self.lines = []

    def run(self, output):
        from django.core.management import call_command
        from django.db import connection

        from flowpilot_analytics import first_action_index as index

        from .data import ANCHOR, WINDOW_DAYS, ensure_dataset

        started = time.perf_counter()
        self.load_before = os.getloadavg()
        call_command("migrate", verbosity=0, interactive=False)
        accounts, _ = ensure_dataset(log)
        self.start, self.end = ANCHOR - timedelta(days=WINDOW_DAYS), ANCHOR

        log("Installing the triggers and backfilling every claimed handoff...")
        index.remove()
        index.install()
        backfill_started = time.perf_counter()
        written = index.backfill(batch_size=index.BACKFILL_BATCH, vacuum=False)
        backfill_seconds = time.perf_counter() - backfill_started
        vacuum_started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {index.TABLE}")
        vacuum_seconds = time.perf_counter() - vacuum_started
        log(f"  {written:,} rows in {backfill_seconds:.1f} s (+ VACUUM ANALYZE {vacuum_seconds:.1f} s)")
        verify_started = time.perf_counter()
        differences = index.verify()
        verify_seconds = time.perf_counter() - verify_started
        log(f"  verify: {len(differences)} differences, {verify_seconds:.1f} s")

        reads = []
        for slug, rounds in (("bench-1k", 15), ("bench-60k", 11), ("bench-600k", 7)):
            reads.append(self.measure_reads(slug, [accounts[slug].pk], rounds=3 if self.quick else rounds))
        every = sorted(account.pk for account in accounts.values())
        reads.append(self.measure_reads(f"{len(every)} accounts", every, rounds=2 if self.quick else 5))

        writes = self.measure_writes(accounts["bench-600k"].pk, rounds=2 if self.quick else 5)
        after_writes = index.verify()
        log(f"  verify after the write rounds (rolled back): {len(after_writes)} differences")
        index.remove()

        report = self.markdown(written=written, backfill_seconds=backfill_seconds, vacuum_seconds=vacuum_seconds,
                               verify_seconds=verify_seconds, differences=len(differences) + len(after_writes),
                               reads=reads, writes=writes, total=time.perf_counter() - started)
        self.write(output, report)
        log("")
        log(self.summary(reads, writes, len(differences) + len(after_writes)))
        log(f"\nWritten to {output}.")

    # -- reads ---------------------------------------------------------------------

    def measure_reads(self, label, account_ids, *, rounds):
        from django.db import connection, transaction

        from flowpilot_analytics import first_action_index as index
        from flowpilot_analytics import rls
        from flowpilot_analytics.conf import app_settings
        from flowpilot_analytics.field_map import all_handoffs
        from flowpilot_analytics.selectors import escalation_metrics, escalation_metrics_by_account

        single = len(account_ids) == 1
        end = self.end

        def endpoint(on, *, request_memory=True):
            # As the endpoint runs it: in a transaction with the request's work_mem (WORK_MEM), set
            # with its other settings in one statement (rls.bind_user); or with the server's.
            def run():
                app_settings.FIRST_ACTION_INDEX = on
                try:
                    with transaction.atomic():
                        if request_memory:
                            rls.set_local(["default"], rls.request_memory())
                        if single:
                            return figures_of(escalation_metrics(account=account_ids[0], period=PERIOD, now=end))
                        by_account = escalation_metrics_by_account(accounts=account_ids, period=PERIOD, now=end)
                        return {pk: figures_of(metrics) for pk, metrics in by_account.items()}
                finally:
                    app_settings.FIRST_ACTION_INDEX = False
            return run

        def floor():
            return all_handoffs().filter(
                account_id__in=account_ids, claimed_at__gte=self.start, claimed_at__lte=end).count()

        app_settings.FIRST_ACTION_INDEX = True
        reads_the_index = index.handoffs_with_first_action().model._meta.db_table == index.TABLE
        app_settings.FIRST_ACTION_INDEX = False
        if not reads_the_index:
            fail("the index is on but not ready: the faces would probe")
        log(f"\n{label}: {rounds} rounds")
        variants = {"probe (index off)": endpoint(False), "index on": endpoint(True),
                    "index on, server's work_mem": endpoint(True, request_memory=False), "floor": floor}
        timings, results = interleaved(variants, rounds=rounds)
        # The stored values must give the probe's figures, to the millisecond.
        agree({"endpoint query": results["probe (index off)"], "index on": results["index on"],
               "index on, server's work_mem": results["index on, server's work_mem"],
               "floor": results["floor"]}, label)
        with connection.cursor() as cursor:
            cursor.execute("SHOW work_mem")
            server_work_mem = cursor.fetchone()[0]
        pairs = zip(timings["index on"].samples, timings["floor"].samples)
        ratio_floor = statistics.median(a / b for a, b in pairs)
        pairs = zip(timings["probe (index off)"].samples, timings["index on"].samples)
        speedup = statistics.median(a / b for a, b in pairs)
        line = {
            "label": label, "claimed": results["floor"],
            "probe": timings["probe (index off)"].median, "on": timings["index on"].median,
            "floor": timings["floor"].median, "ratio_floor": ratio_floor, "speedup": speedup,
            "on_server_memory": timings["index on, server's work_mem"].median, "server_work_mem": server_work_mem,
            "work_mem": app_settings.WORK_MEM,
        }
        log(f"  probe {seconds(line['probe'])}, index on {seconds(line['on'])}, floor {seconds(line['floor'])}: "
            f"{speedup:.1f}x faster, {ratio_floor:.2f}x the floor (work_mem {line['work_mem']}; with the "
            f"server's {server_work_mem}: {seconds(line['on_server_memory'])})")
        return line

    # -- writes --------------------------------------------------------------------

    def measure_writes(self, account_id, *, rounds):
        from django.db import connection, transaction

        from flowpilot_analytics.field_map import metric_tables

        tables = metric_tables()
        step, handoff = tables.step, tables.handoff
        log(f"\nWrites ({rounds} rounds each, every one rolled back)")
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {handoff.pk}, {handoff.session}, {handoff.claimed_at} FROM {handoff.name} "
                f"WHERE {handoff.account} = %s AND {handoff.claimed_at} IS NOT NULL ORDER BY {handoff.pk} DESC LIMIT %s",
                [account_id, WRITE_ROWS_BULK + WRITE_ROWS_SINGLE],
            )
            rows = cursor.fetchall()
        # Separate handoffs for the bulk and the single-row rounds.
        claimed, single = rows[:WRITE_ROWS_BULK], rows[WRITE_ROWS_BULK:]
        step_account = f", {step.account}" if step.account else ""
        step_value = ", %s" if step.account else ""

        def insert_steps_bulk(after):
            def work(cursor):
                cursor.execute(
                    f"INSERT INTO {step.name} ({step.session}{step_account}, {step.created_at}) "
                    f"SELECT session, {'%s, ' if step.account else ''}claimed + %s "
                    "FROM unnest(%s::bigint[], %s::timestamptz[]) AS c (session, claimed)",
                    [*([account_id] if step.account else []), after, [row[1] for row in claimed],
                     [row[2] for row in claimed]],
                )
                return len(claimed)
            return work

        def insert_steps_single(after):
            def work(cursor):
                sql = (f"INSERT INTO {step.name} ({step.session}{step_account}, {step.created_at}) "
                       f"VALUES (%s{step_value}, %s)")
                for _, session, claimed_at in single:
                    cursor.execute(sql, [session, *([account_id] if step.account else []), claimed_at + after])
                return len(single)
            return work

        def literal(values):
            return "'{" + ",".join(f'"{value}"' if not isinstance(value, int) else str(value) for value in values) + "}'"

        def insert_steps_loop(after):
            # The same single-row statements run by PL/pgSQL on the server: no client round trip in
            # either timing, so the difference is the triggers' own cost per statement.
            def work(cursor):
                account = f"{account_id}, " if step.account else ""
                cursor.execute(
                    f"DO $$ DECLARE s bigint[] := {literal([row[1] for row in single])}; "
                    f"t timestamptz[] := {literal([(row[2] + after).isoformat() for row in single])}; "
                    "BEGIN FOR i IN 1..array_length(s, 1) LOOP "
                    f"INSERT INTO {step.name} ({step.session}{step_account}, {step.created_at}) "
                    f"VALUES (s[i], {account}t[i]); END LOOP; END $$"
                )
                return len(single)
            return work

        def claim_loop(cursor):
            cursor.execute(
                f"DO $$ DECLARE h bigint[] := {literal([row[0] for row in single])}; "
                "BEGIN FOR i IN 1..array_length(h, 1) LOOP "
                f"UPDATE {handoff.name} SET {handoff.claimed_at} = {handoff.claimed_at} + interval '1 second' "
                f"WHERE {handoff.pk} = h[i]; END LOOP; END $$"
            )
            return len(single)

        first, later = timedelta(seconds=7), timedelta(days=3)

        def claim_bulk(cursor):
            cursor.execute(
                f"UPDATE {handoff.name} SET {handoff.claimed_at} = {handoff.claimed_at} + interval '1 second' "
                f"WHERE {handoff.pk} = ANY(%s)",
                [[row[0] for row in claimed]],
            )
            return len(claimed)

        def claim_single(cursor):
            sql = f"UPDATE {handoff.name} SET {handoff.claimed_at} = %s WHERE {handoff.pk} = %s"
            for pk, _, claimed_at in single:
                cursor.execute(sql, [claimed_at + timedelta(seconds=1), pk])
            return len(single)

        def timed(work, table, *, triggers):
            class Rollback(Exception):
                pass

            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    if not triggers:
                        cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
                    started = time.perf_counter()
                    rows = work(cursor)
                    elapsed = time.perf_counter() - started
                    raise Rollback
            except Rollback:
                pass
            return elapsed, rows

        def vacuum():
            # Each kind of write starts from the same state: the rounds before it, rolled back,
            # left dead rows (and index entries) in the tables the triggers read and write.
            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM {index_table}, {handoff.name}")

        from flowpilot_analytics.first_action_index import TABLE as index_table

        results = []
        for label, work, table in (
            (f"step insert, bulk ({len(claimed):,} rows, one statement), each a first action",
             insert_steps_bulk(first), step.name),
            (f"step insert, bulk ({len(claimed):,} rows), after the first action (the common case)",
             insert_steps_bulk(later), step.name),
            (f"step insert, single-row ({len(single):,} statements), each a first action",
             insert_steps_single(first), step.name),
            (f"step insert, single-row ({len(single):,} statements), after the first action",
             insert_steps_single(later), step.name),
            (f"step insert, single-row, server-side loop ({len(single):,} statements), each a first action",
             insert_steps_loop(first), step.name),
            (f"step insert, single-row, server-side loop ({len(single):,} statements), after the first action",
             insert_steps_loop(later), step.name),
            (f"claim (re-claim), bulk ({len(claimed):,} rows, one statement)", claim_bulk, handoff.name),
            (f"claim, single-row ({len(single):,} statements)", claim_single, handoff.name),
            (f"claim, single-row, server-side loop ({len(single):,} statements)", claim_loop, handoff.name),
        ):
            samples = {True: [], False: []}
            rows = 0
            vacuum()
            timed(work, table, triggers=True)  # warm-up
            # The single-row rounds are short: more of them.
            for _ in range(rounds if "bulk" in label else rounds * 3):
                for triggers in (False, True):
                    elapsed, rows = timed(work, table, triggers=triggers)
                    samples[triggers].append(elapsed)
            without, with_ = statistics.median(samples[False]), statistics.median(samples[True])
            per_row = (with_ - without) / rows * 1e6
            line = {"label": label, "rows": rows, "without_us": without / rows * 1e6,
                    "with_us": with_ / rows * 1e6, "overhead_us": per_row}
            log(f"  {label}: {line['without_us']:.1f} µs/row without, {line['with_us']:.1f} µs/row with: "
                f"+{per_row:.1f} µs")
            results.append(line)
        return results

    # -- report --------------------------------------------------------------------

    def targets(self, reads, writes, differences):
        by_label = {line["label"]: line for line in reads}
        big = by_label["bench-600k"]
        every = reads[-1]
        worst_write = max(line["overhead_us"] for line in writes)
        return [
            (f"600k-handoff account, 90d: at most {TARGETS['ratio_600k']:.0f}x the floor",
             f"{big['ratio_floor']:.2f}x ({seconds(big['on'])} vs floor {seconds(big['floor'])})",
             big["ratio_floor"] <= TARGETS["ratio_600k"]),
            (f"{every['claimed']:,} handoffs across {every['label']}, one statement: under "
             f"{TARGETS['all_seconds']} s", seconds(every["on"]), every["on"] < TARGETS["all_seconds"]),
            (f"write overhead under {TARGETS['write_us']:.0f} µs per step insert and per claim",
             f"at most +{worst_write:.1f} µs", worst_write < TARGETS["write_us"]),
            ("verify: zero differences (after the backfill and after the write rounds)", str(differences),
             differences == 0),
        ]

    def summary(self, reads, writes, differences):
        return "Targets (issue #16):\n" + "\n".join(
            f"  [{'met' if ok else 'MISSED'}] {name}: {value}"
            for name, value, ok in self.targets(reads, writes, differences))

    def markdown(self, *, written, backfill_seconds, vacuum_seconds, verify_seconds, differences, reads, writes,
                 total):
        lines = [
            START_MARK,
            "## The first-action index (`FIRST_ACTION_INDEX`)",
            "",
            "Measured by `python -m bench.first_action` (the second part of `make bench`) on the data set above; "
            "docs/first-action-index.md explains the design. Medians of interleaved rounds; "
            f"{'a quick run (few rounds). ' if self.quick else ''}Total {total:.0f} s; load average "
            f"{self.load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after (2 cores: compare ratios).",
            "",
            "### Targets",
            "",
            "| target | measured | |",
            "|---|---|---|",
        ]
        for name, value, ok in self.targets(reads, writes, differences):
            lines.append(f"| {name} | {value} | {'met' if ok else '**missed**'} |")
        lines += [
            "",
            "### Reads: the endpoint's statement, 90 days",
            "",
            f"As the endpoint runs it: in a transaction whose `work_mem` is `WORK_MEM` ({reads[0]['work_mem']}, "
            "set with the statement timeout); the last column is the same statement with the server's "
            f"`work_mem` ({reads[0]['server_work_mem']}), where the percentiles' sort of the largest accounts "
            "spills to disk.",
            "",
            "| scale | claimed | probe (index off) | index on | floor | faster | on / floor | on, server's work_mem |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for line in reads:
            lines.append(f"| {line['label']} | {line['claimed']:,} | {seconds(line['probe'])} | {seconds(line['on'])} "
                         f"| {seconds(line['floor'])} | {line['speedup']:.1f}x | {line['ratio_floor']:.2f}x "
                         f"| {seconds(line['on_server_memory'])} |")
        lines += [
            "",
            "### Writes: what the triggers add",
            "",
            "Each round runs in a transaction rolled back, once with the triggers and once with them disabled "
            "(`ALTER TABLE ... DISABLE TRIGGER USER`), in alternation; each kind of write starts after a "
            "`VACUUM` of the index and handoff tables (the rounds before, rolled back, leave dead rows) and "
            f"has {WRITE_ROWS_SINGLE:,} handoffs of its own for single rows, {WRITE_ROWS_BULK:,} in bulk, with "
            "three times as many single-row rounds as bulk ones; single-row rounds include the client round trip of each "
            "statement (the same in both, but its noise swamps the difference on a loaded machine), the "
            "server-side loops run the same single-row statements in one PL/pgSQL `DO` block (one statement "
            "each, so one trigger call each, no round trip): their difference is the triggers' own cost. The steps go into sessions with a claimed handoff, either 7 s after the "
            "claim (each one becomes a first action: the trigger's most expensive case, an update of the "
            "index's row) or 3 days after it (later than the first action: most steps of a session).",
            "",
            "| write | without | with | overhead per row |",
            "|---|---|---|---|",
        ]
        for line in writes:
            lines.append(f"| {line['label']} | {line['without_us']:.1f} µs | {line['with_us']:.1f} µs "
                         f"| +{line['overhead_us']:.1f} µs |")
        lines += [
            "",
            "### Backfill and verify",
            "",
            f"- backfill: {written:,} rows in {backfill_seconds:.1f} s "
            f"({written / backfill_seconds:,.0f} rows/s, batches of 5,000, each its own transaction), "
            f"then `VACUUM (ANALYZE)` of the table in {vacuum_seconds:.1f} s;",
            f"- verify over every claimed handoff: {verify_seconds:.1f} s, {differences} differences.",
            END_MARK,
        ]
        return "\n".join(lines) + "\n"

    def write(self, output, section):
        text = output.read_text() if output.exists() else ""
        if START_MARK in text and END_MARK in text:
            before = text[:text.index(START_MARK)]
            after = text[text.index(END_MARK) + len(END_MARK):].lstrip("\n")
            text = before + section + ("\n" + after if after else "")
        else:
            text = text.rstrip("\n") + "\n\n" + section
        output.write_text(text)


if __name__ == "__main__":
    main()
