"""
The tenant binding is signed: a setting the app role makes on its own no longer shows an account.

Before, the policies compared ``account_id`` with ``current_setting('flowpilot.account_id')``:
SQL running as the app role (injected, or a bug) could set another account's id
and read its rows. Now they compare it with ``flowpilot_analytics_bound_account()``
(and memberships' ``user_id`` with ``flowpilot_analytics_bound_user()``), which
return the id only when ``flowpilot.binding`` is the HMAC of the ids and the
backend's pid under a key only the tables' owner can read (a table of its own,
filled here from the settings in force: ``manage.py store_binding_key`` after a
rotation). See flowpilot_analytics.signed_binding. PostgreSQL only (SQLite: no RLS).
"""

from django.db import migrations

from flowpilot_analytics.rls import BOUND_ACCOUNT, BOUND_USER, tenant_policy_sql
from flowpilot_analytics.signed_binding import create_sql, drop_sql, store_binding_key

TENANT_MODELS = {"ai_session": "AiSession", "ai_session_step": "AiSessionStep",
                 "session_handoff": "SessionHandoff"}
MEMBERSHIP_TABLE = "flowpilot_analytics_membership"
# The policies as migrations 0002, 0005, 0006, 0008 and 0009 left them (for going back).
ACCOUNT_SETTING = "NULLIF(current_setting('flowpilot.account_id', true), '')::bigint"
USER_SETTING = "NULLIF(current_setting('flowpilot.user_id', true), '')::bigint"


# The business-hours tables of 0008: a calendar is its account's; intervals and closed dates
# are their calendar's (the subquery on the calendar table is itself under its policy).
CALENDAR_TABLE = "flowpilot_analytics_businesscalendar"


def calendar_rules(account):
    of_calendar = f"calendar_id IN (SELECT id FROM {CALENDAR_TABLE} WHERE account_id = {account})"
    return {
        CALENDAR_TABLE: f"account_id = {account}",
        "flowpilot_analytics_businessinterval": of_calendar,
        "flowpilot_analytics_closeddate": of_calendar,
    }


def replace_calendar_policies(schema_editor, account):
    for table, rule in calendar_rules(account).items():
        schema_editor.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
        schema_editor.execute(
            f"CREATE POLICY tenant_isolation ON {table} FOR ALL USING ({rule}) WITH CHECK ({rule})"
        )


# The first-action index of 0009 (always the app's own, whatever the models in use).
FIRST_ACTION_TABLE = "flowpilot_first_action_index"


def tenant_tables(apps):
    """The app's tenant tables in this project (none of a model the host swapped), with an ``account_id``."""
    return [table for table, model in TENANT_MODELS.items()
            if not apps.get_model("flowpilot_analytics", model)._meta.swapped] + [FIRST_ACTION_TABLE]


def membership_policy(account, user):
    return (
        f"CREATE POLICY account_memberships ON {MEMBERSHIP_TABLE} FOR SELECT "
        f"USING (user_id = {user} OR account_id = {account})"
    )


def schema_of(schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT quote_ident(current_schema())")
        return cursor.fetchone()[0]


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for statement in create_sql(schema_of(schema_editor)):
        schema_editor.execute(statement)
    store_binding_key(schema_editor.connection)
    for table in tenant_tables(apps):
        for statement in tenant_policy_sql(table):
            schema_editor.execute(statement)
    replace_calendar_policies(schema_editor, BOUND_ACCOUNT)
    schema_editor.execute(f"DROP POLICY IF EXISTS account_memberships ON {MEMBERSHIP_TABLE}")
    schema_editor.execute(membership_policy(BOUND_ACCOUNT, BOUND_USER))


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP POLICY IF EXISTS account_memberships ON {MEMBERSHIP_TABLE}")
    schema_editor.execute(membership_policy(ACCOUNT_SETTING, USER_SETTING))
    replace_calendar_policies(schema_editor, ACCOUNT_SETTING)
    for table in tenant_tables(apps):
        # Back to 0002's tenant policy; 0006's owner mode (the same expression) is kept.
        schema_editor.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
        schema_editor.execute(
            f"CREATE POLICY tenant_isolation ON {table} FOR ALL USING (account_id = {ACCOUNT_SETTING}) "
            f"WITH CHECK (account_id = {ACCOUNT_SETTING})"
        )
    for statement in drop_sql(schema_of(schema_editor)):
        schema_editor.execute(statement)


class Migration(migrations.Migration):

    dependencies = [
        ("flowpilot_analytics", "0009_first_action_index"),
    ]

    operations = [
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
