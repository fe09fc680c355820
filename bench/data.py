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

The tables are those of the models in use (:func:`schema`): the app's own, or,
with ``--host-schema``, a host's (tests/host_app: other table and column names,
no account column on its steps), named by the field map.
"""

import time
from dataclasses import dataclass
from datetime import datetime, timezone

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from rest_framework.authtoken.models import Token

from flowpilot_analytics.access import Role
from flowpilot_analytics.field_map import field_map, metric_tables
from flowpilot_analytics.models import get_account_model
from tests.model_sets import MODELS

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

PASSWORD_UNUSED = "!"  # bench users authenticate by token only

# What the field map does not name, and the data need: a session's account and start, a handoff's creation.
OTHER_COLUMNS = {
    "flowpilot_analytics": {"session_account": "account_id", "session_created": "created_at",
                            "handoff_created": "created_at", "grants": "flowpilot_analytics_membership"},
    "helpdesk": {"session_account": "organization_id", "session_created": "opened_at",
                 "handoff_created": "raised_at", "grants": "desk_seat"},
}


@dataclass(frozen=True)
class Schema:
    """The tables and columns the data set is written to: the models in use."""

    account_table: str
    account_pk: str
    account_key: str  # the column naming a bench account ("bench-1k"): its slug, else its name
    session_table: str
    session_pk: str
    session_account: str
    session_created: str
    handoff_table: str
    handoff_session: str
    handoff_account: str
    handoff_created: str
    handoff_claimed: str
    step_table: str
    step_session: str
    step_account: str | None
    step_created: str
    grants_table: str

    @property
    def loaded_tables(self):
        return (self.session_table, self.handoff_table, self.step_table)


def schema():
    tables, fields = metric_tables(), field_map()
    other = OTHER_COLUMNS[tables.handoff.model._meta.app_label]
    key = fields.account_slug or fields.account_name
    return Schema(
        account_table=tables.account.name, account_pk=tables.account.pk,
        account_key=get_account_model()._meta.get_field(key).column,
        session_table=tables.session.name, session_pk=tables.session.pk,
        session_account=other["session_account"], session_created=other["session_created"],
        handoff_table=tables.handoff.name, handoff_session=tables.handoff.session,
        handoff_account=tables.handoff.account, handoff_created=other["handoff_created"],
        handoff_claimed=tables.handoff.claimed_at,
        step_table=tables.step.name, step_session=tables.step.session, step_account=tables.step.account,
        step_created=tables.step.created_at, grants_table=other["grants"],
    )


def account_key(account):
    """How the data set names an account ("bench-1k"): its slug, else its name."""
    fields = field_map()
    return getattr(account, fields.account_slug or fields.account_name)


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
    fields = field_map()
    lookup = f"{fields.account_slug or fields.account_name}__startswith"
    accounts = get_account_model()._default_manager.filter(**{lookup: "bench-"})
    return {account_key(account): account for account in accounts}, built


def bench_token(account):
    """The API token of the bench engineer of ``account`` (created with the data)."""
    return Token.objects.get(user__username=f"{account_key(account)}-engineer").key


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
    for table in schema().loaded_tables:
        cursor.execute(f"SELECT count(*) FROM {table}")
        counts.append(cursor.fetchone()[0])
    return tuple(counts)


def _build():
    names = schema()
    with transaction.atomic(), connection.cursor() as cursor:
        # The benchmark database holds nothing else (see bench.escalations).
        cursor.execute("DROP TABLE IF EXISTS bench_dataset")
        cursor.execute(
            f"TRUNCATE {names.step_table}, {names.handoff_table}, {names.session_table}, {names.grants_table}, "
            f"{names.account_table} RESTART IDENTITY CASCADE"
        )
        _create_accounts_and_engineers()
        indexes, foreign_keys = _drop_secondary_indexes_and_foreign_keys(cursor)
        cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
        cursor.execute("SELECT setseed(0.2026)")
        _generate_rows(cursor, names)
        for statement in indexes + foreign_keys:
            cursor.execute(statement)
        cursor.execute(
            "CREATE TABLE bench_dataset (spec text, sessions bigint, handoffs bigint, steps bigint)"
        )
        cursor.execute("INSERT INTO bench_dataset VALUES (%s, %s, %s, %s)", (SPEC, *_row_counts(cursor)))
    # Outside the transaction: sets the visibility map (index-only scans) and statistics.
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {', '.join(names.loaded_tables)}")


def _create_accounts_and_engineers():
    user_model = get_user_model()
    user_model.objects.filter(username__startswith="bench-").delete()
    named_by_slug = field_map().account_slug is not None
    for slug, claimed in plan():
        name = f"Bench {slug[6:]} ({claimed} claimed)" if named_by_slug else slug
        account = MODELS.account(name=name, slug=slug)
        if slug in SCALES:
            user = user_model.objects.create(username=f"{slug}-engineer", password=PASSWORD_UNUSED)
            MODELS.grant(user, account, Role.ENGINEER)
            Token.objects.create(user=user)


def _drop_secondary_indexes_and_foreign_keys(cursor):
    """Drop what slows a bulk load; return the statements that put it all back."""
    tables = list(schema().loaded_tables)
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


def _generate_rows(cursor, names):
    cursor.execute(
        f"""
        CREATE TEMP TABLE bench_plan ON COMMIT DROP AS
        SELECT a.{names.account_pk} AS account_id, ceil(wanted * %(span)s::float8 / %(window)s / %(claimed_share)s)::int AS n
        FROM {names.account_table} a
        JOIN unnest(%(slugs)s::text[], %(wanted)s::int[]) AS p (slug, wanted) ON p.slug = a.{names.account_key}
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
        f"""
        CREATE TEMP TABLE bench_session ON COMMIT DROP AS
        SELECT nextval(pg_get_serial_sequence('{names.session_table}', '{names.session_pk}')) AS id, s.*
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
        f"INSERT INTO {names.session_table} ({names.session_pk}, {names.session_account}, {names.session_created}) "
        "SELECT id, account_id, started_at FROM bench_session"
    )
    cursor.execute(f"""
        INSERT INTO {names.handoff_table}
            ({names.handoff_session}, {names.handoff_account}, {names.handoff_created}, {names.handoff_claimed})
        SELECT id, account_id,
               started_at + make_interval(secs => 0.3 * n_steps * gap_s),
               CASE WHEN claimed THEN started_at + make_interval(secs => claim_at * n_steps * gap_s) END
        FROM bench_session
        """)
    # A host's steps may have no account column: the session holds it.
    account = (f", {names.step_account}", ", s.account_id") if names.step_account else ("", "")
    cursor.execute(f"""
        INSERT INTO {names.step_table} ({names.step_session}{account[0]}, {names.step_created})
        SELECT s.id{account[1]}, s.started_at + make_interval(secs => (j + 0.5 * random()) * s.gap_s)
        FROM bench_session s, generate_series(0, s.n_steps - 1) AS j
        """)
