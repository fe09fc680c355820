from django.apps import AppConfig


class FlowpilotAnalyticsConfig(AppConfig):
    name = "flowpilot_analytics"
    label = "flowpilot_analytics"
    verbose_name = "FlowPilot Analytics"
    default_auto_field = "django.db.models.BigAutoField"
