"""The first-action index: exact after every kind of write, concurrent ones included, and the figures unchanged.

The probe (the correlated subquery) is the definition; the index must equal it
(``verify()`` finds no difference) after every write of the step and handoff
tables in use, with the app's models and with a host's (core suite).
"""

import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from hypothesis import strategies as st

from flowpilot_analytics import first_action_index as index
from flowpilot_analytics import rls
from flowpilot_analytics.checks import check_first_action_index
from flowpilot_analytics.field_map import field_map
from flowpilot_analytics.models import FirstActionIndex, get_handoff_model, get_session_model, get_step_model
from flowpilot_analytics.selectors import (
    escalation_figures_by_day,
    escalation_metrics,
    escalation_metrics_by_account,
    escalation_metrics_by_engineer,
    escalation_trend,
    handoff_rows,
    handoffs_with_lag,
    handoffs_without_action,
)
from flowpilot_analytics.windows import Window
from tests.builders import claimed_handoff, step, unclaimed_handoff
from tests.model_sets import MODELS

pytestmark = [pytest.mark.core]

postgresql_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="the index is PostgreSQL's")


def turn(settings, on):
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "FIRST_ACTION_INDEX": on}


def install_index(settings):
    """The accelerator on, its triggers installed and backfilled (PostgreSQL; skips elsewhere)."""
    if connection.vendor != "postgresql":
        pytest.skip("the first-action index needs PostgreSQL")
    turn(settings, True)
    index.install()
    index.backfill(vacuum=False)


@pytest.fixture
def index_on(settings, db):
    """The accelerator on, its triggers installed and backfilled in the test's transaction."""
    install_index(settings)
    assert index.is_ready()
    yield settings
    index.clear_cache()


def claim(handoff, at):
    get_handoff_model()._default_manager.filter(pk=handoff.pk).update(**{field_map().handoff_claimed_at: at})


def move_handoff(handoff, session):
    get_handoff_model()._default_manager.filter(pk=handoff.pk).update(**{field_map().handoff_session: session})


def delete_handoff(handoff):
    get_handoff_model()._default_manager.filter(pk=handoff.pk).delete()


def move_step(row, *, at=None, session=None):
    fields = field_map()
    changes = {}
    if at is not None:
        changes[fields.step_created_at] = at
    if session is not None:
        changes[fields.step_session] = session
    get_step_model()._default_manager.filter(pk=row.pk).update(**changes)


def delete_step(row):
    get_step_model()._default_manager.filter(pk=row.pk).delete()


def stored(handoff):
    return index.first_action_of(handoff.pk)


def exact():
    differences = index.verify()
    assert differences == [], [difference.describe() for difference in differences]
    return True


# --- Each write keeps it exact ------------------------------------------------------------


@pytest.mark.django_db
def test_a_claim_writes_the_probed_first_action(index_on, account, now):
    session = MODELS.session(account, created_at=now - timedelta(hours=2))
    step(session, now - timedelta(minutes=30))  # before the claim: not an action
    step(session, now - timedelta(minutes=5))
    handoff = unclaimed_handoff(session, created_at=now - timedelta(hours=1))
    assert not FirstActionIndex.objects.filter(pk=handoff.pk).exists()
    claim(handoff, now - timedelta(minutes=10))
    assert stored(handoff) == now - timedelta(minutes=5)
    assert exact()


@pytest.mark.django_db
def test_a_step_inserted_after_the_claim_becomes_the_first_action_and_an_earlier_one_replaces_it(index_on, account,
                                                                                                 now):
    handoff = claimed_handoff(account, claimed_at=now - timedelta(hours=1))
    assert stored(handoff) is None
    step(handoff.session, now - timedelta(minutes=10))
    assert stored(handoff) == now - timedelta(minutes=10)
    step(handoff.session, now - timedelta(minutes=50))
    assert stored(handoff) == now - timedelta(minutes=50)
    step(handoff.session, now - timedelta(minutes=20))  # later than the first: no change
    assert stored(handoff) == now - timedelta(minutes=50)
    assert exact()


@pytest.mark.django_db
def test_a_step_at_the_claim_instant_is_not_an_action(index_on, account, now):
    handoff = claimed_handoff(account, claimed_at=now - timedelta(hours=1))
    step(handoff.session, now - timedelta(hours=1))
    assert stored(handoff) is None
    assert exact()


@pytest.mark.django_db
def test_deleting_or_moving_the_first_action_probes_again(index_on, account, now):
    handoff = claimed_handoff(account, claimed_at=now - timedelta(hours=1))
    first = step(handoff.session, now - timedelta(minutes=50))
    second = step(handoff.session, now - timedelta(minutes=40))
    delete_step(first)
    assert stored(handoff) == now - timedelta(minutes=40)
    move_step(second, at=now - timedelta(hours=2))  # before the claim now
    assert stored(handoff) is None
    move_step(second, at=now - timedelta(minutes=30))
    assert stored(handoff) == now - timedelta(minutes=30)
    other = MODELS.session(account, created_at=now - timedelta(hours=3))
    move_step(second, session=other)
    assert stored(handoff) is None
    assert exact()


@pytest.mark.django_db
def test_reclaim_unclaim_session_change_and_delete_of_a_handoff(index_on, account, now):
    handoff = claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=600)
    assert stored(handoff) == now - timedelta(minutes=50)
    claim(handoff, now - timedelta(minutes=45))  # re-claimed after its first action
    assert stored(handoff) is None
    claim(handoff, None)
    assert not FirstActionIndex.objects.filter(pk=handoff.pk).exists()
    claim(handoff, now - timedelta(hours=2))
    assert stored(handoff) == now - timedelta(minutes=50)
    other = MODELS.session(account, created_at=now - timedelta(hours=3))
    step(other, now - timedelta(minutes=70))
    move_handoff(handoff, other)
    assert stored(handoff) == now - timedelta(minutes=70)
    assert FirstActionIndex.objects.get(pk=handoff.pk).session_id == other.pk
    delete_handoff(handoff)
    assert not FirstActionIndex.objects.filter(pk=handoff.pk).exists()
    assert exact()


@pytest.mark.django_db
def test_steps_and_handoffs_of_other_sessions_and_accounts_never_count(index_on, account, other_account, now):
    handoff = claimed_handoff(account, claimed_at=now - timedelta(hours=1))
    foreign = claimed_handoff(other_account, claimed_at=now - timedelta(hours=1))
    step(foreign.session, now - timedelta(minutes=5))
    step(MODELS.session(account, created_at=now - timedelta(hours=2)), now - timedelta(minutes=5))
    assert stored(handoff) is None
    assert stored(foreign) == now - timedelta(minutes=5)
    assert exact()


def held_buckets():
    """The first-action lock buckets this connection holds (its transaction's advisory locks)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT objid FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND classid = %s "
                       "AND objsubid = 2 AND pid = pg_catalog.pg_backend_pid() AND granted", [index.LOCK_CLASS])
        return {row[0] for row in cursor.fetchall()}


def bucket(session):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {index._bucket('%s::bigint')}", [session.pk])
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_single_row_writes_lock_the_buckets_of_their_sessions(index_on, account, now):
    """The single-row paths take their locks in one statement or as plain expressions: still the right buckets."""
    sessions = [MODELS.session(account, created_at=now - timedelta(hours=5)) for _ in range(40)]
    # Two sessions of different buckets, neither held yet (the transaction locked only what it wrote).
    fresh = [session for session in sessions if bucket(session) not in held_buckets()]
    first, second = [session for session in fresh if bucket(session) != bucket(fresh[0])][:1] + fresh[:1]
    step(first, now - timedelta(hours=4))
    assert bucket(first) in held_buckets()
    assert bucket(second) not in held_buckets()
    handoff = claimed_handoff(account, claimed_at=now - timedelta(hours=3), session=first)
    move_handoff(handoff, second)  # a claim moved: both sessions' buckets
    assert bucket(second) in held_buckets()
    assert stored(handoff) is None
    step(second, now - timedelta(hours=2))
    assert stored(handoff) == now - timedelta(hours=2)
    assert exact()


@pytest.mark.django_db
def test_a_bulk_insert_of_steps_takes_the_earliest_after_each_claim(index_on, account, now):
    first = claimed_handoff(account, claimed_at=now - timedelta(hours=3))
    second = claimed_handoff(account, claimed_at=now - timedelta(hours=1), session=first.session)
    steps_model = get_step_model()
    fields = field_map()
    builder_row = step(first.session, now - timedelta(hours=4))  # a template: the other columns of a step
    rows = []
    for minutes in (170, 50, 20, 100):
        row = steps_model._default_manager.get(pk=builder_row.pk)
        row.pk = None
        setattr(row, fields.step_created_at, now - timedelta(minutes=minutes))
        rows.append(row)
    steps_model._default_manager.bulk_create(rows)
    assert stored(first) == now - timedelta(minutes=170)
    assert stored(second) == now - timedelta(minutes=50)
    assert exact()


@pytest.mark.django_db
def test_statements_updating_and_deleting_many_steps(index_on, account, now):
    from django.db.models import F

    fields = field_map()
    first = claimed_handoff(account, claimed_at=now - timedelta(hours=3))
    second = claimed_handoff(account, claimed_at=now - timedelta(hours=2))
    for handoff in (first, second):
        for minutes in (170, 110, 30):
            step(handoff.session, now - timedelta(minutes=minutes))
    assert (stored(first), stored(second)) == (now - timedelta(minutes=170), now - timedelta(minutes=110))
    steps = get_step_model()._default_manager.filter(
        **{f"{fields.step_session}__in": [first.session, second.session]})
    steps.update(**{fields.step_created_at: F(fields.step_created_at) - timedelta(minutes=15)})
    assert (stored(first), stored(second)) == (now - timedelta(minutes=125), now - timedelta(minutes=45))
    assert exact()
    steps.update(**{fields.step_session: first.session})  # every step into the first session
    assert (stored(first), stored(second)) == (now - timedelta(minutes=125), None)
    assert exact()
    get_step_model()._default_manager.filter(**{f"{fields.step_created_at}__lt": now - timedelta(minutes=100)}).delete()
    assert stored(first) == now - timedelta(minutes=45)
    assert exact()


# --- Reads: the same figures, stored or probed --------------------------------------------


def every_face(account, now):
    """What each face reads, for one account: summary, widget, trend, per engineer, drill-down, days."""
    window = Window(start=now - timedelta(days=30), end=now, closed=True)
    return {
        "summary": escalation_metrics(account=account, period="30d", now=now).figures,
        "widget": {key: value.figures for key, value in
                   escalation_metrics_by_account(accounts=[account], period="90d", now=now).items()},
        "trend": escalation_trend(account=account, window=window, interval="day", now=now),
        "by_engineer": escalation_metrics_by_engineer(account=account, window=window, now=now),
        "rows": list(handoff_rows(handoffs_with_lag(account=account, window=window).order_by("claimed_at", "id"))),
        "waiting": list(handoffs_without_action(account=account, window=window).values_list("id", flat=True)),
        "days": escalation_figures_by_day(accounts=[account.pk], days=7, now=now),
    }


@pytest.mark.django_db
def test_every_face_reads_the_same_figures_stored_and_probed(index_on, account, other_account, now, member):
    engineer = member()
    for hours, lag in ((1, 30), (5, None), (30, 3600), (200, 0.5), (600, 7200)):
        claimed_handoff(account, claimed_at=now - timedelta(hours=hours), lag=lag, claimed_by=engineer)
    claimed_handoff(other_account, claimed_at=now - timedelta(hours=2), lag=5)
    assert index.handoffs_with_first_action().model is FirstActionIndex
    stored_faces = every_face(account, now)
    turn(index_on, False)
    assert index.handoffs_with_first_action().model is not FirstActionIndex
    assert every_face(account, now) == stored_faces
    assert stored_faces["summary"].n_handoffs_with_action == 4


@pytest.mark.django_db
def test_the_summary_is_one_statement_reading_the_index(index_on, account, now, django_assert_num_queries):
    claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=30)
    escalation_metrics(account=account, period="7d", now=now)  # the state, read once per few seconds
    with django_assert_num_queries(1) as captured:
        escalation_metrics(account=account, period="7d", now=now)
    assert index.TABLE in captured.captured_queries[0]["sql"]
    index.clear_cache()
    # A cold cache: the state's statements (its table, its row, the triggers), then the figures.
    with django_assert_num_queries(4):
        escalation_metrics(account=account, period="7d", now=now)


@pytest.mark.django_db
def test_each_row_stores_its_calendar_lag_and_the_calendar_figures_read_it(index_on, account, now):
    handoff = claimed_handoff(account, claimed_at=now - timedelta(hours=3), lag=0.25)
    waiting = claimed_handoff(account, claimed_at=now - timedelta(hours=2))
    lag_of = lambda row: FirstActionIndex.objects.values_list("lag_us", flat=True).get(pk=row.pk)  # noqa: E731
    assert (lag_of(handoff), lag_of(waiting)) == (250_000, None)
    claim(handoff, now - timedelta(hours=3, seconds=10))  # a re-claim 10 s earlier: the lag follows
    assert lag_of(handoff) == 10_250_000
    step(waiting.session, now - timedelta(hours=1, minutes=59, seconds=58, microseconds=999_999))
    assert lag_of(waiting) == 1_000_001
    with django_capture() as captured:
        figures = escalation_metrics(account=account, period="7d", now=now)
    statement = captured.captured_queries[-1]["sql"]
    # The calendar lag read from the column, not computed from the two instants.
    assert '"lag_us"' in statement and "date_part" not in statement
    assert figures.max_seconds_to_first_action == 10.25


def django_capture():
    from django.test.utils import CaptureQueriesContext

    return CaptureQueriesContext(connection)


@pytest.mark.django_db
def test_migration_0012_installs_the_triggers_again_keeping_rows_and_backfill(index_on, account, now):
    import importlib

    from django.db import connection as default

    handoff = claimed_handoff(account, claimed_at=now - timedelta(hours=3), lag=60)
    with default.cursor() as cursor:
        # An earlier version's function in place (here: one doing nothing), its trigger still there,
        # and no policy for the triggers (that version had none).
        cursor.execute("CREATE OR REPLACE FUNCTION flowpilot_first_action_step_insert() RETURNS trigger "
                       "LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$")
        cursor.execute(index.trigger_policy_statements()[0])
    index.clear_cache()
    assert "policy" in index.read_state(default).reason and not index.is_ready()
    step(handoff.session, now - timedelta(hours=3, seconds=-30))
    assert stored(handoff) == now - timedelta(hours=3) + timedelta(seconds=60)  # missed by that version
    with default.cursor() as cursor:
        cursor.execute("UPDATE " + index.TABLE + " SET first_action_at = %s", [now - timedelta(hours=3, seconds=-30)])
    migration = importlib.import_module("flowpilot_analytics.migrations.0012_first_action_triggers")
    with default.schema_editor() as editor:
        migration.reinstall(None, editor)
    index.clear_cache()
    assert index.read_state(default).ready  # the backfill kept: the same tables
    assert stored(handoff) == now - timedelta(hours=3) + timedelta(seconds=30)
    with default.cursor() as cursor:
        # A step insert's trigger fires per row (tgtype bit 0).
        cursor.execute("SELECT tgtype & 1 FROM pg_catalog.pg_trigger WHERE tgname = %s",
                       ["flowpilot_first_action_step_insert"])
        assert cursor.fetchone() == (1,)
    step(handoff.session, now - timedelta(hours=3, seconds=-5))
    assert stored(handoff) == now - timedelta(hours=3) + timedelta(seconds=5)
    assert exact()


@pytest.mark.django_db
def test_a_non_superuser_owners_triggers_keep_the_index_for_an_unbound_writer(settings, account, now):
    """Installed by a plain role owning the table: its triggers write through their policy, without binding."""
    if connection.vendor != "postgresql":
        pytest.skip("the first-action index needs PostgreSQL")
    turn(settings, True)
    session = MODELS.session(account, created_at=now - timedelta(hours=2))
    handoff = unclaimed_handoff(session, created_at=now - timedelta(hours=2))
    tables = index.metric_tables()
    owner = "flowpilot_index_owner_test"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {owner} NOSUPERUSER NOBYPASSRLS")
        cursor.execute(f"GRANT CREATE ON SCHEMA public TO {owner}")
        for table in (index.TABLE, index.STATE_TABLE):
            cursor.execute(f"ALTER TABLE {table} OWNER TO {owner}")
        cursor.execute(f"GRANT TRIGGER, SELECT, UPDATE ON {index.q(tables.step.name)}, {index.q(tables.handoff.name)} "
                       f"TO {owner}")
        # A host's policies on its steps may read its sessions.
        cursor.execute(f"GRANT SELECT ON {index.q(get_session_model()._meta.db_table)} TO {owner}")
        cursor.execute(f"SET LOCAL ROLE {owner}")
    index.install()
    index.backfill(vacuum=False)  # nothing claimed yet
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")
        # The commands' cross-account mode ends with their transaction (here the test's): off again.
        cursor.execute("SELECT set_config(%s, '', true)", [rls.CROSS_ACCOUNT_SETTING])
    claim(handoff, now - timedelta(hours=1))
    # The writer (the test's superuser here) binds no account and sets no cross-account mode: the
    # step insert's trigger, run as the owner, passes the table's policies only through its own.
    step(session, now - timedelta(minutes=30))
    assert stored(handoff) == now - timedelta(minutes=30)
    with connection.cursor() as cursor:
        # The claim's trigger switched the mode on for its statements only.
        cursor.execute("SELECT current_setting(%s, true)", [rls.CROSS_ACCOUNT_SETTING])
        assert cursor.fetchone() == ("",)
        cursor.execute(f"SET LOCAL ROLE {owner}")
        cursor.execute(f"SELECT count(*) FROM {index.TABLE}")  # outside a trigger: nothing, as before
        assert cursor.fetchone() == (0,)
        cursor.execute("RESET ROLE")


@pytest.mark.django_db
def test_a_writers_search_path_cannot_hijack_the_step_inserts_trigger(index_on, account, now):
    """The step insert's function has no SET search_path: every name in it is qualified, operators too."""
    handoff = claimed_handoff(account, claimed_at=now - timedelta(hours=2))
    evil = ["CREATE SCHEMA flowpilot_evil_test",
            "CREATE TEMP TABLE flowpilot_first_action_index (LIKE public.flowpilot_first_action_index)"]
    for name, left, right in (("=", "bigint", "bigint"), ("<", "timestamptz", "timestamptz"),
                              (">", "timestamptz", "timestamptz"), ("&", "integer", "integer")):
        function = f"flowpilot_evil_test.op_{ord(name)}"
        returns = "integer" if name == "&" else "boolean"
        evil += [f"CREATE FUNCTION {function}({left}, {right}) RETURNS {returns} LANGUAGE plpgsql AS "
                 f"$$ BEGIN RAISE EXCEPTION 'hijacked: {name}'; END $$",
                 f"CREATE OPERATOR flowpilot_evil_test.{name} (LEFTARG = {left}, RIGHTARG = {right}, "
                 f"FUNCTION = {function})"]
    evil += ["CREATE FUNCTION flowpilot_evil_test.hashint8(bigint) RETURNS integer LANGUAGE plpgsql AS "
             "$$ BEGIN RAISE EXCEPTION 'hijacked: hashint8'; END $$",
             "CREATE FUNCTION flowpilot_evil_test.pg_advisory_xact_lock_shared(integer, integer) RETURNS void "
             "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked: lock'; END $$",
             # The writer's path puts its own schema (and its temporary one) before pg_catalog.
             "SET LOCAL search_path = pg_temp, flowpilot_evil_test, pg_catalog, public"]
    with connection.cursor() as cursor:
        for statement in evil:
            cursor.execute(statement)
        step_table = index.metric_tables().step
        columns = [step_table.session, step_table.created_at, *([step_table.account] if step_table.account else [])]
        cursor.execute(f"INSERT INTO {index.q(step_table.name)} ({', '.join(index.q(c) for c in columns)}) "
                       f"VALUES ({', '.join(['%s'] * len(columns))})",
                       [handoff.session.pk, now - timedelta(hours=1), *([account.pk] if step_table.account else [])])
        cursor.execute("SELECT count(*) FROM pg_temp.flowpilot_first_action_index")
        assert cursor.fetchone() == (0,)
        cursor.execute("SET LOCAL search_path = DEFAULT")
        cursor.execute("DROP TABLE pg_temp.flowpilot_first_action_index")  # else it hides the real one
    assert stored(handoff) == now - timedelta(hours=1)


@pytest.mark.django_db
def test_a_writers_temporary_tables_cannot_take_the_triggers_writes(index_on, account, now):
    """Tables of the writer's own, named like the index and the steps, first on its path: never written."""
    first = claimed_handoff(account, claimed_at=now - timedelta(hours=3), lag=9000)  # a step 30 min ago
    second = unclaimed_handoff(first.session, created_at=now - timedelta(hours=3))
    tables = index.metric_tables()
    with connection.cursor() as cursor:
        real = {name: index.q(index._with_schema(cursor, name))
                for name in (index.TABLE, tables.step.name, tables.handoff.name)}
        for name in (index.TABLE, tables.step.name):
            cursor.execute(f"CREATE TEMP TABLE {index.q(name)} (LIKE {real[name]})")
        cursor.execute("SET LOCAL search_path = pg_temp, public")
        # A claim (its probe reads the steps), a step that is a first action, then its deletion.
        cursor.execute(f"UPDATE {real[tables.handoff.name]} SET {index.q(tables.handoff.claimed_at)} = %s "
                       f"WHERE {index.q(tables.handoff.pk)} = %s", [now - timedelta(hours=2), second.pk])
        columns = [tables.step.session, tables.step.created_at, *([tables.step.account] if tables.step.account else [])]
        cursor.execute(f"INSERT INTO {real[tables.step.name]} ({', '.join(index.q(c) for c in columns)}) "
                       f"VALUES ({', '.join(['%s'] * len(columns))}) RETURNING 1",
                       [first.session.pk, now - timedelta(hours=2, minutes=59),
                        *([account.pk] if tables.step.account else [])])
        cursor.execute(f"DELETE FROM {real[tables.step.name]} WHERE {index.q(tables.step.created_at)} = %s",
                       [now - timedelta(hours=2, minutes=59)])
        for name in (index.TABLE, tables.step.name):
            cursor.execute(f"SELECT count(*) FROM pg_temp.{index.q(name)}")
            assert cursor.fetchone() == (0,), name
            cursor.execute(f"DROP TABLE pg_temp.{index.q(name)}")
        cursor.execute("SET LOCAL search_path = DEFAULT")
    assert stored(first) == stored(second) == now - timedelta(minutes=30)
    assert exact()


@pytest.mark.django_db
def test_the_app_role_cannot_attach_the_trigger_functions_to_a_table_of_its_own(index_on, become_app_role):
    from django.db import DatabaseError

    become_app_role()
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE mine (session_id bigint, account_id bigint, created_at timestamptz)")
        for function in index.trigger_functions(index.Names.from_signature(index.signature())):
            with pytest.raises(DatabaseError, match="permission denied"), transaction.atomic():
                cursor.execute(f"CREATE TRIGGER t AFTER INSERT ON mine FOR EACH ROW EXECUTE FUNCTION {function}()")


@pytest.mark.django_db
def test_on_but_not_backfilled_reads_probe_and_the_check_says_why(settings, account, now):
    if connection.vendor != "postgresql":
        pytest.skip("the first-action index needs PostgreSQL")
    claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=30)
    turn(settings, True)
    assert [w.id for w in check_first_action_index(databases=["default"])] == ["flowpilot_analytics.W040"]
    assert "not installed" in check_first_action_index(databases=["default"])[0].msg
    index.install()
    assert "not backfilled" in check_first_action_index(databases=["default"])[0].msg
    assert not index.is_ready()
    assert index.handoffs_with_first_action().model is not FirstActionIndex
    assert escalation_metrics(account=account, period="7d", now=now).n_handoffs_with_action == 1
    index.backfill(vacuum=False)
    assert check_first_action_index(databases=["default"]) == []
    assert index.is_ready()
    assert escalation_metrics(account=account, period="7d", now=now).n_handoffs_with_action == 1
    index.remove()
    assert not index.is_ready()
    assert "not installed" in check_first_action_index(databases=["default"])[0].msg


@pytest.mark.django_db
def test_the_check_is_silent_when_off_or_without_a_database(settings):
    assert check_first_action_index(databases=["default"]) == []
    turn(settings, True)
    assert check_first_action_index(databases=None) == []


@pytest.mark.django_db
def test_on_sqlite_the_setting_reads_the_probe_and_the_check_says_why(settings, account, now):
    if connection.vendor == "postgresql":
        pytest.skip("SQLite's fallback")
    claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=30)
    turn(settings, True)
    assert not index.is_ready()
    assert escalation_metrics(account=account, period="7d", now=now).n_handoffs_with_action == 1
    [warning] = check_first_action_index(databases=["default"])
    assert "not PostgreSQL" in warning.msg
    with pytest.raises(CommandError, match="PostgreSQL"):
        call_command("first_action_index", "install")


# --- The command --------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_command_installs_backfills_verifies_and_removes(settings, account, now, capsys):
    if connection.vendor != "postgresql":
        pytest.skip("the first-action index needs PostgreSQL")
    handoffs = [claimed_handoff(account, claimed_at=now - timedelta(hours=hours), lag=60) for hours in (1, 2, 3)]
    turn(settings, True)
    call_command("first_action_index", "install")
    call_command("first_action_index", "backfill", "--batch-size", "2")
    out = capsys.readouterr().out
    assert "Now run `manage.py first_action_index backfill`" in out
    assert "Backfilled 3 rows" in out
    call_command("first_action_index", "verify", "--start", "7d")
    assert "No difference" in capsys.readouterr().out
    # A row written behind the triggers' back (as its owner could): verify names it and fails.
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('flowpilot.cross_account', 'on', true)")
        cursor.execute(f"UPDATE {index.TABLE} SET first_action_at = NULL WHERE handoff_id = %s", [handoffs[1].pk])
        cursor.execute(f"DELETE FROM {index.TABLE} WHERE handoff_id = %s", [handoffs[2].pk])
    with pytest.raises(CommandError, match="2 differences"):
        call_command("first_action_index", "verify")
    out = capsys.readouterr().out
    assert f"handoff {handoffs[1].pk}: first_action_at stored None != probed" in out
    assert f"handoff {handoffs[2].pk}: missing from the index" in out
    call_command("first_action_index", "remove")
    assert not FirstActionIndex.objects.exists()
    call_command("first_action_index", "status")
    assert "not installed" in capsys.readouterr().out
    with pytest.raises(CommandError, match="install first"):
        call_command("first_action_index", "backfill")


@pytest.mark.django_db
def test_the_command_refuses_a_bad_argument():
    with pytest.raises(CommandError):
        call_command("first_action_index", "rebuild")
    with pytest.raises(CommandError, match="batch-size"):
        call_command("first_action_index", "backfill", "--batch-size", "0")
    with pytest.raises(CommandError, match="no database"):
        call_command("first_action_index", "verify", "--database", "nowhere")


# --- Row-Level Security ------------------------------------------------------------------


@pytest.mark.django_db
def test_the_app_role_reads_only_the_bound_accounts_rows(index_on, account, other_account, now, become_app_role):
    from flowpilot_analytics import rls

    mine = claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=5)
    claimed_handoff(other_account, claimed_at=now - timedelta(hours=1), lag=5)
    become_app_role()
    assert list(FirstActionIndex.objects.values_list("pk", flat=True)) == []
    rls.bind_account(account)
    assert list(FirstActionIndex.objects.values_list("pk", flat=True)) == [mine.pk]


# --- Random histories: the index equals the probe, the figures are the same --------------

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("step"), st.integers(0, 2), st.integers(-90, 90)),
        st.tuples(st.just("move step"), st.integers(0, 9), st.integers(-90, 90)),
        st.tuples(st.just("step session"), st.integers(0, 9), st.integers(0, 1)),
        st.tuples(st.just("delete step"), st.integers(0, 9), st.just(0)),
        st.tuples(st.just("claim"), st.integers(0, 3), st.one_of(st.none(), st.integers(-60, 60))),
        st.tuples(st.just("handoff session"), st.integers(0, 3), st.integers(0, 1)),
        st.tuples(st.just("delete handoff"), st.integers(0, 3), st.just(0)),
    ),
    max_size=25,
)


@pytest.mark.django_db
@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_random_histories_leave_the_index_equal_to_the_probe(index_on, account, other_account, now, operations):
    with transaction.atomic():
        base = now - timedelta(hours=3)
        # Sessions 0 and 1 of the account, 2 of the other account.
        sessions = [MODELS.session(account, created_at=base - timedelta(hours=1)) for _ in range(2)]
        sessions.append(MODELS.session(other_account, created_at=base - timedelta(hours=1)))
        handoffs = [unclaimed_handoff(sessions[i % 3], created_at=base) for i in range(4)]
        steps = []
        for kind, target, value in operations:
            instant = base + timedelta(minutes=value) if value is not None else None
            if kind == "step":
                steps.append(step(sessions[target], instant))
            elif kind == "claim":
                if handoffs[target] is not None:
                    claim(handoffs[target], instant)
            elif kind == "handoff session":
                # Within the handoff's account (the denormalised account stays right).
                if handoffs[target] is not None and target % 3 != 2:
                    move_handoff(handoffs[target], sessions[value])
            elif kind == "delete handoff":
                if handoffs[target] is not None:
                    delete_handoff(handoffs[target])
                    handoffs[target] = None
            elif target < len(steps) and steps[target] is not None:
                row = steps[target]
                session_pk = get_step_model()._default_manager.filter(pk=row.pk).values_list(
                    f"{field_map().step_session}_id", flat=True).first()
                if kind == "move step":
                    move_step(row, at=instant)
                elif kind == "step session" and session_pk != sessions[2].pk:
                    move_step(row, session=sessions[value])
                elif kind == "delete step":
                    delete_step(row)
                    steps[target] = None
        assert exact()
        stored_figures = every_face(account, now)
        turn(index_on, False)
        probed_figures = every_face(account, now)
        turn(index_on, True)
        assert stored_figures == probed_figures
        transaction.set_rollback(True)


# --- Two real connections writing side by side --------------------------------------------


@pytest.fixture
def committed_index(settings, transactional_db):
    """The index installed and committed (other connections see its triggers); removed afterwards."""
    install_index(settings)
    yield
    index.remove()


def in_thread(work, started, proceed):
    """Runs ``work`` in its own transaction on its own connection, committing only once ``proceed`` is set."""
    from django.db import connections

    errors = []

    def run():
        try:
            with transaction.atomic():
                work()
                started.set()
                proceed.wait(10)
        except Exception as exc:  # reported to the test
            errors.append(exc)
            started.set()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


@pytest.mark.parametrize("first", ["step", "claim"])
def test_a_step_and_a_claim_of_one_session_committed_side_by_side(committed_index, account, now, first):
    session = MODELS.session(account, created_at=now - timedelta(hours=2))
    handoff = unclaimed_handoff(session, created_at=now - timedelta(hours=2))
    writes = {
        "step": lambda: step(session, now - timedelta(minutes=5)),
        "claim": lambda: claim(handoff, now - timedelta(minutes=30)),
    }
    second = "claim" if first == "step" else "step"
    first_started, first_commits = threading.Event(), threading.Event()
    second_started, second_commits = threading.Event(), threading.Event()
    second_commits.set()
    thread_1, errors_1 = in_thread(writes[first], first_started, first_commits)
    assert first_started.wait(10)
    thread_2, errors_2 = in_thread(writes[second], second_started, second_commits)
    time.sleep(0.5)
    # The second writer's trigger waits for the first transaction's session lock.
    assert not second_started.is_set()
    first_commits.set()
    thread_1.join(10)
    thread_2.join(10)
    assert errors_1 == errors_2 == []
    assert stored(handoff) == now - timedelta(minutes=5)
    assert exact()


def test_steps_of_two_sessions_sharing_a_lock_bucket_are_inserted_side_by_side_without_waiting(
        committed_index, account, now):
    sessions, by_bucket = [], {}
    while len(sessions) < 300:
        session = MODELS.session(account, created_at=now - timedelta(hours=2))
        sessions.append(session)
        pair = by_bucket.setdefault(bucket(session), [])
        pair.append(session)
        if len(pair) == 2:
            break
    assert len(pair) == 2, "no two sessions of one bucket among 300"
    handoffs = [claimed_handoff(account, claimed_at=now - timedelta(hours=1), session=one) for one in pair]
    first_started, first_commits = threading.Event(), threading.Event()
    second_started, second_commits = threading.Event(), threading.Event()
    second_commits.set()
    thread_1, errors_1 = in_thread(lambda: step(pair[0], now - timedelta(minutes=20)), first_started, first_commits)
    assert first_started.wait(10)
    thread_2, errors_2 = in_thread(lambda: step(pair[1], now - timedelta(minutes=30)), second_started, second_commits)
    # Step inserts take their bucket's lock shared: the second commits while the first is still open.
    thread_2.join(10)
    assert not thread_2.is_alive() and errors_2 == []
    first_commits.set()
    thread_1.join(10)
    assert errors_1 == []
    assert [stored(one) for one in handoffs] == [now - timedelta(minutes=20), now - timedelta(minutes=30)]
    assert exact()


@pytest.mark.parametrize("earliest", ["first", "second"])
def test_two_steps_of_one_session_inserted_side_by_side_leave_the_earliest(committed_index, account, now, earliest):
    session = MODELS.session(account, created_at=now - timedelta(hours=2))
    handoff = claimed_handoff(account, claimed_at=now - timedelta(hours=1), session=session)
    instants = [now - timedelta(minutes=20), now - timedelta(minutes=40)]
    if earliest == "first":
        instants.reverse()
    first_started, first_commits = threading.Event(), threading.Event()
    second_started, second_commits = threading.Event(), threading.Event()
    second_commits.set()
    thread_1, errors_1 = in_thread(lambda: step(session, instants[0]), first_started, first_commits)
    assert first_started.wait(10)
    # The second may wait for the index row the first updated, then reads its committed value again.
    thread_2, errors_2 = in_thread(lambda: step(session, instants[1]), second_started, second_commits)
    time.sleep(0.3)
    first_commits.set()
    thread_1.join(10)
    thread_2.join(10)
    assert errors_1 == errors_2 == []
    assert stored(handoff) == min(instants)
    assert exact()


def test_concurrent_writers_on_many_sessions_leave_no_difference(committed_index, account, now):
    sessions = [MODELS.session(account, created_at=now - timedelta(hours=5)) for _ in range(4)]
    handoffs = [unclaimed_handoff(session, created_at=now - timedelta(hours=5)) for session in sessions]
    from django.db import connections

    def writer(offset):
        try:
            for round_ in range(15):
                with transaction.atomic():
                    for number, session in enumerate(sessions):
                        if (number + round_ + offset) % 2:
                            step(session, now - timedelta(minutes=(round_ * 7 + offset * 3 + number) % 200))
                        else:
                            claim(handoffs[number], now - timedelta(minutes=(round_ * 11 + offset) % 180))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(offset,)) for offset in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert exact()
