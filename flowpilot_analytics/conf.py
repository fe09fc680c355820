"""
The app's settings: one dict ``FLOWPILOT_ANALYTICS`` in the host's settings, read through ``app_settings``.

Shaped like DRF's ``api_settings``::

    # the host's settings.py: only the keys it wants to change
    FLOWPILOT_ANALYTICS = {"STATEMENT_TIMEOUT_MS": 10_000, "THROTTLE_RATE": "300/minute"}

    # the app's code
    from flowpilot_analytics.conf import app_settings
    app_settings.STATEMENT_TIMEOUT_MS

Every key has its default here, so a host that sets nothing gets a working app.
Values are read lazily and cached; the cache is dropped on ``setting_changed``
(``override_settings`` in tests). Malformed values are refused by the system
checks (``flowpilot_analytics.E0xx``, in :mod:`flowpilot_analytics.checks`),
each naming its key. The swappable model settings are top-level, as Django
requires (``FLOWPILOT_ANALYTICS_HANDOFF_MODEL`` and friends), not in this dict.
"""

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

SETTING_NAME = "FLOWPILOT_ANALYTICS"

DEFAULTS = {
    # PostgreSQL cancels any statement of an analytics request running longer (ms); 0: no limit.
    "STATEMENT_TIMEOUT_MS": 5000,
    # Per-user rate of the analytics endpoints, "<n>/<second|minute|hour|day>"; None: no throttle.
    "THROTTLE_RATE": "120/minute",
    # The database alias the activity tables are read from (a read replica), with the router.
    "DB_ALIAS": "default",
    # Dotted paths of DRF authentication classes; None: the host's DEFAULT_AUTHENTICATION_CLASSES.
    "AUTHENTICATION_CLASSES": None,
    # The admin summary widget: how many accounts it lists (the most in need of attention).
    "WIDGET_ACCOUNT_LIMIT": 25,
}

# Keys whose values are dotted paths (or lists of them), imported when read.
IMPORT_STRINGS = {"AUTHENTICATION_CLASSES"}

# Top-level settings of earlier releases, still honoured for one release: {old name: key}.
DEPRECATED_SETTINGS = {
    "FLOWPILOT_ANALYTICS_STATEMENT_TIMEOUT_MS": "STATEMENT_TIMEOUT_MS",
    "FLOWPILOT_ANALYTICS_DB_ALIAS": "DB_ALIAS",
}


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
