"""
A fresh ``startproject`` host with the app installed from its wheel, as the README says.

Run by ``scripts/host_smoke.py`` (``make host-smoke``): it builds the wheel,
installs it into a virtualenv outside the source tree (nothing but the wheel, its
``postgresql`` extra, pytest and pytest-django), copies this host to a temporary
directory and runs this suite on SQLite and on PostgreSQL. The host's settings
and URLs are Django's own plus the contract's two lines; DRF is left at its
defaults. Nothing here imports the repository's code: the expected figures are
computed below, from the rows this suite writes, by the contract's rules.
"""

import importlib.util
import json
import math
from datetime import timedelta
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path

import pytest
from django.contrib import admin
from django.contrib.admin.sites import AdminSite
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.utils import timezone

from smoke_kit.installation import (  # noqa: F401  (collected here: the checks every host variant runs)
    test_the_app_is_the_installed_wheel_and_the_source_tree_is_not_on_the_path,
    test_the_system_checks_pass_and_no_migration_is_missing,
    test_the_wheel_brings_its_templates_and_static_files,
)

from flowpilot_analytics.models import Account, AiSession, AiSessionStep, Membership, SessionHandoff

URL = "/api/v1/analytics/flowpilot/escalations"
WIDGET_URL = "/admin/flowpilot_analytics/escalationsummarypage/"
DASHBOARD_URL = "/analytics/flowpilot/escalations/"
# The host's own templates (its layout), outside any app: named in TEMPLATES["DIRS"] by the test using them.
HOST_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
# CONTRACT.md, "The API": the exact text, written out here rather than imported.
METRIC_DEFINITION = (
    "elapsed_seconds(first ai_session_step in session where created_at > SessionHandoff.claimed_at) "
    "\u2014 measures post-claim activity lag, NOT verbal-handoff savings. Pair with manual baseline."
)
SEED_FIELDS = (
    "n_handoffs_claimed",
    "n_handoffs_with_action",
    "avg_seconds_to_first_action",
    "median_seconds_to_first_action",
    "p95_seconds_to_first_action",
)
PERIOD_DAYS = {"7d": 7, "30d": 30, "90d": 90}

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    cache.clear()


# --- Data, written with the ORM only ---------------------------------------------------


def handoff(account, *, claimed_ago, lag=None, session=None, extra_steps=(), claimed_by=None):
    """A handoff claimed ``claimed_ago`` before now; with ``lag`` (seconds) a step that long after."""
    now = timezone.now()
    claimed_at = None if claimed_ago is None else now - claimed_ago
    anchor = claimed_at or now - timedelta(minutes=5)
    session = session or AiSession.objects.create(account=account, created_at=anchor - timedelta(minutes=10))
    # The AI's steps before the escalation never count.
    AiSessionStep.objects.create(session=session, account=account, created_at=anchor - timedelta(minutes=2))
    handoff = SessionHandoff.objects.create(
        session=session, account=account, created_at=anchor - timedelta(minutes=1),
        claimed_at=claimed_at, claimed_by=claimed_by,
    )
    for offset in ([] if lag is None else [lag]) + list(extra_steps):
        AiSessionStep.objects.create(
            session=session, account=account, created_at=claimed_at + timedelta(seconds=offset)
        )
    return handoff


@pytest.fixture
def acme(django_user_model):
    """An account with varied lags over 90 days, plus another account that must never show."""
    account = Account.objects.create(name="Acme MSP", slug="acme")
    engineer = django_user_model.objects.create_user("acme-engineer", password="smoke-pass-1")
    Membership.objects.create(user=engineer, account=account, role=Membership.Role.ENGINEER)
    hours = timedelta(hours=1)
    for days, lag in [(0.5, 3.25), (2, 17.0), (5, 45.5), (9, 120.125), (12, 600.0), (20, 3600.5), (45, 7.75)]:
        handoff(account, claimed_ago=timedelta(days=days), lag=lag, claimed_by=engineer)
    # Claimed, never acted on: counted as claimed, not as acted on.
    handoff(account, claimed_ago=timedelta(days=3))
    # A step at the claim instant is not an action after the claim; the next one is.
    handoff(account, claimed_ago=timedelta(days=4), lag=0, extra_steps=(90.0,))
    # Two handoffs of one session are measured independently.
    first = handoff(account, claimed_ago=timedelta(days=6), lag=30.0)
    handoff(account, claimed_ago=timedelta(days=6) - hours, lag=12.0, session=first.session)
    # Unclaimed: not counted at all. Beyond 90 days: outside every window.
    handoff(account, claimed_ago=None)
    handoff(account, claimed_ago=timedelta(days=120), lag=1.0)
    other = Account.objects.create(name="Globex IT", slug="globex")
    for days in (1, 2, 3):
        handoff(other, claimed_ago=timedelta(days=days), lag=9999.0)
    return account, engineer


# --- The contract's computation, written independently of the app ---------------------------


def percentile(values, fraction):
    """Linear interpolation between closest ranks (NumPy's default, PostgreSQL's percentile_cont)."""
    rank = fraction * (len(values) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


def expected_figures(account, period):
    now = timezone.now()
    start = now - timedelta(days=PERIOD_DAYS[period])
    lags = []
    claimed = 0
    for handoff in SessionHandoff.objects.filter(account=account, claimed_at__isnull=False):
        if not start <= handoff.claimed_at <= now:
            continue
        claimed += 1
        later = [
            step.created_at
            for step in AiSessionStep.objects.filter(session=handoff.session)
            if step.created_at > handoff.claimed_at
        ]
        if later:
            lags.append(max(0.0, (min(later) - handoff.claimed_at).total_seconds()))
    lags.sort()
    if not lags:
        return dict(zip(SEED_FIELDS, (claimed, 0, None, None, None)))
    return {
        "n_handoffs_claimed": claimed,
        "n_handoffs_with_action": len(lags),
        "avg_seconds_to_first_action": round(sum(lags) / len(lags), 3),
        "median_seconds_to_first_action": round(percentile(lags, 0.5), 3),
        "p95_seconds_to_first_action": round(percentile(lags, 0.95), 3),
    }


# --- The installation itself ---------------------------------------------------------------


def test_seed_demo_says_which_extra_to_install():
    assert importlib.util.find_spec("factory") is None, "this host installed no demo extra"
    with pytest.raises(CommandError, match=r"pip install 'flowpilot-analytics\[demo\]'"):
        call_command("seed_demo")


# --- The API --------------------------------------------------------------------------------


@pytest.mark.parametrize("period", ["7d", "30d", "90d"])
def test_an_engineer_gets_the_contracts_figures_of_their_account(client, acme, period):
    account, engineer = acme
    client.force_login(engineer)

    response = client.get(URL, {"period": period})

    assert response.status_code == 200
    body = response.json()
    assert {field: body[field] for field in SEED_FIELDS} == expected_figures(account, period)
    assert body["period"] == period
    assert body["metric_definition"] == METRIC_DEFINITION


def test_the_figures_are_not_trivial(acme):
    """The data above exercise every rule: a miss, the strict 'after', two handoffs in a session."""
    figures = expected_figures(acme[0], "30d")
    assert figures["n_handoffs_claimed"] == 10
    assert figures["n_handoffs_with_action"] == 9
    assert figures["median_seconds_to_first_action"] == 45.5


def test_anonymous_is_refused_as_drfs_default_authentication_decides(client, acme):
    """DRF's defaults put SessionAuthentication first, which sends no WWW-Authenticate: 403."""
    response = client.get(URL)
    assert response.status_code == 403
    assert response.json() == {"detail": "Authentication credentials were not provided."}


def test_other_accounts_and_roles_are_refused(client, acme, django_user_model):
    account, engineer = acme
    client.force_login(engineer)
    globex = Account.objects.get(slug="globex")
    assert client.get(URL, {"account": globex.pk}).status_code == 404
    bad = client.get(URL, {"period": "14d"})
    assert bad.status_code == 400 and "period" in bad.json()
    viewer = django_user_model.objects.create_user("acme-viewer")
    Membership.objects.create(user=viewer, account=account, role=Membership.Role.VIEWER)
    client.force_login(viewer)
    assert client.get(URL).status_code == 403


def test_rapid_requests_meet_a_429_at_the_default_rate(client, acme):
    client.force_login(acme[1])
    statuses = [client.get(URL, {"period": "7d"}).status_code for _ in range(121)]
    assert statuses[:120] == [200] * 120, "120 a minute are allowed"
    assert statuses[120] == 429
    assert int(client.get(URL)["Retry-After"]) > 0


def test_the_browsable_api_renders_with_the_hosts_drf(client, acme):
    client.force_login(acme[1])
    response = client.get(URL, HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert b"Escalation Metrics" in response.content


# --- The stock admin ------------------------------------------------------------------------


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = set()

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.add(dict(attrs).get("href"))


def hrefs(response):
    parser = Links()
    parser.feed(response.content.decode())
    return parser.hrefs


def test_the_hosts_admin_site_is_the_stock_one():
    assert admin.site.__class__ is AdminSite
    assert admin.site.index_template is None


def test_the_stock_admin_index_links_to_the_widget_page_which_renders(admin_client, acme, client):
    index = admin_client.get("/admin/")
    assert index.status_code == 200
    assert WIDGET_URL in hrefs(index)

    page = admin_client.get(WIDGET_URL)
    assert page.status_code == 200
    content = page.content.decode()
    assert 'id="escalation-summary"' in content
    assert 'data-account="acme"' in content and 'data-account="globex"' in content
    expected = expected_figures(acme[0], "30d")["median_seconds_to_first_action"]
    assert f'data-seconds="{expected:.3f}"' in content
    assert "flowpilot_analytics/admin/escalation_summary.css" in content

    client.force_login(acme[1])  # an engineer is not staff
    assert client.get(WIDGET_URL).status_code == 302


# --- The dashboard page ---------------------------------------------------------------------


def test_the_dashboard_renders_for_an_engineer_inside_the_hosts_own_layout(client, acme, settings):
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [HOST_TEMPLATES]}]
    settings.FLOWPILOT_ANALYTICS = {"BASE_TEMPLATE": "host/base.html"}
    call_command("check", fail_level="WARNING", stdout=StringIO())
    account, engineer = acme
    client.force_login(engineer)

    response = client.get(DASHBOARD_URL, {"period": "30d"})

    assert response.status_code == 200
    content = response.content.decode()
    assert 'id="host-navigation"' in content and 'id="host-footer"' in content
    assert "<title>Escalations · Acme MSP | FlowPilot monolith</title>" in content
    for field, value in expected_figures(account, "30d").items():
        shown = "" if value is None else value
        assert f'data-figure="{field}" data-value="{shown}"' in content, field
    assert "flowpilot_analytics/dashboard/dashboard.css" in content
    assert "Globex" not in content


def test_the_dashboard_sends_anonymous_to_the_hosts_login_and_refuses_a_viewer(
    client, acme, django_user_model
):
    response = client.get(DASHBOARD_URL)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/analytics/flowpilot/escalations/"
    viewer = django_user_model.objects.create_user("acme-viewer-2")
    Membership.objects.create(user=viewer, account=acme[0], role=Membership.Role.VIEWER)
    client.force_login(viewer)
    refused = client.get(DASHBOARD_URL)
    assert refused.status_code == 403
    assert "<!DOCTYPE html>" in refused.content.decode()  # the app's own minimal layout, by default


# --- The report command ---------------------------------------------------------------------


def test_escalation_report_gives_the_same_figures(acme):
    out = StringIO()
    call_command("escalation_report", "--account", "acme", "--period", "30d", "--format", "json", stdout=out)
    [row] = json.loads(out.getvalue())
    assert {field: row[field] for field in SEED_FIELDS} == expected_figures(acme[0], "30d")
    table = StringIO()
    call_command("escalation_report", stdout=table)
    assert "acme" in table.getvalue() and "globex" in table.getvalue()
