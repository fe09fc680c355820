from django.apps import AppConfig


class FlowpilotAnalyticsConfig(AppConfig):
    name = "flowpilot_analytics"
    label = "flowpilot_analytics"
    verbose_name = "FlowPilot Analytics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import checks  # noqa: F401  (registers the system checks)
