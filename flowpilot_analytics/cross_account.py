"""
The explicit cross-account mode: reads (and the admin's writes) across every account.

Row-Level Security shows the app role only the rows of the account bound to its
transaction, whatever it sets. Staff-facing code that must see every account at
once (the Django admin summary widget, the report command, the app's admin
pages, ``seed_demo``) says so by running inside :func:`analytics_cross_account`::

    from flowpilot_analytics.cross_account import analytics_cross_account

    with analytics_cross_account() as mode:
        if mode.problem:            # this connection cannot read across accounts: say why
            raise CommandError(mode.problem)
        by_account = escalation_metrics_by_account(period="30d")

    class AccountAdmin(CrossAccountModelAdminMixin, admin.ModelAdmin): ...   # the app's own admin pages

Inside the block, with ``FLOWPILOT_ANALYTICS["CROSS_ACCOUNT_DB_ALIAS"]`` set, every
model of the app is read from and written to that alias (through
``AnalyticsReadRouter``): a connection as the *cross-account role*
(``manage.py grant_cross_account_role``), which the ``cross_account_readers``
policy lets see every account, and which the app role can neither log in as nor
become. Without it, the block uses the default routing and sets
``flowpilot.cross_account`` to ``on`` for its transaction, which only the tables'
owner may use (``migrate``, ``seed_demo`` as the owner): under the app role the
block sees no account's rows and ``mode.problem`` says why.

With a host's own models (``FLOWPILOT_ANALYTICS_*_MODEL``), the host's policies
decide what a connection sees of the host's tables. The block sets the host's
cross-account setting too (``FLOWPILOT_ANALYTICS["RLS"]["cross_account_setting"]``,
to ``on``), and then trusts the host's policies to honour it; without one, it
needs a connection the host's policies let read every account (the alias, as a
role of the host's), and ``mode.problem`` says so when the connection is not one.

Either way the block opens a transaction on each database it uses, the setting
ends with it (when nested in an outer transaction, it is switched off as the
block ends), it cannot be entered while an API request's tenant is bound
(:func:`flowpilot_analytics.rls.tenant_transaction`), and nothing under
``flowpilot_analytics.api`` imports this module (a test checks both). On SQLite
there is no RLS and the block is just a transaction.
"""

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import wraps

from django.conf import settings
from django.db import connections

from . import rls, routers
from .conf import setting_label

ROUTER_PATH = f"{routers.AnalyticsReadRouter.__module__}.{routers.AnalyticsReadRouter.__name__}"

# Whether the connection's role reads every account of a table: RLS does not apply to
# it (superuser, BYPASSRLS, a table without it), it is a member of the owner of one of
# the app's tables (the owner's mode then applies), or a policy for reading opens every
# row to a role it belongs to: the app's cross-account policy, or a host's policy
# "TO <role> USING (true)". %s: whether the table is one of the app's own.
CAN_READ_EVERY_ACCOUNT = f"""
    NOT row_security_active(t.oid)
    OR (%s AND pg_has_role(t.relowner, 'MEMBER'))
    OR EXISTS (
        SELECT FROM pg_catalog.pg_policy p CROSS JOIN unnest(p.polroles) AS granted(oid)
        WHERE p.polrelid = t.oid AND p.polpermissive AND p.polcmd IN ('r', '*')
          AND granted.oid <> 0 AND pg_has_role(granted.oid, 'MEMBER')
          AND (p.polname = '{rls.CROSS_ACCOUNT_POLICY}' OR pg_get_expr(p.polqual, p.polrelid) = 'true')
    )
"""


def probe_table():
    """The table whose visibility tells whether a connection reads every account (the handoffs in use),
    and whether it is the app's own (its policies) or a host's (the host's, whatever its name)."""
    from .field_map import metric_tables

    handoff = metric_tables().handoff
    return handoff.name, handoff.model._meta.app_label == routers.APP_LABEL


class CrossAccountRefused(RuntimeError):
    """Cross-account mode was asked for inside a tenant-scoped (API) request."""


@dataclass(frozen=True)
class CrossAccountMode:
    """The block's databases, and why it cannot see every account (``None`` when it can)."""

    aliases: tuple
    problem: str | None = None


def unreadable_problem(alias, role, *, table=None):
    """The message shown when ``alias``'s connection, as ``role``, cannot read across accounts.

    ``table``: a host's table (its own models), whose policies the host decides.
    """
    if table is None:
        return (
            f"Reading every account needs a connection allowed to: database {alias!r} connects as {role}, "
            f"which Row-Level Security shows one account at a time, so no account's rows would be seen. Set "
            f"{setting_label('CROSS_ACCOUNT_DB_ALIAS')} to a database alias connecting as the role made by "
            f"`manage.py grant_cross_account_role` (README, \"Security\")."
        )
    return (
        f"Reading every account needs a connection allowed to: database {alias!r} connects as {role}, which "
        f"your Row-Level Security policies on {table} show one account at a time, so no account's rows would "
        f"be seen. Set {setting_label('CROSS_ACCOUNT_DB_ALIAS')} to a database alias connecting as a role your "
        f"policies let read every account (BYPASSRLS, or a policy \"TO <that role> USING (true)\"), or name "
        f"the setting your policies read for it in {setting_label('RLS')}[\"cross_account_setting\"] "
        "(docs/host-integration.md)."
    )


def router_problem(alias):
    return (
        f"{setting_label('CROSS_ACCOUNT_DB_ALIAS')} is {alias!r} but {ROUTER_PATH} is not in "
        "DATABASE_ROUTERS: the cross-account reads would use the default database."
    )


def cross_account_problems(aliases, *, switch_on=False):
    """Why the connections of ``aliases`` cannot read every account (empty list when they can).

    One statement per PostgreSQL alias; with ``switch_on`` the same statement
    sets ``flowpilot.cross_account`` (and the host's cross-account setting, when
    it names one, and ``work_mem``: ``FLOWPILOT_ANALYTICS["WORK_MEM"]``) for the current transaction. A host's tables under a
    cross-account setting of the host's are taken as readable: the host's
    policies honour it, which only they know.
    """
    table, own_table = probe_table()
    trusted = not own_table and rls.host_settings()["cross_account_setting"] is not None
    # Switching on, the same statement gives the transaction the analytics' work_mem (the widget and the
    # report sort the lags of every account).
    switches = (
        {**rls.with_host_settings({rls.CROSS_ACCOUNT_SETTING: rls.ON}), **rls.request_memory()} if switch_on else {}
    )
    problems = []
    for alias in aliases:
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        switch = "".join("set_config(%s, %s, true), " for _ in switches)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {switch}current_user, {CAN_READ_EVERY_ACCOUNT} "
                "FROM pg_catalog.pg_class t WHERE t.oid = to_regclass(%s)",
                [*(part for item in switches.items() for part in item), own_table, table],
            )
            row = cursor.fetchone()
        if row is not None and not row[-1] and not trusted:
            problems.append(unreadable_problem(alias, row[-2], table=None if own_table else table))
    return problems


@contextmanager
def analytics_cross_account():
    """Every account's rows are visible until the block ends: yields a :class:`CrossAccountMode`.

    ``mode.problem`` says why they are not, when the connection cannot read across accounts.
    """
    if rls.in_tenant_scope():
        raise CrossAccountRefused("cross-account mode is not available inside an account-scoped request")
    alias = routers.cross_account_db_alias()
    with ExitStack() as stack:
        if alias:
            aliases = [alias]
            stack.enter_context(routers.routed_to_cross_account(alias))
        else:
            aliases = sorted(set(rls.reachable_read_aliases(stack)) | set(rls.write_aliases()))
        nested = [name for name in aliases if connections[name].in_atomic_block]
        stack.enter_context(rls.transactions(aliases))
        problems = cross_account_problems(aliases, switch_on=True)
        if alias and ROUTER_PATH not in settings.DATABASE_ROUTERS:
            problems.insert(0, router_problem(alias))
        yield CrossAccountMode(aliases=tuple(aliases), problem=" ".join(problems) or None)
        # Inside an outer transaction the block is a savepoint, whose release
        # would keep the setting until the outer transaction ends: switch it off.
        rls.set_local(nested, rls.with_host_settings({rls.CROSS_ACCOUNT_SETTING: ""}))


def in_cross_account_mode(view):
    """``view(request, ...)`` run, and its page rendered, in the mode; a warning when it sees nothing."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        with analytics_cross_account() as mode:
            if mode.problem:
                from django.contrib import messages

                messages.warning(request, mode.problem, fail_silently=True)
            response = view(request, *args, **kwargs)
            # A TemplateResponse reads its rows as it renders: inside the block.
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
