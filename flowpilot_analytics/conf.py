"""
The app's settings: one dict ``FLOWPILOT_ANALYTICS`` in the host's settings, read through ``app_settings``.

Shaped like DRF's ``api_settings``::

    # the host's settings.py: only the keys it wants to change
    FLOWPILOT_ANALYTICS = {"STATEMENT_TIMEOUT_MS": 10_000, "THROTTLE_RATE": "300/minute"}

    # the app's code
    from flowpilot_analytics.conf import app_settings
    app_settings.STATEMENT_TIMEOUT_MS

Every key is declared once, in ``SETTINGS`` below: its default (so a host that
sets nothing gets a working app), the line of the README's settings table, the
id of the system check refusing a malformed value, and the rule that check
applies (:func:`flowpilot_analytics.checks.check_app_settings` runs them, each
error naming its key). Adding a key is adding one ``Setting`` there; a test
keeps the README's table equal to :func:`settings_table`.

Values are read lazily and cached; the cache is dropped on ``setting_changed``
(``override_settings`` in tests). The swappable model settings are top-level,
as Django requires (``FLOWPILOT_ANALYTICS_HANDOFF_MODEL`` and friends, read by
:func:`model_label`), not in this dict: Django decides which models exist when
it starts. docs/host-integration.md walks a host through both.
"""

import re
from dataclasses import dataclass
from typing import Callable

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

SETTING_NAME = "FLOWPILOT_ANALYTICS"

THROTTLE_RATE_FORMAT = re.compile(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)")

# The swappable models (Meta.swappable of each): top-level settings naming a host's
# model as "app_label.ModelName", the app's own when unset.
ACCOUNT_MODEL = "FLOWPILOT_ANALYTICS_ACCOUNT_MODEL"
STEP_MODEL = "FLOWPILOT_ANALYTICS_STEP_MODEL"
HANDOFF_MODEL = "FLOWPILOT_ANALYTICS_HANDOFF_MODEL"
DEFAULT_MODELS = {
    ACCOUNT_MODEL: "flowpilot_analytics.Account",
    STEP_MODEL: "flowpilot_analytics.AiSessionStep",
    HANDOFF_MODEL: "flowpilot_analytics.SessionHandoff",
}
# Not a host's setting: derived from HANDOFF_MODEL. The app's sessions go with its
# handoffs (a host's handoffs and steps point at the host's own sessions), so
# AiSession is swapped out, for the host's handoff model, whenever they are.
SESSION_MODEL = "FLOWPILOT_ANALYTICS_SESSION_MODEL"
DEFAULT_SESSION_MODEL = "flowpilot_analytics.AiSession"


def is_default_model(setting, label):
    """Whether ``label`` names the app's own model for the swappable ``setting`` (case as get_model)."""
    app_label, _, name = (label or "").partition(".")
    default_app, _, default_name = DEFAULT_MODELS[setting].partition(".")
    return app_label == default_app and name.lower() == default_name.lower()


def model_label(setting):
    """The model a swappable setting names (``"app_label.ModelName"``), the app's own when unset."""
    if setting == SESSION_MODEL:
        handoff = model_label(HANDOFF_MODEL)
        return DEFAULT_SESSION_MODEL if is_default_model(HANDOFF_MODEL, handoff) else handoff
    return getattr(settings, setting, None) or DEFAULT_MODELS[setting]


def swapped_models():
    """``{setting: the host's model}`` of the swappable settings naming a model of the host's."""
    labels = {setting: model_label(setting) for setting in DEFAULT_MODELS}
    return {setting: label for setting, label in labels.items() if not is_default_model(setting, label)}


def install_swappable_model_defaults():
    """Gives every swappable setting a value in ``settings``, as ``AUTH_USER_MODEL`` has one.

    Called when the app's config is created, before any model is imported: the
    migrations and the models name ``settings.FLOWPILOT_ANALYTICS_ACCOUNT_MODEL``
    as Django's own name ``settings.AUTH_USER_MODEL`` (``makemigrations`` writes
    them so), which must then exist in a host that leaves them unset. A value
    the host set is kept; :data:`SESSION_MODEL` is always derived.
    """
    for setting in DEFAULT_MODELS:
        if not getattr(settings, setting, None):
            setattr(settings, setting, DEFAULT_MODELS[setting])
    setattr(settings, SESSION_MODEL, model_label(SESSION_MODEL))


# The field map (FLOWPILOT_ANALYTICS["FIELDS"]): "<model>.<role>" -> the name of the
# field playing that role on the model in use. The host gives only the keys it changes.
DEFAULT_FIELDS = {
    "handoff.account": "account",
    "handoff.session": "session",
    "handoff.claimed_at": "claimed_at",
    "handoff.claimed_by": "claimed_by",
    "step.session": "session",
    "step.created_at": "created_at",
    "step.account": "account",
    "account.name": "name",
    "account.slug": "slug",
}
# The keys that may be None: the model has no such field.
OPTIONAL_FIELDS = ("step.account", "account.slug")

# FLOWPILOT_ANALYTICS["RLS"]: the host's own PostgreSQL settings, set in each request's transaction.
DEFAULT_RLS = {"account_setting": None, "user_setting": None, "cross_account_setting": None}
# A custom PostgreSQL setting has a two-part name ("app.current_org"): set_config refuses others.
CUSTOM_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)+")


def _non_negative_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return "must be an integer, 0 or more"
    return None


# PostgreSQL's own range for work_mem: 64kB to INT_MAX kB (64-bit builds), in its units.
_MEMORY = re.compile(r"([1-9][0-9]{0,12})(kB|MB|GB|TB)")
_MEMORY_KB = {"kB": 1, "MB": 1024, "GB": 1024 ** 2, "TB": 1024 ** 3}
_WORK_MEM_KB = (64, 2_147_483_647)


def _work_mem(value):
    match = _MEMORY.fullmatch(value) if isinstance(value, str) else None
    if value is None:
        return None
    if match is None:
        return "must be None or a PostgreSQL memory size such as '32MB' (an integer and kB, MB, GB or TB)"
    kilobytes = int(match.group(1)) * _MEMORY_KB[match.group(2)]
    if not _WORK_MEM_KB[0] <= kilobytes <= _WORK_MEM_KB[1]:
        return f"must be between {_WORK_MEM_KB[0]}kB and {_WORK_MEM_KB[1]}kB (PostgreSQL's range for work_mem)"
    return None


def _positive_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return "must be a positive integer"
    return None


def _positive_int_or_none(value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        return "must be None or a positive integer"
    return None


def _boolean(value):
    if not isinstance(value, bool):
        return f"must be True or False, got {value!r}"
    return None


def _throttle_rate(value):
    if value is not None and not (isinstance(value, str) and THROTTLE_RATE_FORMAT.fullmatch(value)):
        return 'must be None or a rate such as "120/minute" (a positive count per second, minute, hour, day)'
    return None


def _database_alias(value):
    if not isinstance(value, str) or not value:
        return "must be the alias of a database in DATABASES (a non-empty string)"
    return None


def _optional_database_alias(value):
    if value is not None and (not isinstance(value, str) or not value):
        return "must be None or the alias of a database in DATABASES (a non-empty string)"
    return None


def _authentication_classes(value):
    from rest_framework.authentication import BaseAuthentication

    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(path, str) for path in value):
        return "must be None or a list of dotted paths of DRF authentication classes"
    for path in value:
        try:
            cls = import_string(path)
        except ImportError as exc:
            return f"names {path!r}, which cannot be imported ({exc})"
        if not (isinstance(cls, type) and issubclass(cls, BaseAuthentication)):
            return f"names {path!r}, which is not a DRF authentication class (a BaseAuthentication)"
    return None


# The blocks of the base template the dashboard page fills (README, "The dashboard page").
BASE_TEMPLATE_BLOCKS = ("title", "content")


def _base_template(value):
    if not isinstance(value, str) or not value:
        return "must be the name of a template (a non-empty string)"
    from django.template import TemplateDoesNotExist, TemplateSyntaxError
    from django.template.loader import get_template

    try:
        template = get_template(value)
    except TemplateDoesNotExist:
        return "names a template no template engine finds"
    except TemplateSyntaxError as exc:
        return f"names a template that does not compile ({exc})"
    blocks = template_blocks(template)
    missing = [name for name in BASE_TEMPLATE_BLOCKS if blocks is not None and name not in blocks]
    if missing:
        return "names a template without " + " or ".join(f"{{% block {name} %}}" for name in missing)
    return None


def template_blocks(template):
    """The block names of a Django template and the templates it extends; ``None`` for another engine's."""
    from django.template.loader_tags import BlockNode, ExtendsNode

    inner = getattr(template, "template", None)
    names = set()
    seen = set()
    while inner is not None and hasattr(inner, "nodelist") and inner.origin.name not in seen:
        seen.add(inner.origin.name)
        names.update(node.name for node in inner.nodelist.get_nodes_by_type(BlockNode))
        extends = inner.nodelist.get_nodes_by_type(ExtendsNode)
        if not extends:
            return names
        parent = extends[0].parent_name.var
        if not isinstance(parent, str):
            return None  # {% extends variable %}: cannot be followed without a context
        inner = inner.engine.get_template(parent)
    return names if inner is not None and hasattr(inner, "nodelist") else None


def field_map_problem(value):
    """What is wrong with a ``FIELDS`` value as a dict of names (its fields are checked on the models: E105)."""
    if not isinstance(value, dict):
        return "must be a dict of the field map's keys to change (\"handoff.claimed_at\": \"taken_at\", ...)"
    unknown = sorted(str(key) for key in value if key not in DEFAULT_FIELDS)
    if unknown:
        return f"has unknown keys {', '.join(map(repr, unknown))} (the keys: {', '.join(DEFAULT_FIELDS)})"
    for key, name in value.items():
        if name is None and key in OPTIONAL_FIELDS:
            continue
        if not isinstance(name, str) or not name.isidentifier():
            allowed = "a field name, or None" if key in OPTIONAL_FIELDS else "a field name"
            return f"maps {key!r} to {name!r}: it must be {allowed}"
    return None


def _access_policy(value):
    if not isinstance(value, str) or not value:
        return "must be the dotted path of a callable (user) -> {account_pk: role}"
    try:
        policy = import_string(value)
    except ImportError as exc:
        return f"names {value!r}, which cannot be imported ({exc})"
    if not callable(policy):
        return f"names {value!r}, which is not callable"
    return None


def _binding_key(value):
    if value is None:
        return None
    if not isinstance(value, str) or len(value) < 32:
        return "must be None (a key derived from SECRET_KEY) or a secret string of at least 32 characters"
    return None


def _rls_settings(value):
    if not isinstance(value, dict):
        return f"must be a dict with the keys {', '.join(DEFAULT_RLS)} (each a setting name or None)"
    unknown = sorted(str(key) for key in value if key not in DEFAULT_RLS)
    if unknown:
        return f"has unknown keys {', '.join(map(repr, unknown))} (the keys: {', '.join(DEFAULT_RLS)})"
    for key, name in value.items():
        if name is not None and not (isinstance(name, str) and CUSTOM_SETTING_NAME.fullmatch(name)):
            return (f"names {name!r} as its {key!r}: it must be None or a two-part PostgreSQL setting "
                    "name such as \"app.current_org\"")
    return None


@dataclass(frozen=True)
class Setting:
    """One key of ``FLOWPILOT_ANALYTICS``: its default, its README line and its system check."""

    name: str
    default: object
    # The README table's "meaning" column (Markdown, one line).
    doc: str
    # The system check's id, and its rule: what is wrong with a value ("must be ..."), or None.
    check_id: str
    validate: Callable[[object], str | None]
    # A dotted path (or a list of them) imported when read.
    import_string: bool = False
    # The README table's "default" cell (Markdown), when the repr would not fit a cell.
    shown_default: str | None = None
    # A secret: a malformed value is described, never shown.
    secret: bool = False


SETTINGS = (
    Setting(
        "STATEMENT_TIMEOUT_MS", 5000,
        "PostgreSQL cancels any statement of an analytics request running longer (ms); the API then "
        "answers `503` with `Retry-After: 30`. `0`: no limit. SQLite has none.",
        "flowpilot_analytics.E010", _non_negative_int,
    ),
    Setting(
        "WORK_MEM", "32MB",
        "PostgreSQL `work_mem` of an analytics request's transaction, set with its statement timeout: the "
        "percentiles sort every lag of the window, in memory when it fits (about 24 bytes a handoff: 32MB "
        "holds some 1.3 million), else on disk, some 20 % slower at 600k handoffs (docs/benchmarks.md). "
        "`None`: the server's (4MB by default). SQLite has none.",
        "flowpilot_analytics.E022", _work_mem,
    ),
    Setting(
        "THROTTLE_RATE", "120/minute",
        "Per-user rate of the analytics endpoints, `<n>/<second\\|minute\\|hour\\|day>`; past it, `429` with "
        "`Retry-After`. Applies whatever the host's `REST_FRAMEWORK` says. `None`: no throttle.",
        "flowpilot_analytics.E011", _throttle_rate,
    ),
    Setting(
        "DB_ALIAS", "default",
        "The database the activity tables are read from: a read replica's alias, with "
        "`flowpilot_analytics.routers.AnalyticsReadRouter` in `DATABASE_ROUTERS` (docs/scaling.md).",
        "flowpilot_analytics.E012", _database_alias,
    ),
    Setting(
        "AUTHENTICATION_CLASSES", None,
        "Dotted paths of the DRF authentication classes of the analytics endpoints. `None`: the host's "
        "`REST_FRAMEWORK[\"DEFAULT_AUTHENTICATION_CLASSES\"]`.",
        "flowpilot_analytics.E013", _authentication_classes, import_string=True,
    ),
    Setting(
        "WIDGET_ACCOUNT_LIMIT", 25,
        "How many accounts the admin summary widget lists (those most in need of attention); it says "
        "how many more there are.",
        "flowpilot_analytics.E014", _positive_int,
    ),
    Setting(
        "CROSS_ACCOUNT_DB_ALIAS", None,
        "The database the faces reading every account (admin summary, report, the app's admin pages) use: "
        "an alias connecting as a role made by `grant_cross_account_role`, with "
        "`flowpilot_analytics.routers.AnalyticsReadRouter` in `DATABASE_ROUTERS`. `None`: the default "
        "routing, which under the app role shows them no account (they say so). README, \"Security\".",
        "flowpilot_analytics.E015", _optional_database_alias,
    ),
    Setting(
        "BASE_TEMPLATE", "flowpilot_analytics/base.html",
        "The template the dashboard page extends, so that it sits in your site's layout: it must have "
        "`{% block title %}` and `{% block content %}`. The default is a minimal page of the app's own.",
        "flowpilot_analytics.E016", _base_template,
    ),
    Setting(
        "EXPORT_MAX_ROWS", 100_000,
        "Most rows of a streamed CSV export (the drill-down's `format=csv`); past it the file's last line "
        "is `# Truncated after <n> rows (EXPORT_MAX_ROWS). For the rest ask again with cursor=<c>`. "
        "`None`: no limit.",
        "flowpilot_analytics.E017", _positive_int_or_none,
    ),
    Setting(
        "EXPORT_MAX_SECONDS", 25,
        "Most seconds a streamed CSV export spends writing rows; past it, a last line `# Truncated after "
        "<s> s (EXPORT_MAX_SECONDS) ...` with the cursor to continue from. Keep it under the server's "
        "worker timeout (gunicorn's default: 30 s). `None`: no limit.",
        "flowpilot_analytics.E018", _positive_int_or_none,
    ),
    Setting(
        "FIELDS", DEFAULT_FIELDS,
        "The field map: which field of the models in use (the swappable `FLOWPILOT_ANALYTICS_*_MODEL`) plays "
        "each part of the metric, as `{\"handoff.claimed_at\": \"taken_at\"}`; only the keys you change. "
        "Keys: `handoff.account`, `handoff.session`, `handoff.claimed_at`, `handoff.claimed_by`, "
        "`step.session`, `step.created_at`, `step.account` (`None`: the session alone scopes a step), "
        "`account.name`, `account.slug` (`None`: the id is shown). docs/host-integration.md.",
        "flowpilot_analytics.E019", field_map_problem,
        shown_default="the app's own (`\"account\"`, `\"claimed_at\"`, ...)",
    ),
    Setting(
        "ACCESS_POLICY", "flowpilot_analytics.access.membership_roles",
        "Dotted path of a callable `(user) -> {account_pk: role}`, role `\"viewer\"`, `\"engineer\"` or "
        "`\"admin\"`: who may read which account. The default reads the app's `Membership`.",
        "flowpilot_analytics.E020", _access_policy, import_string=True,
    ),
    Setting(
        "RLS", DEFAULT_RLS,
        "The host's own PostgreSQL settings its Row-Level Security policies read, set with "
        "`set_config(name, value, true)` in each request's transaction: `account_setting` (the account's "
        "id), `user_setting` (the user's id), `cross_account_setting` (`on` in the faces reading every "
        "account); each `None` (not set). The app's own tables keep theirs (README, \"Security\").",
        "flowpilot_analytics.E021", _rls_settings,
        shown_default="each `None`",
    ),
    Setting(
        "BINDING_KEY", None,
        "The secret the Row-Level Security binding is signed with (at least 32 characters): each request's "
        "transaction sets, beside the account and user ids, their HMAC, which the database checks. `None`: "
        "a key derived from `SECRET_KEY`. After changing either, run `manage.py store_binding_key` as the "
        "tables' owner (docs/security.md, \"Rotating the key\").",
        "flowpilot_analytics.E060", _binding_key, secret=True,
    ),
    Setting(
        "FIRST_ACTION_INDEX", False,
        "PostgreSQL: read each claimed handoff's first action from a table kept exact by triggers "
        "(`manage.py first_action_index install`, then `backfill`) instead of probing the steps: faster "
        "reads of large accounts, a trigger's cost on every step and claim written (docs/benchmarks.md). "
        "Until installed and backfilled, reads probe (check `W040` says why). docs/first-action-index.md.",
        "flowpilot_analytics.E040", _boolean,
    ),
)

DEFAULTS = {setting.name: setting.default for setting in SETTINGS}

# Keys whose values are dotted paths (or lists of them), imported when read.
IMPORT_STRINGS = {setting.name for setting in SETTINGS if setting.import_string}

# Top-level settings of earlier releases, still honoured for one release: {old name: key}.
DEPRECATED_SETTINGS = {
    "FLOWPILOT_ANALYTICS_STATEMENT_TIMEOUT_MS": "STATEMENT_TIMEOUT_MS",
    "FLOWPILOT_ANALYTICS_DB_ALIAS": "DB_ALIAS",
}


def setting_label(key):
    """How a key is written in the host's settings, for messages: ``FLOWPILOT_ANALYTICS["KEY"]``."""
    return f'{SETTING_NAME}["{key}"]'


class AppSettings:
    """Attribute access to ``FLOWPILOT_ANALYTICS``, with the defaults above; dotted paths imported."""

    def __init__(self, defaults=None, import_strings=None):
        self.defaults = defaults or DEFAULTS
        self.import_strings = import_strings or IMPORT_STRINGS
        self._cached = set()

    @property
    def user_settings(self):
        """The host's ``FLOWPILOT_ANALYTICS`` dict, with the deprecated top-level names folded in."""
        user = dict(getattr(settings, SETTING_NAME, None) or {})
        for old_name, key in DEPRECATED_SETTINGS.items():
            if key not in user and hasattr(settings, old_name):
                user[key] = getattr(settings, old_name)
        return user

    def raw(self, key):
        """The value as configured (a dotted path stays a string), or its default."""
        if key not in self.defaults:
            raise AttributeError(f"Invalid {SETTING_NAME} setting: {key!r}")
        return self.user_settings.get(key, self.defaults[key])

    def __getattr__(self, key):
        if key not in self.defaults:
            raise AttributeError(f"Invalid {SETTING_NAME} setting: {key!r}")
        value = self.raw(key)
        if key in self.import_strings and value is not None:
            value = [import_string(path) for path in value] if isinstance(value, (list, tuple)) else (
                import_string(value)
            )
        self._cached.add(key)
        setattr(self, key, value)
        return value

    def reload(self):
        for key in self._cached:
            delattr(self, key)
        self._cached.clear()


app_settings = AppSettings()


def _reload_app_settings(*, setting, **kwargs):
    if setting == SETTING_NAME or setting in DEPRECATED_SETTINGS:
        app_settings.reload()


setting_changed.connect(_reload_app_settings)


def settings_table():
    """The README's table of the keys (Markdown), generated from ``SETTINGS``."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for setting in SETTINGS:
        if setting.shown_default is not None:
            default = setting.shown_default
        else:
            value = setting.default if setting.default is None else repr(setting.default).replace("'", '"')
            default = f"`{value}`"
        lines.append(f"| `{setting.name}` | {default} | {setting.doc} |")
    return "\n".join(lines)
