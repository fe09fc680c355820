"""
The host's own Row-Level Security (PostgreSQL only), keyed on its own settings.

Every table enabled and FORCE'd, fail-closed (no setting, or an empty one, shows
nothing): an organisation's rows when ``helpdesk.organization_id`` names it,
every organisation's when ``helpdesk.all_organizations`` is ``on``, and a
person's own seats when ``helpdesk.person_id`` names them. Events have no
organisation column: an event is visible when its ticket is (the subquery reads
``desk_ticket`` under that table's own policy). The app installs none of these:
it sets the settings (FLOWPILOT_ANALYTICS["RLS"]).
"""

from django.db import migrations

ORGANIZATION = "NULLIF(current_setting('helpdesk.organization_id', true), '')::bigint"
PERSON = "NULLIF(current_setting('helpdesk.person_id', true), '')::bigint"
ALL = "current_setting('helpdesk.all_organizations', true) = 'on'"

POLICIES = {
    "desk_organization": f"id = {ORGANIZATION} OR {ALL}",
    "desk_ticket": f"organization_id = {ORGANIZATION} OR {ALL}",
    "desk_ticket_event": f"ticket_id IN (SELECT id FROM desk_ticket) OR {ALL}",
    "desk_escalation": f"organization_id = {ORGANIZATION} OR {ALL}",
    "desk_seat": f"person_id = {PERSON} OR organization_id = {ORGANIZATION} OR {ALL}",
}


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, rule in POLICIES.items():
        schema_editor.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        schema_editor.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        schema_editor.execute(f"CREATE POLICY helpdesk_tenant ON {table} USING ({rule}) WITH CHECK ({rule})")


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in POLICIES:
        schema_editor.execute(f"DROP POLICY IF EXISTS helpdesk_tenant ON {table}")
        schema_editor.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        schema_editor.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")


class Migration(migrations.Migration):

    dependencies = [
        ("helpdesk", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
