"""The demo project's own page: ``/``, where a newcomer starts after ``make run``."""

from django.views.generic import TemplateView

from flowpilot_analytics.demo import DEMO_PASSWORD


class LandingView(TemplateView):
    """Links to every face of the app (dashboard, browsable API, admin, API docs) and the demo logins."""

    template_name = "landing.html"
    extra_context = {"demo_password": DEMO_PASSWORD}
