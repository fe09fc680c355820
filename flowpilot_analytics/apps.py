from django.apps import AppConfig

from .conf import install_swappable_model_defaults


class FlowpilotAnalyticsConfig(AppConfig):
    name = "flowpilot_analytics"
    label = "flowpilot_analytics"
    verbose_name = "FlowPilot Analytics"
    default_auto_field = "django.db.models.BigAutoField"

    def __init__(self, app_name, app_module):
        super().__init__(app_name, app_module)
        # Before any model is imported (apps.populate creates every config first).
        install_swappable_model_defaults()

    def ready(self):
        from . import checks  # noqa: F401  (registers the system checks)
