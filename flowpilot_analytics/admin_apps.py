"""The app config that puts the escalation summary widget on the admin index.

Its own module, importing no model: ``INSTALLED_APPS`` loads it before the models.
"""

from django.contrib.admin.apps import AdminConfig


class FlowpilotAdminConfig(AdminConfig):
    """``django.contrib.admin`` whose default site shows the escalation summary widget.

    Listed in ``INSTALLED_APPS`` instead of ``"django.contrib.admin"``.
    """

    default_site = "flowpilot_analytics.admin_site.FlowpilotAdminSite"
