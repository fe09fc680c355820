"""
Send the metric's heavy reads to a read replica.

Add ``"flowpilot_analytics.routers.AnalyticsReadRouter"`` to ``DATABASE_ROUTERS``
and name the replica's alias in ``FLOWPILOT_ANALYTICS["DB_ALIAS"]``. Reads of the
activity tables (sessions, steps, handoffs) then go to that alias: they are the
rows the metric scans, and a few seconds of replication lag do not matter to a
90-day figure. Accounts and memberships stay on the primary, so that who may
read what is always decided on fresh data. Writes always go to the primary.

Unset (or ``"default"``), the router expresses no opinion and Django's default
routing applies. How this scales, with figures: docs/scaling.md.
"""

from .conf import app_settings
from .models import AiSession, AiSessionStep, SessionHandoff

SETTING = 'FLOWPILOT_ANALYTICS["DB_ALIAS"]'
PRIMARY = "default"
REPLICATED_MODELS = (AiSession, AiSessionStep, SessionHandoff)


def analytics_db_alias():
    """The alias the activity tables are read from (``"default"`` unless configured)."""
    return app_settings.DB_ALIAS or PRIMARY


class AnalyticsReadRouter:
    """Reads of the activity tables from ``FLOWPILOT_ANALYTICS["DB_ALIAS"]``; everything else untouched."""

    def db_for_read(self, model, **hints):
        if model in REPLICATED_MODELS:
            alias = analytics_db_alias()
            if alias != PRIMARY:
                return alias
        return None

    def allow_relation(self, obj1, obj2, **hints):
        # A handoff read from the replica may point at an account read from the
        # primary: both hold the same rows.
        databases = {PRIMARY, analytics_db_alias()}
        if obj1._state.db in databases and obj2._state.db in databases:
            return True
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        # A streaming replica is read-only: its schema comes from the primary.
        if db != PRIMARY and db == analytics_db_alias():
            return False
        return None
