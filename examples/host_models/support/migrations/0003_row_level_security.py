"""
The monolith's own Row-Level Security (PostgreSQL only), keyed on its own settings.

Every table of an organisation's rows is enabled and FORCE'd (the owner is bound
too), fail-closed: without ``monolith.org_id`` (or with an empty one) a query
sees nothing. A person's own seats are visible by ``monolith.person_id`` (before
the organisation is known), the bound organisation's seats once it is. The
``monolith_reporting`` role reads every organisation (and writes nothing): the
pages that read across organisations connect as it. The analytics app installs
none of this; it sets the two settings in each request's transaction
(FLOWPILOT_ANALYTICS["RLS"]).
"""

from django.db import migrations

ORGANIZATION = "NULLIF(current_setting('monolith.org_id', true), '')::bigint"
PERSON = "NULLIF(current_setting('monolith.person_id', true), '')::bigint"
REPORTING_ROLE = "monolith_reporting"

POLICIES = {
    "tenants_organization": f"id = {ORGANIZATION}",
    "tenants_seat": f"member_id = {PERSON} OR organization_id = {ORGANIZATION}",
    "ai_session": f"organization_id = {ORGANIZATION}",
    "ai_session_step": f"organization_id = {ORGANIZATION}",
    "session_handoff": f"organization_id = {ORGANIZATION}",
}


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    # Roles are cluster-wide: created once, whichever database (or concurrent run) gets there first.
    schema_editor.execute(f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{REPORTING_ROLE}') THEN
                CREATE ROLE {REPORTING_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$
    """)
    schema_editor.execute(f"GRANT USAGE ON SCHEMA public TO {REPORTING_ROLE}")
    for table, rule in POLICIES.items():
        schema_editor.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        schema_editor.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        schema_editor.execute(f"CREATE POLICY organization_rows ON {table} USING ({rule}) WITH CHECK ({rule})")
        schema_editor.execute(f"GRANT SELECT ON {table} TO {REPORTING_ROLE}")
        schema_editor.execute(f"CREATE POLICY reporting_reads_all ON {table} FOR SELECT TO {REPORTING_ROLE} USING (true)")


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in POLICIES:
        schema_editor.execute(f"DROP POLICY IF EXISTS organization_rows ON {table}")
        schema_editor.execute(f"DROP POLICY IF EXISTS reporting_reads_all ON {table}")
        schema_editor.execute(f"REVOKE SELECT ON {table} FROM {REPORTING_ROLE}")
        schema_editor.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        schema_editor.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")


class Migration(migrations.Migration):

    dependencies = [
        ("support", "0002_initial"),
        ("tenants", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
