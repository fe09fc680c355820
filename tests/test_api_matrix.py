"""The authorisation matrix of the escalations endpoint: who gets what, for every period and method.

Order of the answers: authentication (401), then the method (405 for any
write: nothing here can be written, whatever one's accounts), then the account
and the role (400 / 404 / 403). Every request authenticates with a real token. On PostgreSQL the requests run as the app's RLS-bound role, so
the matrix holds with both layers active.
"""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.authtoken.models import Token

from flowpilot_analytics.access import Role
from flowpilot_analytics.factories import UserFactory
from tests.builders import claimed_handoff
from tests.model_sets import MODELS

pytestmark = [pytest.mark.django_db, pytest.mark.core]

URL = "/api/v1/analytics/flowpilot/escalations"
PERIODS = ["7d", "30d", "90d"]
METHODS = ["get", "post", "put", "patch", "delete"]
WRITES = set(METHODS) - {"get"}

# Handoffs of account A claimed 3, 20 and 60 days ago (so 1, 2, 3 of them per
# period), with lags of 10, 20 and 30 s; account B has other figures.
A_FIGURES = {"7d": (1, 10.0), "30d": (2, 15.0), "90d": (3, 20.0)}

# identity -> (answer to GET, answer to a write)
MATRIX = {
    "anonymous": (401, 401),
    "inactive user": (401, 401),
    "token of a deleted user": (401, 401),
    "non-member": (403, 405),
    "viewer": (403, 405),
    "engineer": (200, 405),
    "admin": (200, 405),
    "two accounts, engineer one: that account": (200, 405),
    "two accounts, viewer other: that account": (403, 405),
    "two accounts: no account given": (400, 405),
    "two accounts: a foreign account": (404, 405),
    "staff without membership": (403, 405),
    "superuser without membership": (403, 405),
}


@pytest.fixture
def tenants(account, other_account):
    now = timezone.now()
    for days, lag in [(3, 10), (20, 20), (60, 30)]:
        claimed_handoff(account, claimed_at=now - timedelta(days=days), lag=lag)
    for hours in range(1, 8):
        claimed_handoff(other_account, claimed_at=now - timedelta(hours=hours), lag=999)
    return account, other_account


def token_for(user):
    return Token.objects.create(user=user).key


@pytest.fixture
def credentials(tenants, member, become_app_role_on_postgres):
    """identity -> (token or None, extra query parameters); then the app role on PostgreSQL."""
    account, other_account = tenants
    inactive = member(Role.ENGINEER)
    inactive.is_active = False
    inactive.save()
    deleted = member(Role.ENGINEER)
    deleted_token = token_for(deleted)
    deleted.delete()
    two = member(Role.ENGINEER, account=account)
    member(Role.VIEWER, account=other_account, user=two)
    two_token = token_for(two)
    foreign = MODELS.account(slug="foreign")  # exists, but not one of theirs

    identities = {
        "anonymous": (None, {}),
        "inactive user": (token_for(inactive), {}),
        "token of a deleted user": (deleted_token, {}),
        "non-member": (token_for(UserFactory()), {}),
        "viewer": (token_for(member(Role.VIEWER)), {}),
        "engineer": (token_for(member(Role.ENGINEER)), {}),
        "admin": (token_for(member(Role.ADMIN)), {}),
        "two accounts, engineer one: that account": (two_token, {"account": account.pk}),
        "two accounts, viewer other: that account": (two_token, {"account": other_account.pk}),
        "two accounts: no account given": (two_token, {}),
        "two accounts: a foreign account": (two_token, {"account": foreign.pk}),
        "staff without membership": (token_for(UserFactory(is_staff=True)), {}),
        "superuser without membership": (token_for(UserFactory(is_staff=True, is_superuser=True)), {}),
    }
    become_app_role_on_postgres()
    return identities


@pytest.fixture
def become_app_role_on_postgres(request):
    if connection.vendor != "postgresql":
        return lambda: None
    return request.getfixturevalue("become_app_role")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("period", PERIODS)
@pytest.mark.parametrize("identity", list(MATRIX))
def test_authorisation_matrix(api_client, credentials, identity, period, method):
    token, extra = credentials[identity]
    headers = {"HTTP_AUTHORIZATION": f"Token {token}"} if token else {}
    query = "&".join(f"{name}={value}" for name, value in {"period": period, **extra}.items())

    response = getattr(api_client, method)(f"{URL}?{query}", **headers)

    expected = MATRIX[identity][method in WRITES]
    assert response.status_code == expected
    body = response.json()
    if expected == 200:
        assert (body["period"], body["n_handoffs_claimed"], body["avg_seconds_to_first_action"]) == (
            period,
            *A_FIGURES[period],
        )
    else:
        assert "n_handoffs_claimed" not in body, "a refusal carries no figure"
    if expected == 401:
        assert response["WWW-Authenticate"] == "Token"
    if expected == 405:
        assert set(response["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "OPTIONS"}
