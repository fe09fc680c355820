"""
The first-action index stores each row's calendar lag, and its triggers are generated again.

``lag_us`` is a generated column (PostgreSQL computes it on every write of the
row, from ``claimed_at`` and ``first_action_at``, with the calendar clock's own
expression; NULL on SQLite, where the index is never read), carried by the window
index so that the figures read it instead of computing it per handoff. Where the
triggers are installed, they are installed again from this version's code (a
step insert's trigger became per row, with a shared lock: docs/first-action-index.md);
the rows and the backfill are kept, the tables being the same.
"""

from django.db import migrations, models

import flowpilot_analytics.models


def reinstall(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    from flowpilot_analytics import first_action_index

    alias = schema_editor.connection.alias
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SELECT installed_for FROM {first_action_index.STATE_TABLE} ORDER BY id LIMIT 1")
        row = cursor.fetchone()
    # Installed for the models in use: the same tables again (rows and backfill kept). Installed for
    # others, the readers probe already (W040) and `install` is the operator's call.
    if row and row[0] and row[0] == first_action_index.signature():
        first_action_index.install(using=alias)


class Migration(migrations.Migration):

    dependencies = [
        ('flowpilot_analytics', '0010_signed_tenant_binding'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='firstactionindex',
            name='first_action_window',
        ),
        migrations.AddField(
            model_name='firstactionindex',
            name='lag_us',
            field=models.GeneratedField(db_persist=True, expression=flowpilot_analytics.models.CalendarLag('claimed_at', 'first_action_at'), output_field=models.BigIntegerField(null=True)),
        ),
        migrations.AddIndex(
            model_name='firstactionindex',
            index=models.Index(fields=['account_id', 'claimed_at'], include=('lag_us', 'first_action_at', 'claimed_by_id'), name='first_action_window_lag'),
        ),
        migrations.RunPython(reinstall, migrations.RunPython.noop, elidable=False),
    ]
