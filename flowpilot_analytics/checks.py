"""System checks of FlowPilot Analytics (ids ``flowpilot_analytics.*``)."""

from django.core.checks import Tags, Warning, register
from django.db import DatabaseError, connections

from .rls import read_aliases


@register(Tags.database)
def check_connection_is_bound_by_rls(app_configs, databases=None, **kwargs):
    """Warns when the app's database role escapes Row-Level Security.

    Database checks run with ``manage.py check --database default`` (and
    ``migrate``, which runs as the tables' owner and so is expected to warn).
    """
    from .db_roles import bypass_reasons

    warnings = []
    for alias in read_aliases():
        if databases is None or alias not in databases or alias not in connections.settings:
            continue  # an unknown alias is the router check's error (flowpilot_analytics.E101)
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_user")
                [role] = cursor.fetchone()
                reasons = bypass_reasons(cursor, role)
        except DatabaseError as exc:
            warnings.append(Warning(
                f"Could not tell whether database {alias!r} is bound by Row-Level Security: {exc}",
                id="flowpilot_analytics.W002",
            ))
            continue
        if reasons:
            warnings.append(Warning(
                f"Database {alias!r} connects as {role}, which bypasses Row-Level Security: it "
                f"{'; '.join(reasons)}. Only the app-level account filter protects tenants then.",
                hint="Serve the app as a role made by `manage.py grant_app_role` (README, 'Security'); "
                     "run migrations as the owner.",
                id="flowpilot_analytics.W001",
            ))
    return warnings
