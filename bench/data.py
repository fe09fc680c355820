"""
The benchmark's data set, generated inside PostgreSQL and reused between runs.

Three accounts of about 1k, 60k and 600k claimed handoffs in the last 90 days,
and 97 more of about 3.5k each: about 1M claimed handoffs in all, spread over 92
days so that the 90-day window has edges to find. One handoff per session, 95%
of them claimed; 10 to 15 steps per session, a claim somewhere among them (so
about one claim in eight has no later step). Session ids follow time across all
accounts, as in a shared production table.

Rows are made by INSERT ... SELECT over generate_series (never through the ORM),
with the secondary indexes and foreign keys of the big tables dropped during
the load and rebuilt afterwards (the foreign keys validated, which also proves
the generated rows consistent). A table ``bench_dataset`` records what was
built; a later run reuses the data when that record and the row counts agree.
"""

import time
from datetime import datetime, timezone

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from rest_framework.authtoken.models import Token

from flowpilot_analytics.models import Account, Membership

# The clock the whole benchmark runs at: data are generated before it, and
# every measurement (the HTTP request too) sees it as "now".
ANCHOR = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
SPAN_DAYS = 92
WINDOW_DAYS = 90
CLAIMED_SHARE = 0.95

# slug -> claimed handoffs wanted in the 90-day window
SCALES = {"bench-1k": 1_000, "bench-60k": 60_000, "bench-600k": 600_000}
OTHER_ACCOUNTS = 97
OTHER_CLAIMED = 3_500
SPEC = f"v1 anchor={ANCHOR.isoformat()} span={SPAN_DAYS} scales={sorted(SCALES.items())} others={OTHER_ACCOUNTS}x{OTHER_CLAIMED}"

LOADED_TABLES = ("ai_session", "session_handoff", "ai_session_step")
PASSWORD_UNUSED = "!"  # bench users authenticate by token only


def plan():
    """``[(slug, claimed handoffs wanted)]``, the three measured accounts first."""
    others = [(f"bench-other-{index:02d}", OTHER_CLAIMED) for index in range(1, OTHER_ACCOUNTS + 1)]
    return [*SCALES.items(), *others]


def ensure_dataset(log):
    """Build the data set unless an identical one is present: ``({slug: account}, built)``."""
    built = not _dataset_is_present()
    if built:
        log("Building the data set in PostgreSQL (about a minute on 2 cores)...")
        started = time.perf_counter()
        _build()
        log(f"Built in {time.perf_counter() - started:.0f} s.")
    else:
        log("Data set present (same spec, same row counts): reused.")
    accounts = {account.slug: account for account in Account.objects.filter(slug__startswith="bench-")}
    return accounts, built


def bench_token(account):
    """The API token of the bench engineer of ``account`` (created with the data)."""
    return Token.objects.get(user__username=f"{account.slug}-engineer").key


def _dataset_is_present():
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('bench_dataset') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return False
        cursor.execute("SELECT spec, sessions, handoffs, steps FROM bench_dataset")
        recorded = cursor.fetchone()
        if recorded is None or recorded[0] != SPEC:
            return False
        return recorded[1:] == _row_counts(cursor)


def _row_counts(cursor):
    counts = []
    for table in LOADED_TABLES:
        cursor.execute(f"SELECT count(*) FROM {table}")
        counts.append(cursor.fetchone()[0])
    return tuple(counts)


def _build():
    with transaction.atomic(), connection.cursor() as cursor:
        # The benchmark database holds nothing else (see bench.escalations).
        cursor.execute("DROP TABLE IF EXISTS bench_dataset")
        cursor.execute(
            "TRUNCATE ai_session_step, session_handoff, ai_session, flowpilot_analytics_membership,"
            " flowpilot_analytics_account RESTART IDENTITY CASCADE"
        )
        _create_accounts_and_engineers()
        indexes, foreign_keys = _drop_secondary_indexes_and_foreign_keys(cursor)
        cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
        cursor.execute("SELECT setseed(0.2026)")
        _generate_rows(cursor)
        for statement in indexes + foreign_keys:
            cursor.execute(statement)
        cursor.execute(
            "CREATE TABLE bench_dataset (spec text, sessions bigint, handoffs bigint, steps bigint)"
        )
        cursor.execute("INSERT INTO bench_dataset VALUES (%s, %s, %s, %s)", (SPEC, *_row_counts(cursor)))
    # Outside the transaction: sets the visibility map (index-only scans) and statistics.
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {', '.join(LOADED_TABLES)}")


def _create_accounts_and_engineers():
    user_model = get_user_model()
    user_model.objects.filter(username__startswith="bench-").delete()
    for slug, claimed in plan():
        account = Account.objects.create(name=f"Bench {slug[6:]} ({claimed} claimed)", slug=slug)
        if slug in SCALES:
            user = user_model.objects.create(username=f"{slug}-engineer", password=PASSWORD_UNUSED)
            Membership.objects.create(user=user, account=account, role=Membership.Role.ENGINEER)
            Token.objects.create(user=user)


def _drop_secondary_indexes_and_foreign_keys(cursor):
    """Drop what slows a bulk load; return the statements that put it all back."""
    tables = list(LOADED_TABLES)
    cursor.execute(
        """
        SELECT format('ALTER TABLE %%I ADD CONSTRAINT %%I %%s', c.conrelid::regclass::text, c.conname,
                      pg_get_constraintdef(c.oid)),
               format('ALTER TABLE %%I DROP CONSTRAINT %%I', c.conrelid::regclass::text, c.conname)
        FROM pg_constraint c
        WHERE c.contype = 'f' AND c.conrelid::regclass::text = ANY(%s)
        """,
        [tables],
    )
    foreign_keys = cursor.fetchall()
    cursor.execute(
        """
        SELECT pg_get_indexdef(i.indexrelid), format('DROP INDEX %%I', i.indexrelid::regclass::text)
        FROM pg_index i
        WHERE i.indrelid::regclass::text = ANY(%s)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        """,
        [tables],
    )
    indexes = cursor.fetchall()
    for _, drop in foreign_keys + indexes:
        cursor.execute(drop)
    return [create for create, _ in indexes], [add for add, _ in foreign_keys]


def _generate_rows(cursor):
    cursor.execute(
        """
        CREATE TEMP TABLE bench_plan ON COMMIT DROP AS
        SELECT a.id AS account_id, ceil(wanted * %(span)s::float8 / %(window)s / %(claimed_share)s)::int AS n
        FROM flowpilot_analytics_account a
        JOIN unnest(%(slugs)s::text[], %(wanted)s::int[]) AS p (slug, wanted) ON p.slug = a.slug
        """,
        {
            "span": SPAN_DAYS,
            "window": WINDOW_DAYS,
            "claimed_share": CLAIMED_SHARE,
            "slugs": [slug for slug, _ in plan()],
            "wanted": [wanted for _, wanted in plan()],
        },
    )
    # One row per session: its start, step count, gap between steps (5% slow
    # sessions with gaps of 10-60 minutes), where the claim falls, and whether
    # the handoff was claimed at all. Ordered by time so that ids follow time.
    cursor.execute(
        """
        CREATE TEMP TABLE bench_session ON COMMIT DROP AS
        SELECT nextval(pg_get_serial_sequence('ai_session', 'id')) AS id, s.*
        FROM (
            SELECT p.account_id,
                   %(anchor)s::timestamptz - make_interval(days => %(span)s)
                       + (g + random()) * (make_interval(days => %(span)s) / p.n) AS started_at,
                   10 + floor(random() * 6)::int AS n_steps,
                   CASE WHEN random() < 0.05 THEN 600 + 3000 * random() ELSE 20 + 100 * random() END AS gap_s,
                   0.3 + 0.75 * random() AS claim_at,
                   random() < %(claimed_share)s AS claimed
            FROM bench_plan p, generate_series(0, p.n - 1) AS g
            ORDER BY started_at
        ) AS s
        """,
        {"anchor": ANCHOR, "span": SPAN_DAYS, "claimed_share": CLAIMED_SHARE},
    )
    cursor.execute(
        "INSERT INTO ai_session (id, account_id, created_at) SELECT id, account_id, started_at FROM bench_session"
    )
    cursor.execute("""
        INSERT INTO session_handoff (session_id, account_id, created_at, claimed_at)
        SELECT id, account_id,
               started_at + make_interval(secs => 0.3 * n_steps * gap_s),
               CASE WHEN claimed THEN started_at + make_interval(secs => claim_at * n_steps * gap_s) END
        FROM bench_session
        """)
    cursor.execute("""
        INSERT INTO ai_session_step (session_id, account_id, created_at)
        SELECT s.id, s.account_id, s.started_at + make_interval(secs => (j + 0.5 * random()) * s.gap_s)
        FROM bench_session s, generate_series(0, s.n_steps - 1) AS j
        """)
