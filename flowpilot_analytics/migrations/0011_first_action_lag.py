"""
The first-action index stores each row's calendar lag.

``lag_us`` is a generated column (PostgreSQL computes it on every write of the
row, from ``claimed_at`` and ``first_action_at``, with the calendar clock's own
expression; NULL on SQLite, where the index is never read), carried by the window
index so that the figures read it instead of computing it per handoff. Migration
0012 installs the triggers again where they are installed.
"""

from django.db import migrations, models

import flowpilot_analytics.models


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
    ]
