from django.urls import path

from .views import AnalyticsAccountsApi, EscalationHandoffsApi, EscalationMetricsApi, EscalationsByEngineerApi, EscalationTrendApi

app_name = "flowpilot_analytics"

urlpatterns = [
    path("accounts", AnalyticsAccountsApi.as_view(), name="analytics-accounts"),
    path("escalations", EscalationMetricsApi.as_view(), name="escalation-metrics"),
    path("escalations/trend", EscalationTrendApi.as_view(), name="escalation-trend"),
    path("escalations/by-engineer", EscalationsByEngineerApi.as_view(), name="escalations-by-engineer"),
    path("escalations/handoffs", EscalationHandoffsApi.as_view(), name="escalation-handoffs"),
]
