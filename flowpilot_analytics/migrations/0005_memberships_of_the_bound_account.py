"""
Memberships: a request sees the user's own and, once its account is bound, that account's.

Before, the policy let through only the requesting user's memberships, so under
the app role an admin asking the per-engineer endpoint for a colleague with no
handoffs in the window got no row: the membership that proves the colleague
belongs to the account was hidden. The account's members are the account's own
data; other accounts' memberships stay hidden. PostgreSQL only (SQLite: no RLS).
"""

from django.db import migrations

USER_SETTING = "NULLIF(current_setting('flowpilot.user_id', true), '')::bigint"
ACCOUNT_SETTING = "NULLIF(current_setting('flowpilot.account_id', true), '')::bigint"
TABLE = "flowpilot_analytics_membership"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP POLICY IF EXISTS own_memberships ON {TABLE}")
    # The request resolves its account from the user's own memberships (before it
    # knows the account), then reads the bound account's members (their names).
    schema_editor.execute(
        f"CREATE POLICY account_memberships ON {TABLE} FOR SELECT "
        f"USING (user_id = {USER_SETTING} OR account_id = {ACCOUNT_SETTING})"
    )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP POLICY IF EXISTS account_memberships ON {TABLE}")
    schema_editor.execute(f"CREATE POLICY own_memberships ON {TABLE} FOR SELECT USING (user_id = {USER_SETTING})")


class Migration(migrations.Migration):

    dependencies = [
        ("flowpilot_analytics", "0004_escalation_summary_page"),
    ]

    operations = [
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
