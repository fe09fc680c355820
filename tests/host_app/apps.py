from django.apps import AppConfig


class HelpdeskConfig(AppConfig):
    """A host's own helpdesk app, as the monolith's would be (tests only: tests/settings_host_models.py)."""

    name = "tests.host_app"
    label = "helpdesk"
    verbose_name = "Helpdesk (a host's own models)"
    default_auto_field = "django.db.models.BigAutoField"
