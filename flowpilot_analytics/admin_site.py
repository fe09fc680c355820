"""
The admin site with the escalation summary widget on its index page.

`FlowpilotAdminConfig` (in ``admin_apps.py``) makes `FlowpilotAdminSite` the default
``admin.site``. A host project that already has its own ``AdminSite`` subclass
mixes `EscalationSummaryAdminMixin` into it instead.
"""

from django.contrib import admin

from .constants import METRIC_DEFINITION
from .cross_account import CrossAccountAdminSiteMixin
from .overview import escalation_summary


class EscalationSummaryAdminMixin:
    """Adds the per-account escalation figures to the admin index (one template block)."""

    index_template = "admin/flowpilot_analytics/index.html"
    # The widget lists the accounts that most need attention; beyond this many it
    # says how many more there are (the report command lists every account).
    escalation_summary_limit = 25
    escalation_summary_permission = "flowpilot_analytics.view_sessionhandoff"

    def index(self, request, extra_context=None):
        extra_context = dict(extra_context or {})
        # Staff who may not see handoffs do not see their figures either.
        if request.user.has_perm(self.escalation_summary_permission):
            extra_context["escalation_summary"] = escalation_summary(limit=self.escalation_summary_limit)
            extra_context["metric_definition"] = METRIC_DEFINITION
        return super().index(request, extra_context)


class FlowpilotAdminSite(CrossAccountAdminSiteMixin, EscalationSummaryAdminMixin, admin.AdminSite):
    """Django's admin site plus the escalation summary widget."""
