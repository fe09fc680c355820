"""
Cross-account mode is no longer a setting any role can make.

Before, ``flowpilot.cross_account = 'on'`` let any connection, the app role's
included, see every account's rows: a SQL injection or a bug running SQL could
switch it on. Now the setting works only for a member of the table's owner
(``migrate``, ``seed_demo`` run as the owner, data migrations), which could turn
RLS off anyway. The staff-facing faces read every account through a role of
their own, named in the ``cross_account_readers`` policy that
``manage.py grant_cross_account_role`` creates (it knows the role's name; a
migration does not). PostgreSQL only (SQLite: no RLS).
"""

from django.db import migrations

MODELS = {"ai_session": "AiSession", "ai_session_step": "AiSessionStep", "session_handoff": "SessionHandoff",
          "flowpilot_analytics_membership": "Membership"}
SETTING_ON = "current_setting('flowpilot.cross_account', true) = 'on'"


def owner_mode(table):
    # One scalar subquery (evaluated once per statement, not per row); NULL, so no
    # row, when the catalog row is missing.
    return (
        f"(SELECT {SETTING_ON} AND pg_has_role(c.relowner, 'MEMBER') "
        f"FROM pg_catalog.pg_class c WHERE c.oid = '{table}'::regclass)"
    )


def app_tables(apps):
    """The tables of the app's own models in this project: none of a model the host swapped."""
    return [table for table, model in MODELS.items()
            if not apps.get_model("flowpilot_analytics", model)._meta.swapped]


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in app_tables(apps):
        schema_editor.execute(f"DROP POLICY IF EXISTS cross_account_mode ON {table}")
        schema_editor.execute(
            f"CREATE POLICY owner_cross_account_mode ON {table} FOR ALL "
            f"USING ({owner_mode(table)}) WITH CHECK ({owner_mode(table)})"
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in app_tables(apps):
        schema_editor.execute(f"DROP POLICY IF EXISTS owner_cross_account_mode ON {table}")
        schema_editor.execute(f"DROP POLICY IF EXISTS cross_account_readers ON {table}")
        schema_editor.execute(
            f"CREATE POLICY cross_account_mode ON {table} FOR ALL USING ({SETTING_ON}) WITH CHECK ({SETTING_ON})"
        )


class Migration(migrations.Migration):

    dependencies = [
        ("flowpilot_analytics", "0005_memberships_of_the_bound_account"),
    ]

    operations = [
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
