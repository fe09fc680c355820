"""
The explicit cross-account mode: reads (and the demo's writes) across every account.

Row-Level Security shows a connection only the rows of the account bound to
its transaction. Staff-facing code that must see every account at once (the
Django admin summary widget, the report command, ``seed_demo``) says so by
running inside :func:`analytics_cross_account`::

    from flowpilot_analytics.cross_account import analytics_cross_account

    with analytics_cross_account():
        by_account = escalation_metrics_by_account(period="30d")

    @analytics_cross_account()          # or on a whole view / handle()
    def handle(self, *args, **options): ...

    class AccountAdmin(CrossAccountModelAdminMixin, admin.ModelAdmin): ...   # the app's own admin pages

It opens a transaction on each database the reads (and writes) go to and sets
``flowpilot.cross_account`` to ``on`` inside it, with ``set_config(..., true)``,
so the mode ends with the block (when nested in an outer transaction, it is
switched off explicitly as the block ends). It cannot be entered while an API request's
tenant is bound (:func:`flowpilot_analytics.rls.tenant_transaction`), and
nothing under ``flowpilot_analytics.api`` imports this module (a test checks
both). On SQLite there is no RLS and the block is just a transaction.
"""

from contextlib import contextmanager
from functools import wraps

from django.db import connections

from . import rls


class CrossAccountRefused(RuntimeError):
    """Cross-account mode was asked for inside a tenant-scoped (API) request."""


@contextmanager
def analytics_cross_account():
    """Every account's rows are visible (and writable) until the block ends."""
    if rls.in_tenant_scope():
        raise CrossAccountRefused("cross-account mode is not available inside an account-scoped request")
    aliases = sorted(set(rls.read_aliases()) | set(rls.write_aliases()))
    nested = [alias for alias in aliases if connections[alias].in_atomic_block]
    with rls.transactions(aliases):
        rls.set_local(aliases, {rls.CROSS_ACCOUNT_SETTING: "on"})
        yield
        # Inside an outer transaction the block is a savepoint, whose release
        # would keep the setting until the outer transaction ends: switch it off.
        rls.set_local(nested, {rls.CROSS_ACCOUNT_SETTING: ""})


def in_cross_account_mode(view):
    """``view`` run, and its page rendered, in the mode (a ``TemplateResponse`` reads rows as it renders)."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        with analytics_cross_account():
            response = view(*args, **kwargs)
            if callable(getattr(response, "render", None)) and not getattr(response, "is_rendered", True):
                response.render()
        return response

    return wrapper


class CrossAccountModelAdminMixin:
    """Runs this ``ModelAdmin``'s own pages in cross-account mode: staff browse every account's rows.

    Only the views of the ``ModelAdmin`` it is mixed into (list, add/change form,
    delete, history) are wrapped, after the admin site has admitted the user;
    the site, its index and every other app's pages are left as they are.
    """

    def changelist_view(self, request, extra_context=None):
        return in_cross_account_mode(super().changelist_view)(request, extra_context)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return in_cross_account_mode(super().changeform_view)(request, object_id, form_url, extra_context)

    def delete_view(self, request, object_id, extra_context=None):
        return in_cross_account_mode(super().delete_view)(request, object_id, extra_context)

    def history_view(self, request, object_id, extra_context=None):
        return in_cross_account_mode(super().history_view)(request, object_id, extra_context)
