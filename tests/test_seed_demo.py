"""seed_demo: the data `make run` serves."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token

from flowpilot_analytics.models import (
    Account,
    AiSession,
    AiSessionStep,
    BusinessCalendar,
    Membership,
    SessionHandoff,
)

pytestmark = pytest.mark.django_db

URL = "/api/v1/analytics/flowpilot/escalations"


def seed(*args):
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def test_seed_creates_accounts_roles_and_realistic_history():
    output = seed()

    assert set(Account.objects.values_list("slug", flat=True)) == {"northwind", "contoso"}
    roles = set(Membership.objects.values_list("account__slug", "role"))
    assert {(slug, role) for slug in ("northwind", "contoso") for role in Membership.Role.values} <= roles
    handoffs = SessionHandoff.objects.all()
    assert handoffs.filter(claimed_at__isnull=True).exists(), "some handoffs are still unclaimed"
    assert handoffs.count() > 1000
    assert AiSessionStep.objects.count() > 5 * handoffs.count() / 2
    for token in Token.objects.all():
        assert token.key in output
    assert "flowpilot-demo" in output


def test_seed_is_idempotent_and_reset_regenerates():
    seed()
    counts = (SessionHandoff.objects.count(), AiSessionStep.objects.count(), Membership.objects.count())
    tokens = set(Token.objects.values_list("key", flat=True))

    output = seed()

    assert "already present and up to date" in output
    assert (SessionHandoff.objects.count(), AiSessionStep.objects.count(), Membership.objects.count()) == counts
    assert set(Token.objects.values_list("key", flat=True)) == tokens

    seed("--reset")
    assert SessionHandoff.objects.count() == counts[0]


def test_demo_tokens_give_figures_to_engineers_and_403_to_viewers(api_client):
    seed()
    engineer = Token.objects.get(user__username="northwind-engineer").key
    viewer = Token.objects.get(user__username="northwind-viewer").key

    body = api_client.get(URL, {"period": "90d"}, HTTP_AUTHORIZATION=f"Token {engineer}").json()
    assert body["n_handoffs_claimed"] > body["n_handoffs_with_action"] > 100
    assert body["median_seconds_to_first_action"] < body["p95_seconds_to_first_action"]
    assert api_client.get(URL, HTTP_AUTHORIZATION=f"Token {viewer}").status_code == 403


def test_a_later_day_tops_the_history_up_so_the_7d_and_30d_windows_are_full(api_client, monkeypatch):
    first_day = timezone.now() - timedelta(days=20)
    monkeypatch.setattr(timezone, "now", lambda: first_day)
    seed()
    before = SessionHandoff.objects.count()

    later = first_day + timedelta(days=20, hours=5)
    monkeypatch.setattr(timezone, "now", lambda: later)
    output = seed()

    assert output.count("history topped up") == 2
    assert SessionHandoff.objects.count() > before
    # Every day of the last 30 has claimed handoffs of each account: the windows are full again.
    for slug in ("northwind", "contoso"):
        days = {
            (later - claimed_at) // timedelta(days=1)
            for claimed_at in SessionHandoff.objects.filter(
                account__slug=slug, claimed_at__gt=later - timedelta(days=30), claimed_at__lte=later
            ).values_list("claimed_at", flat=True)
        }
        assert days == set(range(30)), slug
    # None in the future.
    assert not AiSession.objects.filter(created_at__gt=later).exists()
    engineer = Token.objects.get(user__username="northwind-engineer").key
    week = api_client.get(URL, {"period": "7d"}, HTTP_AUTHORIZATION=f"Token {engineer}").json()
    assert week["n_handoffs_claimed"] > 50

    # The same day again: nothing more.
    topped_up = SessionHandoff.objects.count()
    assert "up to date" in seed()
    assert SessionHandoff.objects.count() == topped_up


def test_a_top_up_keeps_the_demo_calendar_as_edited(api_client, monkeypatch):
    first_day = timezone.now() - timedelta(days=20)
    monkeypatch.setattr(timezone, "now", lambda: first_day)
    seed()
    [calendar] = BusinessCalendar.objects.all()
    assert calendar.account.slug == "northwind"
    BusinessCalendar.objects.filter(pk=calendar.pk).update(time_zone="Asia/Tokyo")

    monkeypatch.setattr(timezone, "now", lambda: first_day + timedelta(days=20, hours=5))
    assert seed().count("history topped up") == 2

    [kept] = BusinessCalendar.objects.all()
    assert (kept.pk, kept.time_zone) == (calendar.pk, "Asia/Tokyo")
    engineer = Token.objects.get(user__username="northwind-engineer").key
    week = api_client.get(URL, {"period": "7d", "clock": "business"}, HTTP_AUTHORIZATION=f"Token {engineer}")
    assert week.status_code == 200, week.content
    assert week.json()["clock"] == "business" and week.json()["n_handoffs_claimed"] > 50
