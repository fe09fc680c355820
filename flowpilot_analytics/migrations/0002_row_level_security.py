"""
Row-Level Security on every table holding account data (PostgreSQL only).

ENABLE applies the policies to every role but superusers and BYPASSRLS roles;
FORCE applies them to the tables' owner too. Each policy fails closed: without
the setting, or with the empty value a reused connection keeps after a
transaction that set it, NULLIF gives NULL and no row matches (no error). The
settings are made per transaction by flowpilot_analytics.rls (API requests)
and flowpilot_analytics.cross_account (staff-facing cross-account reads).

On SQLite this migration does nothing: there, only the app-level filter by
account applies. A table of a model the host swapped for its own
(FLOWPILOT_ANALYTICS_*_MODEL) does not exist, and the host's own policies
protect the host's tables: the app installs none there. A later data migration on these tables must set
flowpilot.cross_account to 'on' in its transaction, or it will see no rows.
"""

from django.db import migrations

ACCOUNT_SETTING = "NULLIF(current_setting('flowpilot.account_id', true), '')::bigint"
USER_SETTING = "NULLIF(current_setting('flowpilot.user_id', true), '')::bigint"
CROSS_ACCOUNT = "current_setting('flowpilot.cross_account', true) = 'on'"

TENANT_TABLES = ("ai_session", "ai_session_step", "session_handoff")
MEMBERSHIP_TABLE = "flowpilot_analytics_membership"
MODELS = {"ai_session": "AiSession", "ai_session_step": "AiSessionStep", "session_handoff": "SessionHandoff",
          MEMBERSHIP_TABLE: "Membership"}


def app_tables(apps):
    """The tables of the app's own models in this project: none of a swapped model."""
    return [table for table, model in MODELS.items()
            if not apps.get_model("flowpilot_analytics", model)._meta.swapped]


def policies(tables):
    for table in TENANT_TABLES:
        if table not in tables:
            continue
        yield table, "tenant_isolation", f"FOR ALL USING (account_id = {ACCOUNT_SETTING}) " \
            f"WITH CHECK (account_id = {ACCOUNT_SETTING})"
    # The request resolves its account from the user's own memberships, before
    # it knows the account: a user may read their memberships, nobody else's.
    yield MEMBERSHIP_TABLE, "own_memberships", f"FOR SELECT USING (user_id = {USER_SETTING})"
    for table in tables:
        yield table, "cross_account_mode", f"FOR ALL USING ({CROSS_ACCOUNT}) WITH CHECK ({CROSS_ACCOUNT})"


def enable(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    tables = app_tables(apps)
    for table in tables:
        schema_editor.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        schema_editor.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    for table, name, clauses in policies(tables):
        schema_editor.execute(f"CREATE POLICY {name} ON {table} {clauses}")


def disable(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    tables = app_tables(apps)
    for table, name, _ in policies(tables):
        schema_editor.execute(f"DROP POLICY IF EXISTS {name} ON {table}")
    for table in tables:
        schema_editor.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        schema_editor.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")


class Migration(migrations.Migration):

    dependencies = [
        ("flowpilot_analytics", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(enable, disable, elidable=False),
    ]
