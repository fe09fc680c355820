from django.urls import path

from .views import EscalationMetricsApi, EscalationTrendApi

app_name = "flowpilot_analytics"

urlpatterns = [
    path("escalations", EscalationMetricsApi.as_view(), name="escalation-metrics"),
    path("escalations/trend", EscalationTrendApi.as_view(), name="escalation-trend"),
]
