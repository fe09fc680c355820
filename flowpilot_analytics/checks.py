"""System checks of FlowPilot Analytics (ids ``flowpilot_analytics.*``)."""

import difflib

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.db import DatabaseError, connections

from .rls import read_aliases
from .routers import PRIMARY, SETTING, AnalyticsReadRouter, analytics_db_alias


def models_in_use_are_configured():
    """Whether the models in use and the field map can be resolved (else E019, E104 or E105 say why).

    The checks reading the models' tables wait for that: they would fail on the same error.
    """
    from .conf import field_map_problem, app_settings

    return not field_map_problem(app_settings.raw("FIELDS")) and not check_swappable_models()


@register(Tags.database)
def check_connection_is_bound_by_rls(app_configs, databases=None, **kwargs):
    """Warns when the app's database role escapes Row-Level Security.

    Database checks run with ``manage.py check --database default`` (and
    ``migrate``, which runs as the tables' owner and so is expected to warn).
    """
    from .db_roles import bypass_reasons, cross_account_reasons

    if not databases or not models_in_use_are_configured():
        return []
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
                reasons = bypass_reasons(cursor, role) + cross_account_reasons(cursor, role)
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
                     "run migrations as the owner; give the cross-account role only to the cross-account "
                     "database alias.",
                id="flowpilot_analytics.W001",
            ))
    return warnings


@register(Tags.database)
def check_binding_key(app_configs, databases=None, **kwargs):
    """The database must accept the key the settings sign the tenant binding with (else every request
    sees no row). Three cheap statements per PostgreSQL database the reads use."""
    from .conf import app_settings, setting_label
    from .signed_binding import key_is_accepted

    key = app_settings.BINDING_KEY
    if not databases or key is not None and not isinstance(key, str):
        return []  # a malformed BINDING_KEY: flowpilot_analytics.E060
    messages = []
    for alias in read_aliases():
        if alias not in databases or alias not in connections.settings:
            continue
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        try:
            accepted = key_is_accepted(connection)
        except DatabaseError as exc:
            messages.append(Warning(
                f"Could not tell whether database {alias!r} accepts the key of the Row-Level Security "
                f"binding: {exc}",
                id="flowpilot_analytics.W060",
            ))
            continue
        if accepted is False:
            messages.append(Error(
                f"Database {alias!r} does not accept the key the tenant binding is signed with (derived from "
                f"{setting_label('BINDING_KEY')} or SECRET_KEY): every analytics request would see no row.",
                hint="Run `manage.py store_binding_key` as the tables' owner after changing either secret "
                     "(docs/security.md, 'Rotating the key').",
                id="flowpilot_analytics.E061",
            ))
    return messages


@register()
def check_app_settings(app_configs=None, **kwargs):
    """Refuses a malformed ``FLOWPILOT_ANALYTICS`` value with the id of its key (``conf.SETTINGS``)."""
    from .conf import DEPRECATED_SETTINGS, SETTING_NAME, SETTINGS, app_settings, setting_label

    configured = getattr(settings, SETTING_NAME, None)
    if configured is not None and not isinstance(configured, dict):
        return [Error(
            f"{SETTING_NAME} must be a dict of the keys to change, got {type(configured).__name__}.",
            hint="See the README's 'Install into your project' settings table.",
            id="flowpilot_analytics.E001",
        )]
    messages = []
    known = [setting.name for setting in SETTINGS]
    for key in sorted(configured or {}):
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            messages.append(Warning(
                f"{SETTING_NAME} has an unknown key {key!r}: it is ignored.",
                hint=f"Did you mean {close[0]!r}?" if close else f"The keys are: {', '.join(known)}.",
                id="flowpilot_analytics.W003",
            ))
    for old_name, key in DEPRECATED_SETTINGS.items():
        if hasattr(settings, old_name):
            messages.append(Warning(
                f"{old_name} is deprecated and will stop being read in the next release.",
                hint=f"Set {setting_label(key)} instead"
                     + (" (it is set too, and wins)." if key in (configured or {}) else "."),
                id="flowpilot_analytics.W004",
            ))
    throttle_rates = getattr(settings, "REST_FRAMEWORK", {}).get("DEFAULT_THROTTLE_RATES") or {}
    if "analytics" in throttle_rates:
        messages.append(Warning(
            'REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["analytics"] is not read: the analytics endpoints '
            f"are throttled at {setting_label('THROTTLE_RATE')} ({app_settings.raw('THROTTLE_RATE')!r}).",
            hint=f"Move the rate to {setting_label('THROTTLE_RATE')}.",
            id="flowpilot_analytics.W005",
        ))
    for setting in SETTINGS:
        value = app_settings.raw(setting.name)
        problem = setting.validate(value)
        if problem:
            source = setting_label(setting.name)
            if setting.name not in (configured or {}):
                source = next(
                    (f"{old} (deprecated name of {source})" for old, key in DEPRECATED_SETTINGS.items()
                     if key == setting.name and hasattr(settings, old)),
                    source,
                )
            # A secret is never echoed into logs, even a malformed one.
            shown = repr(value)
            if setting.secret and isinstance(value, str):
                shown = f"a string of {len(value)} characters"
            messages.append(Error(
                f"{source} {problem}; got {shown}.",
                hint="See the README's 'Install into your project' settings table.",
                id=setting.check_id,
            ))
    return messages


@register(Tags.database)
def check_analytics_db_alias(app_configs=None, **kwargs):
    """``FLOWPILOT_ANALYTICS["DB_ALIAS"]`` must name a configured database, and the router be installed."""
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


@register()
def check_cross_account_alias(app_configs=None, **kwargs):
    """``FLOWPILOT_ANALYTICS["CROSS_ACCOUNT_DB_ALIAS"]``: a configured database, with the router installed."""
    from .conf import setting_label
    from .cross_account import ROUTER_PATH, router_problem
    from .routers import cross_account_db_alias

    alias = cross_account_db_alias()
    if not isinstance(alias, str) or not alias:
        return []  # None (the default routing), or a malformed value: flowpilot_analytics.E015
    errors = []
    if alias not in settings.DATABASES:
        errors.append(Error(
            f"{setting_label('CROSS_ACCOUNT_DB_ALIAS')} is {alias!r}, which is not a key of DATABASES.",
            hint="Add a database alias connecting as the role made by `manage.py grant_cross_account_role`.",
            id="flowpilot_analytics.E102",
        ))
    if ROUTER_PATH not in settings.DATABASE_ROUTERS:
        errors.append(Error(router_problem(alias), hint=f"Add {ROUTER_PATH!r} to DATABASE_ROUTERS.",
                            id="flowpilot_analytics.E103"))
    return errors


@register(Tags.database)
def check_cross_account_reads(app_configs, databases=None, **kwargs):
    """Warns when the faces reading every account (admin summary, report) would see no account's rows."""
    from .cross_account import cross_account_problems
    from .routers import cross_account_db_alias

    if not databases or not models_in_use_are_configured():
        return []
    alias = cross_account_db_alias()
    aliases = [alias] if alias else sorted(set(read_aliases()))
    aliases = [name for name in aliases if name in (databases or ()) and name in connections.settings]
    try:
        problems = cross_account_problems(aliases)
    except DatabaseError as exc:
        return [Warning(f"Could not tell whether the cross-account reads may read every account: {exc}",
                        id="flowpilot_analytics.W006")]
    return [Warning(problem, id="flowpilot_analytics.W006") for problem in problems]


@register()
def check_swappable_models(app_configs=None, **kwargs):
    """The swappable models go together, and the field map names fields of the right kind on them."""
    from .conf import ACCOUNT_MODEL, HANDOFF_MODEL, STEP_MODEL, setting_label, swapped_models
    from .field_map import field_map_problems
    from .models import get_account_model, get_handoff_model, get_step_model

    try:
        get_account_model(), get_step_model(), get_handoff_model()
    except (LookupError, ValueError):
        # A setting naming no installed model: Django's own check (models.E001, models.E002).
        return [Error("The models in use cannot be loaded: see the errors of Django's own model checks.",
                      id="flowpilot_analytics.E104")]
    swapped = swapped_models()
    if (STEP_MODEL in swapped) != (HANDOFF_MODEL in swapped):
        own, other = (STEP_MODEL, HANDOFF_MODEL) if STEP_MODEL in swapped else (HANDOFF_MODEL, STEP_MODEL)
        return [Error(
            f"{own} names a model of yours but {other} does not: the app's steps and handoffs belong to its "
            "own sessions, a host's to the host's.",
            hint=f"Set both {STEP_MODEL} and {HANDOFF_MODEL} (and {ACCOUNT_MODEL} when you have accounts of "
                 "your own), or neither. docs/host-integration.md.",
            id="flowpilot_analytics.E104",
        )]
    return [
        Error(message, hint=f"Fix {setting_label('FIELDS')}"
                            + (f"[{key!r}]" if key else "") + ". docs/host-integration.md, \"The field map\".",
              id="flowpilot_analytics.E105")
        for key, message in field_map_problems()
    ]


@register(Tags.database)
def check_metric_indexes(app_configs=None, databases=None, **kwargs):
    """Warns when the tables in use lack the probe or window index (``manage.py metric_indexes`` makes them)."""
    from django.db import router

    from .indexes import missing_indexes
    from .models import get_handoff_model, get_step_model

    if not databases or not models_in_use_are_configured():
        return []
    aliases = sorted({router.db_for_read(model) for model in (get_step_model(), get_handoff_model())})
    warnings = []
    for alias in aliases:
        if databases is None or alias not in databases or alias not in connections.settings:
            continue
        connection = connections[alias]
        try:
            missing = missing_indexes(connection)
        except DatabaseError as exc:
            warnings.append(Warning(f"Could not read the indexes of database {alias!r}: {exc}",
                                    id="flowpilot_analytics.W007"))
            continue
        for index in missing:
            warnings.append(Warning(
                f"Database {alias!r}: {index.table} has no {index.purpose} index for the escalation metric "
                f"(leading with {' or '.join('(' + ', '.join(columns) + ')' for columns in index.accepted)}"
                + (f", carrying {', '.join(index.covering)}" if index.covering and connection.vendor == "postgresql"
                   else "")
                + "): each request would scan instead.",
                hint=f"Run `manage.py metric_indexes --database {alias} --apply`, or: {index.statement(connection)}",
                id="flowpilot_analytics.W007",
            ))
    return warnings


@register(Tags.database)
def check_first_action_index(app_configs=None, databases=None, **kwargs):
    """Warns when the first-action index is on but reads still probe (not PostgreSQL, not installed, not backfilled)."""
    from . import first_action_index

    if not databases or not first_action_index.is_on() or not models_in_use_are_configured():
        return []
    alias = first_action_index.read_alias()
    if alias not in databases or alias not in connections.settings:
        return []
    try:
        state = first_action_index.read_state(connections[alias])
    except DatabaseError as exc:
        return [Warning(f"Could not read the state of the first-action index on database {alias!r}: {exc}",
                        id="flowpilot_analytics.W040")]
    if state.ready:
        return []
    return [Warning(
        f"FLOWPILOT_ANALYTICS[\"FIRST_ACTION_INDEX\"] is on but reads probe the steps on database {alias!r}: "
        f"{state.reason}.",
        hint="docs/first-action-index.md: `manage.py first_action_index install`, then `backfill`.",
        id="flowpilot_analytics.W040",
    )]
