"""
The first-action index (FLOWPILOT_ANALYTICS["FIRST_ACTION_INDEX"]): its table, under RLS, and its state.

The table holds one row per claimed handoff of the handoff model in use (the
app's or a host's), kept exact by triggers (flowpilot_analytics.first_action_index).
It is account data: the same policies as the app's other tenant tables had then
(0002, 0006), written below; migration 0010 signs them like the others. With the setting on and the
app's own models, the triggers are installed here, and an empty handoff table
needs no backfill; otherwise `manage.py first_action_index install` and
`backfill` do it (a host's tables may not be migrated yet). PostgreSQL only for
the SQL; the tables exist on SQLite too (unused there).
"""

from django.db import migrations, models

TABLE = "flowpilot_first_action_index"
ACCOUNT_SETTING_SQL = "NULLIF(current_setting('flowpilot.account_id', true), '')::bigint"
OWNER_MODE_SQL = (
    "(SELECT current_setting('flowpilot.cross_account', true) = 'on' AND pg_has_role(c.relowner, 'MEMBER') "
    f"FROM pg_catalog.pg_class c WHERE c.oid = '{TABLE}'::regclass)"
)


def policy_statements():
    return [
        f"ALTER TABLE {TABLE} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {TABLE} FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY tenant_isolation ON {TABLE} FOR ALL USING (account_id = {ACCOUNT_SETTING_SQL}) "
        f"WITH CHECK (account_id = {ACCOUNT_SETTING_SQL})",
        f"CREATE POLICY owner_cross_account_mode ON {TABLE} FOR ALL USING ({OWNER_MODE_SQL}) "
        f"WITH CHECK ({OWNER_MODE_SQL})",
    ]


def policy_removal_statements():
    return [
        f"DROP POLICY IF EXISTS tenant_isolation ON {TABLE}",
        f"DROP POLICY IF EXISTS owner_cross_account_mode ON {TABLE}",
        f"DROP POLICY IF EXISTS cross_account_readers ON {TABLE}",
        f"ALTER TABLE {TABLE} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {TABLE} DISABLE ROW LEVEL SECURITY",
    ]


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    from flowpilot_analytics import first_action_index
    from flowpilot_analytics.conf import app_settings, swapped_models

    for statement in policy_statements():
        schema_editor.execute(statement)
    if app_settings.FIRST_ACTION_INDEX and not swapped_models():
        alias = schema_editor.connection.alias
        first_action_index.install(using=alias)
        handoffs = apps.get_model("flowpilot_analytics", "SessionHandoff")
        if not handoffs.objects.using(alias).filter(claimed_at__isnull=False).exists():
            first_action_index.mark_backfilled(using=alias)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    from flowpilot_analytics import first_action_index

    first_action_index.remove(using=schema_editor.connection.alias)
    for statement in policy_removal_statements():
        schema_editor.execute(statement)


class Migration(migrations.Migration):

    dependencies = [
        ('flowpilot_analytics', '0008_business_hours'),
    ]

    operations = [
        migrations.CreateModel(
            name='FirstActionIndexState',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('installed_for', models.TextField(blank=True, default='')),
                ('installed_at', models.DateTimeField(null=True)),
                ('backfilled_at', models.DateTimeField(null=True)),
            ],
            options={
                'db_table': 'flowpilot_first_action_index_state',
            },
        ),
        migrations.CreateModel(
            name='FirstActionIndex',
            fields=[
                ('id', models.BigIntegerField(db_column='handoff_id', primary_key=True, serialize=False)),
                ('account_id', models.BigIntegerField()),
                ('session_id', models.BigIntegerField()),
                ('claimed_at', models.DateTimeField()),
                ('claimed_by_id', models.BigIntegerField(null=True)),
                ('first_action_at', models.DateTimeField(null=True)),
            ],
            options={
                'db_table': 'flowpilot_first_action_index',
                'indexes': [models.Index(fields=['account_id', 'claimed_at'], include=('first_action_at', 'claimed_by_id'), name='first_action_window'), models.Index(fields=['session_id', 'claimed_at'], name='first_action_session')],
            },
        ),
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
