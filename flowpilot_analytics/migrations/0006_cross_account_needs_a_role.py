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

TABLES = ("ai_session", "ai_session_step", "session_handoff", "flowpilot_analytics_membership")
SETTING_ON = "current_setting('flowpilot.cross_account', true) = 'on'"


def owner_mode(table):
    # One scalar subquery (evaluated once per statement, not per row); NULL, so no
    # row, when the catalog row is missing.
    return (
        f"(SELECT {SETTING_ON} AND pg_has_role(c.relowner, 'MEMBER') "
        f"FROM pg_catalog.pg_class c WHERE c.oid = '{table}'::regclass)"
    )


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"DROP POLICY IF EXISTS cross_account_mode ON {table}")
        schema_editor.execute(
            f"CREATE POLICY owner_cross_account_mode ON {table} FOR ALL "
            f"USING ({owner_mode(table)}) WITH CHECK ({owner_mode(table)})"
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
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
