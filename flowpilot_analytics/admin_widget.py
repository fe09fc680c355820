"""
The escalation summary widget's data for the Django admin: who may see it, and its figures.

Shared by the widget's own admin page (``EscalationSummaryPageAdmin`` in
``admin.py``, linked from the app's section of the stock admin index) and the
``{% escalation_summary_widget %}`` tag a host may put on its admin index
(``templatetags/flowpilot_admin.py``). Imports nothing of ``django.contrib.admin``,
so template tag libraries load in a host without the admin.
"""

from .conf import app_settings
from .constants import METRIC_DEFINITION
from .cross_account import analytics_cross_account
from .overview import escalation_summary

# The one permission of the model with no table that stands for the page (models.EscalationSummaryPage).
VIEW_PERMISSION = "flowpilot_analytics.view_escalationsummarypage"


def may_view_escalation_summary(user):
    """Staff with the page's view permission (superusers have it) see every account's figures."""
    return bool(user and user.is_active and user.is_staff and user.has_perm(VIEW_PERMISSION))


def escalation_summary_context():
    """The widget's template context; only these reads run in the cross-account mode.

    When the connection cannot read across accounts, nothing is computed and
    ``cross_account_problem`` says why (the widget shows it instead of empty figures).
    """
    with analytics_cross_account() as mode:
        summary = None if mode.problem else escalation_summary(limit=app_settings.WIDGET_ACCOUNT_LIMIT)
    return {
        "escalation_summary": summary,
        "cross_account_problem": mode.problem,
        "metric_definition": METRIC_DEFINITION,
    }
