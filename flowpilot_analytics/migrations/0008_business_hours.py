"""
Business hours (CONTRACT.md, "Business hours"): an account's calendar, its weekly intervals, its closed dates.

Row-Level Security on the three tables (PostgreSQL only), as on the app's other
account tables (0002, 0006): a calendar is seen and written only under its
account's ``flowpilot.account_id``; its intervals and closed dates through their
calendar's account; the owner's cross-account mode as in 0006. Every policy of
these tables is in :data:`POLICIES` below, the one place to adapt.
"""

import datetime
import django.db.models.deletion
import flowpilot_analytics.models
from django.conf import settings
from django.db import migrations, models


ACCOUNT_SETTING = "NULLIF(current_setting('flowpilot.account_id', true), '')::bigint"
SETTING_ON = "current_setting('flowpilot.cross_account', true) = 'on'"
CALENDAR_TABLE = "flowpilot_analytics_businesscalendar"
OF_BOUND_ACCOUNT = f"account_id = {ACCOUNT_SETTING}"
# Intervals and closed dates belong to their calendar's account (the subquery is itself bound).
OF_BOUND_CALENDAR = f"calendar_id IN (SELECT id FROM {CALENDAR_TABLE} WHERE account_id = {ACCOUNT_SETTING})"
TABLES = {
    CALENDAR_TABLE: OF_BOUND_ACCOUNT,
    "flowpilot_analytics_businessinterval": OF_BOUND_CALENDAR,
    "flowpilot_analytics_closeddate": OF_BOUND_CALENDAR,
}


def owner_mode(table):
    # As 0006: the cross-account setting works only for a member of the table's owner.
    return (
        f"(SELECT {SETTING_ON} AND pg_has_role(c.relowner, 'MEMBER') "
        f"FROM pg_catalog.pg_class c WHERE c.oid = '{table}'::regclass)"
    )


# (table, policy name, clauses): every policy of the business-hours tables.
POLICIES = [
    *((table, "tenant_isolation", f"FOR ALL USING ({rule}) WITH CHECK ({rule})") for table, rule in TABLES.items()),
    *(
        (table, "owner_cross_account_mode", f"FOR ALL USING ({owner_mode(table)}) WITH CHECK ({owner_mode(table)})")
        for table in TABLES
    ),
]


def enable_rls(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        schema_editor.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    for table, name, clauses in POLICIES:
        schema_editor.execute(f"CREATE POLICY {name} ON {table} {clauses}")


def disable_rls(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, name, _ in POLICIES:
        schema_editor.execute(f"DROP POLICY IF EXISTS {name} ON {table}")
    for table in TABLES:
        schema_editor.execute(f"DROP POLICY IF EXISTS cross_account_readers ON {table}")
        schema_editor.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        schema_editor.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")


class Migration(migrations.Migration):

    dependencies = [
        migrations.swappable_dependency(settings.FLOWPILOT_ANALYTICS_ACCOUNT_MODEL),
        ('flowpilot_analytics', '0007_membership_account_related_name'),
    ]

    operations = [
        migrations.CreateModel(
            name='BusinessCalendar',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('time_zone', models.CharField(help_text='IANA name, e.g. Europe/Paris.', max_length=64, validators=[flowpilot_analytics.models.validate_time_zone])),
                ('account', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='flowpilot_business_calendar', to=settings.FLOWPILOT_ANALYTICS_ACCOUNT_MODEL)),
            ],
            options={
                'verbose_name': 'business calendar',
            },
        ),
        migrations.CreateModel(
            name='BusinessInterval',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('weekday', models.PositiveSmallIntegerField(choices=[(0, 'Monday'), (1, 'Tuesday'), (2, 'Wednesday'), (3, 'Thursday'), (4, 'Friday'), (5, 'Saturday'), (6, 'Sunday')])),
                ('opens', models.TimeField()),
                ('closes', models.TimeField(help_text='00:00 means midnight at the end of the day.')),
                ('calendar', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='intervals', to='flowpilot_analytics.businesscalendar')),
            ],
            options={
                'ordering': ['weekday', 'opens'],
                'constraints': [models.CheckConstraint(condition=models.Q(('weekday__gte', 0), ('weekday__lte', 6)), name='business_interval_weekday'), models.CheckConstraint(condition=models.Q(('opens__lt', models.F('closes')), ('closes', datetime.time(0, 0)), _connector='OR'), name='business_interval_opens_before_closes')],
            },
        ),
        migrations.CreateModel(
            name='ClosedDate',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('date', models.DateField()),
                ('calendar', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='closed_dates', to='flowpilot_analytics.businesscalendar')),
            ],
            options={
                'ordering': ['date'],
                'constraints': [models.UniqueConstraint(fields=('calendar', 'date'), name='closed_date_unique_per_calendar')],
            },
        ),
        migrations.RunPython(enable_rls, disable_rls, elidable=False),
    ]
