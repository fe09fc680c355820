"""
Where the first-action index's triggers are installed, they are installed again from this version's code.

A step insert's trigger became per row with a shared lock, the functions name
their tables with their schema and need no superuser, and ``install`` adds the
policy that lets the owner's triggers through the table's Row-Level Security
(docs/first-action-index.md). Installed for the tables in use, the rows and the
backfill are kept; installed for others, the readers probe already (W040) and
``install`` is the operator's call. A migration of its own, after 0011's: this one
locks the step and handoff tables before the index's (``install``), 0011 only the
index's, so neither can deadlock with writers whose triggers write the index.
Backwards, the policy goes (the earlier version's ``install`` replaces the rest).
"""

from django.db import migrations


def reinstall(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    from flowpilot_analytics import first_action_index

    with schema_editor.connection.cursor() as cursor:
        row = first_action_index._state_row(cursor)
    if row and row[0] and row[0] == first_action_index.signature():
        first_action_index.install(using=schema_editor.connection.alias)


def drop_policy(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    from flowpilot_analytics import first_action_index

    schema_editor.execute(first_action_index.trigger_policy_statements()[0])


class Migration(migrations.Migration):

    dependencies = [
        ("flowpilot_analytics", "0011_first_action_lag"),
    ]

    operations = [
        migrations.RunPython(reinstall, drop_policy, elidable=False),
    ]
