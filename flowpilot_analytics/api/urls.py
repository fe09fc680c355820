from django.urls import path

from .views import EscalationMetricsApi

app_name = "flowpilot_analytics"

urlpatterns = [
    path("escalations", EscalationMetricsApi.as_view(), name="escalation-metrics"),
]
