"""
Send the metric's heavy reads to a read replica.

Add ``"flowpilot_analytics.routers.AnalyticsReadRouter"`` to ``DATABASE_ROUTERS``
and name the replica's alias in ``FLOWPILOT_ANALYTICS["DB_ALIAS"]``. Reads of the
activity tables (sessions, steps, handoffs: the models in use, the app's or a
host's) then go to that alias: they are the
rows the metric scans, and a few seconds of replication lag do not matter to a
90-day figure. Accounts and memberships stay on the primary, so that who may
read what is always decided on fresh data. Writes always go to the primary.

Unset (or ``"default"``), the router expresses no opinion and Django's default
routing applies. How this scales, with figures: docs/scaling.md.

A request that cannot connect to the replica reads the primary instead
(:func:`flowpilot_analytics.rls.tenant_transaction` decides, once, before its
first query, and logs it); a replica that cancels a read (a conflict with
recovery) mid-request is the API's ``503`` with ``Retry-After``.

The same router sends the faces that read every account (inside
:func:`flowpilot_analytics.cross_account.analytics_cross_account`) to
``FLOWPILOT_ANALYTICS["CROSS_ACCOUNT_DB_ALIAS"]``, reads and writes of every model
of the app and of the metric's models in use, for the length of the block only.
"""

from contextlib import contextmanager
from contextvars import ContextVar

from .conf import app_settings
from .models import get_account_model, get_handoff_model, get_session_model, get_step_model

SETTING = 'FLOWPILOT_ANALYTICS["DB_ALIAS"]'
PRIMARY = "default"
APP_LABEL = "flowpilot_analytics"

# The alias every model of the app is read from and written to, inside a cross-account block.
_cross_account_alias = ContextVar("flowpilot_cross_account_alias", default=None)
# Set for a request that found the replica unreachable: it reads the primary instead.
_replica_unavailable = ContextVar("flowpilot_replica_unavailable", default=False)


def analytics_db_alias():
    """The alias the activity tables are read from (``"default"`` unless configured)."""
    return app_settings.DB_ALIAS or PRIMARY


def replicated_models():
    """The activity models in use (sessions, steps, handoffs) and the first-action index: the rows the metric scans."""
    from .models import FirstActionIndex, FirstActionIndexState

    return (get_session_model(), get_step_model(), get_handoff_model(), FirstActionIndex, FirstActionIndexState)


def cross_account_models(model):
    """Whether a cross-account block routes ``model``: the app's models, and the metric's in use."""
    return model._meta.app_label == APP_LABEL or model in (get_account_model(), *replicated_models())


def cross_account_db_alias():
    """The alias the cross-account faces use, or ``None`` (the default routing)."""
    return app_settings.CROSS_ACCOUNT_DB_ALIAS


@contextmanager
def routed_to_cross_account(alias):
    """Every model of the app is read from and written to ``alias`` until the block ends."""
    token = _cross_account_alias.set(alias)
    try:
        yield alias
    finally:
        _cross_account_alias.reset(token)


@contextmanager
def reading_from_primary():
    """The activity tables are read from the primary until the block ends (the replica is unreachable)."""
    token = _replica_unavailable.set(True)
    try:
        yield
    finally:
        _replica_unavailable.reset(token)


class AnalyticsReadRouter:
    """Reads of the activity tables from ``FLOWPILOT_ANALYTICS["DB_ALIAS"]``; everything else untouched.

    Inside a cross-account block with ``CROSS_ACCOUNT_DB_ALIAS`` set, every model of
    the app (and the metric's models in use) goes to that alias instead, reads and writes.
    """

    def db_for_read(self, model, **hints):
        cross_account = _cross_account_alias.get()
        if cross_account is not None and cross_account_models(model):
            return cross_account
        if not _replica_unavailable.get():
            alias = analytics_db_alias()
            if alias != PRIMARY and model in replicated_models():
                return alias
        return None

    def db_for_write(self, model, **hints):
        cross_account = _cross_account_alias.get()
        if cross_account is not None and cross_account_models(model):
            return cross_account
        return None

    def allow_relation(self, obj1, obj2, **hints):
        # A handoff read from the replica (or the cross-account alias) may point at
        # an account or a user read from the primary: all hold the same rows.
        databases = {PRIMARY, analytics_db_alias(), cross_account_db_alias()}
        if obj1._state.db in databases and obj2._state.db in databases:
            return True
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        # A streaming replica is read-only: its schema comes from the primary. The
        # cross-account alias is the same database under a role that owns nothing.
        if db != PRIMARY and db in {analytics_db_alias(), cross_account_db_alias()}:
            return False
        return None
