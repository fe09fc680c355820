"""System checks of FlowPilot Analytics (ids ``flowpilot_analytics.*``)."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.db import DatabaseError, connections

from .rls import read_aliases
from .routers import PRIMARY, SETTING, AnalyticsReadRouter, analytics_db_alias


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


@register(Tags.database)
def check_analytics_db_alias(app_configs=None, **kwargs):
    """``FLOWPILOT_ANALYTICS_DB_ALIAS`` must name a configured database, and the router be installed."""
    alias = analytics_db_alias()
    if alias == PRIMARY:
        return []
    errors = []
    if alias not in settings.DATABASES:
        errors.append(
            Error(
                f"{SETTING} is {alias!r}, which is not a key of DATABASES.",
                hint=f"Add the replica to DATABASES as {alias!r}, or unset {SETTING}.",
                id="flowpilot_analytics.E101",
            )
        )
    router_path = f"{AnalyticsReadRouter.__module__}.{AnalyticsReadRouter.__name__}"
    if router_path not in settings.DATABASE_ROUTERS:
        errors.append(
            Warning(
                f"{SETTING} is set but {router_path} is not in DATABASE_ROUTERS: it has no effect.",
                id="flowpilot_analytics.W101",
            )
        )
    return errors
