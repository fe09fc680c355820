"""Test settings of a host bringing its own models (tests/host_app): the core suite runs under both.

``make test`` runs the suite with ``tests/settings.py`` (the app's own models),
then the tests marked ``core`` with this module: the same tests, against the
host's organisations, seats, tickets, events and escalations, its field map, its
access policy and, on PostgreSQL, its own Row-Level Security. Models are decided
when Django starts, hence a process of its own (and a test database of its own).
"""

from tests.settings import *  # noqa: F401,F403
from tests.settings import DATABASES, FLOWPILOT_ANALYTICS, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.host_app"]

FLOWPILOT_ANALYTICS_ACCOUNT_MODEL = "helpdesk.Organization"
FLOWPILOT_ANALYTICS_STEP_MODEL = "helpdesk.TicketEvent"
FLOWPILOT_ANALYTICS_HANDOFF_MODEL = "helpdesk.Escalation"
FLOWPILOT_ANALYTICS = {
    **FLOWPILOT_ANALYTICS,
    "FIELDS": {
        "handoff.account": "organization",
        "handoff.session": "ticket",
        "handoff.claimed_at": "taken_at",
        "handoff.claimed_by": "taken_by",
        "step.session": "ticket",
        "step.created_at": "recorded_at",
        "step.account": None,
        "account.name": "title",
        "account.slug": None,
    },
    "ACCESS_POLICY": "tests.host_app.access.seat_roles",
    "RLS": {
        "account_setting": "helpdesk.organization_id",
        "user_setting": "helpdesk.person_id",
        "cross_account_setting": "helpdesk.all_organizations",
    },
}

# Another schema: never the test database of the app's own models (pytest-django's --reuse-db).
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["TEST"] = {**DATABASES["default"].get("TEST", {}),
                                    "NAME": f"test_{DATABASES['default']['NAME']}_host_models"}
