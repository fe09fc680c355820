"""
Every URL of the app at the contract's paths; a host includes it once, at its root::

    urlpatterns += [path("", include("flowpilot_analytics.urls"))]

Names are reversed in the ``flowpilot_analytics`` namespace
(``reverse("flowpilot_analytics:escalation-metrics")``): the API's endpoints, and the
dashboard page (``escalation-dashboard``).
"""

from django.urls import include, path

from .api import urls as api_urls
from .dashboard import EscalationDashboardView

app_name = "flowpilot_analytics"

urlpatterns = [
    path("api/v1/analytics/flowpilot/", include(api_urls.urlpatterns)),
    path("analytics/flowpilot/escalations/", EscalationDashboardView.as_view(), name="escalation-dashboard"),
]
