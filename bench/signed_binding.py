"""
What the signed tenant binding costs: the metric's statement as the app role, old policies vs signed ones.

Migration 0010 made the policies read the bound account through
``(SELECT flowpilot_analytics_bound_account())``, which checks an HMAC in SQL,
instead of ``current_setting('flowpilot.account_id')``. This times, in
interleaved rounds, ``escalation_metrics`` of one account for each period:

* as the owner, a superuser: RLS bypassed (the floor),
* as the app role under the policies as migration 0007 left them (the settings read directly),
* as the app role under the signed policies of migration 0010,

and prints medians and the median per-round ratio signed / before, to
docs/benchmarks-signed-binding.md. The old policies are put back inside each
timed round's transaction, which is rolled back. The data (two accounts of
about ``--handoffs`` claimed handoffs each in the last 90 days, 10 steps per
session) are generated in BENCH_DATABASE_URL (its name must contain "bench";
default postgres://postgres@127.0.0.1:5432/flowpilot_bench_binding) and reused.

    python -m bench.signed_binding [--handoffs 60000] [--rounds 15] [--output PATH]
"""

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from .escalations import _prepare_database, _setup_django
from .timing import interleaved

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/flowpilot_bench_binding"
PERIODS = ("7d", "30d", "90d")
TENANT_TABLES = ("ai_session", "ai_session_step", "session_handoff")
OLD_ACCOUNT = "NULLIF(current_setting('flowpilot.account_id', true), '')::bigint"
OLD_USER = "NULLIF(current_setting('flowpilot.user_id', true), '')::bigint"
# The policies as migrations 0002 and 0005 made them (what 0010 replaced).
OLD_POLICIES = [
    *(statement for table in TENANT_TABLES for statement in (
        f"DROP POLICY tenant_isolation ON {table}",
        f"CREATE POLICY tenant_isolation ON {table} FOR ALL USING (account_id = {OLD_ACCOUNT}) "
        f"WITH CHECK (account_id = {OLD_ACCOUNT})",
    )),
    "DROP POLICY account_memberships ON flowpilot_analytics_membership",
    "CREATE POLICY account_memberships ON flowpilot_analytics_membership FOR SELECT "
    f"USING (user_id = {OLD_USER} OR account_id = {OLD_ACCOUNT})",
]
SLUGS = ("binding-a", "binding-b")


def build(handoffs):
    """Two accounts of ``handoffs`` claimed handoffs each over 90 days (reused when already there)."""
    from django.db import connection, transaction

    from flowpilot_analytics.models import Account, SessionHandoff

    accounts = {slug: Account.objects.get_or_create(slug=slug, defaults={"name": slug})[0] for slug in SLUGS}
    counts = [SessionHandoff.objects.filter(account=account).count() for account in accounts.values()]
    if counts == [handoffs] * len(accounts):
        return accounts
    print(f"building {handoffs} handoffs per account", flush=True)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('flowpilot.cross_account', 'on', true)")
        cursor.execute("TRUNCATE ai_session, ai_session_step, session_handoff")
        for account in accounts.values():
            cursor.execute(
                """
                WITH made AS (
                    INSERT INTO ai_session (account_id, created_at)
                    SELECT %(account)s, now() - (n * interval '90 days' / %(n)s) - interval '5 minutes'
                    FROM generate_series(1, %(n)s) AS n
                    RETURNING id, account_id, created_at
                ), handoffs AS (
                    INSERT INTO session_handoff (session_id, account_id, created_at, claimed_at)
                    SELECT id, account_id, created_at + interval '1 minute', created_at + interval '2 minutes'
                    FROM made
                )
                INSERT INTO ai_session_step (session_id, account_id, created_at)
                SELECT id, account_id, created_at + step * interval '37 seconds'
                FROM made CROSS JOIN generate_series(1, 10) AS step
                """,
                {"account": account.pk, "n": handoffs},
            )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return accounts


def measure(account, *, app_role, rounds):
    from django.db import connection, transaction

    from flowpilot_analytics import rls
    from flowpilot_analytics.selectors import escalation_metrics

    def variant(period, role, old_policies=False):
        def run():
            with transaction.atomic():
                with connection.cursor() as cursor:
                    for statement in OLD_POLICIES if old_policies else ():
                        cursor.execute(statement)
                    if role:
                        cursor.execute(f"SET LOCAL ROLE {role}")
                rls.bind_account(account)
                started = time.perf_counter()
                figures = escalation_metrics(account=account, period=period, now=now)
                elapsed = time.perf_counter() - started
                transaction.set_rollback(True)
            return elapsed, figures.n_handoffs_claimed

        return run

    from django.utils import timezone as django_timezone

    # One "now" for every round: the window's edges do not move between variants.
    now = django_timezone.now()
    results = {}
    for period in PERIODS:
        variants = {
            "bypassed": variant(period, None),
            "before": variant(period, app_role, old_policies=True),
            "signed": variant(period, app_role),
        }
        samples = {name: [] for name in variants}
        claimed = {}
        # interleaved() times the whole round (the DDL too): each variant keeps its statement's own time.
        interleaved({name: _collecting(run, samples[name], claimed, name) for name, run in variants.items()},
                    rounds=rounds)
        results[period] = samples, claimed
    return results


def function_cost(account, *, app_role, calls=2000, rounds=5):
    """Seconds one call of the signed function takes (median of ``rounds``), as the app role, bound."""
    import statistics

    from django.db import connection, transaction

    from flowpilot_analytics import rls

    samples = []
    for _ in range(rounds):
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL ROLE {app_role}")
                rls.bind_account(account)
                started = time.perf_counter()
                cursor.execute(
                    "SELECT count(flowpilot_analytics_bound_account()) FROM generate_series(1, %s)", [calls]
                )
                assert cursor.fetchone()[0] == calls, "the binding was not accepted"
                samples.append((time.perf_counter() - started) / calls)
            transaction.set_rollback(True)
    return statistics.median(samples)


def _collecting(run, samples, claimed, name):
    first = [True]

    def collect():
        elapsed, n = run()
        if first[0]:
            first[0] = False  # the warm-up round
        else:
            samples.append(elapsed)
        claimed[name] = n

    return collect


def report(results, *, handoffs, rounds, command, per_call):
    import statistics

    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        [version] = cursor.fetchone()
    ms = lambda value: f"{value * 1000:.2f}"  # noqa: E731
    lines = []
    for period, (samples, claimed) in results.items():
        medians = {name: statistics.median(values) for name, values in samples.items()}
        ratio = statistics.median(a / b for a, b in zip(samples["signed"], samples["before"]))
        assert len(set(claimed.values())) == 1, f"the variants disagree: {claimed}"
        lines.append(f"| {period} | {claimed['signed']} | {ms(medians['bypassed'])} | "
                     f"{ms(medians['before'])} | {ms(medians['signed'])} | {ratio:.2f} |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    return f"""# What the signed tenant binding costs

Generated by `{command}` ([bench/signed_binding.py](../bench/signed_binding.py)) on
{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, on this machine ({os.cpu_count()} cores shared with other
work, {platform.machine()}, Python {platform.python_version()}, PostgreSQL {version}).

The metric's statement (`escalation_metrics`, one account of two, each of about {handoffs} claimed
handoffs over 90 days with 10 steps per session), median of {rounds} interleaved rounds, in ms: as a
superuser (RLS bypassed), as the app role under the policies before migration `0010` (the
settings read with `current_setting`), and as the app role under the signed policies of `0010`
(`account_id = (SELECT flowpilot_analytics_bound_account())`, which verifies an HMAC-SHA256 in SQL).
The last column is the median of the per-round ratios signed / before.

| period | handoffs | RLS bypassed | app role, before 0010 | app role, signed (0010) | signed / before |
|---|---|---|---|---|---|
{table}

One call of `flowpilot_analytics_bound_account()` (the HMAC over the stored key) costs
{per_call * 1e6:.0f} µs (as the app role, median of 5 runs of 2000 calls). The policies call it as a
scalar subquery: PostgreSQL runs it once per statement per table reference (an InitPlan), not once
per row, and compares `account_id` with its result as with a constant, so the index scans are
unchanged (tests/test_query_plan.py): a fixed cost of that much per table reference, whatever the
number of rows, within the rounds' noise above.
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handoffs", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks-signed-binding.md"))
    args = parser.parse_args(argv)
    url = os.environ.get("BENCH_DATABASE_URL") or DEFAULT_URL
    _prepare_database(url)
    _setup_django(url, settings="config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from flowpilot_analytics.db_roles import DEFAULT_APP_ROLE, ensure_app_role

    call_command("migrate", verbosity=0, interactive=False)
    ensure_app_role(DEFAULT_APP_ROLE)
    accounts = build(args.handoffs)
    results = measure(accounts[SLUGS[0]], app_role=DEFAULT_APP_ROLE, rounds=args.rounds)
    per_call = function_cost(accounts[SLUGS[0]], app_role=DEFAULT_APP_ROLE)
    print(f"one call of the signed function: {per_call * 1e6:.0f} µs", flush=True)
    command = "python -m bench.signed_binding " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(results, handoffs=args.handoffs, rounds=args.rounds, command=command.strip(),
                  per_call=per_call)
    Path(args.output).write_text(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
