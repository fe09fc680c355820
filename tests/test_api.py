"""GET /api/v1/analytics/flowpilot/escalations: the API of docs/metric.md (core suite: both model sets)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from flowpilot_analytics.access import Role
from flowpilot_analytics.constants import METRIC_DEFINITION
from flowpilot_analytics.factories import UserFactory
from tests.builders import CONTRACT_FIELDS, URL, claimed_handoff
from tests.model_sets import MODELS

pytestmark = [pytest.mark.django_db, pytest.mark.core]


def test_url_is_the_contracts():
    assert reverse("flowpilot_analytics:escalation-metrics") == URL


def test_engineer_gets_the_figures_of_their_account(engineer_client, account, other_account):
    now = timezone.now()
    claimed_handoff(account, claimed_at=now - timedelta(days=2), lag=30)
    claimed_handoff(account, claimed_at=now - timedelta(days=3), lag=90)
    claimed_handoff(account, claimed_at=now - timedelta(days=4))
    claimed_handoff(other_account, claimed_at=now - timedelta(days=2), lag=5)

    response = engineer_client.get(URL, {"period": "7d"})

    assert response.status_code == 200
    body = response.json()
    assert set(body) >= CONTRACT_FIELDS
    assert {name: body[name] for name in CONTRACT_FIELDS} == {
        "period": "7d",
        "n_handoffs_claimed": 3,
        "n_handoffs_with_action": 2,
        "avg_seconds_to_first_action": 60.0,
        "median_seconds_to_first_action": 60.0,
        "p95_seconds_to_first_action": 87.0,
        "metric_definition": METRIC_DEFINITION,
    }


def test_metric_definition_is_the_exact_contract_text(engineer_client):
    body = engineer_client.get(URL).json()
    assert body["metric_definition"] == (
        "elapsed_seconds(first ai_session_step in session where created_at > SessionHandoff.claimed_at)"
        " \u2014 measures post-claim activity lag, NOT verbal-handoff savings. Pair with manual baseline."
    )


def test_period_defaults_to_30d_and_types_are_the_schemas(engineer_client, account):
    claimed_handoff(account, claimed_at=timezone.now() - timedelta(days=20), lag=1)
    claimed_handoff(account, claimed_at=timezone.now() - timedelta(days=40), lag=1)

    body = engineer_client.get(URL).json()

    assert body["period"] == "30d"
    assert body["n_handoffs_claimed"] == 1
    assert isinstance(body["avg_seconds_to_first_action"], float)


def test_no_data_gives_zeros_and_nulls(engineer_client):
    body = engineer_client.get(URL, {"period": "90d"}).json()
    assert body["n_handoffs_claimed"] == body["n_handoffs_with_action"] == 0
    assert body["avg_seconds_to_first_action"] is None
    assert body["median_seconds_to_first_action"] is None
    assert body["p95_seconds_to_first_action"] is None


@pytest.mark.parametrize("period", ["7d", "30d", "90d"])
def test_admin_may_read_every_period(api_client, member, period):
    api_client.force_authenticate(member(Role.ADMIN))
    response = api_client.get(URL, {"period": period})
    assert response.status_code == 200
    assert response.json()["period"] == period


@pytest.mark.parametrize(
    "query",
    ["period=7D", "period=14d", "period=0d", "period=", "period=7", "period=7d%00", "period=junk",
     "period=7d&period=30d", "period=7d&period=7d"],
)
def test_bad_period_is_400_naming_the_field_and_allowed_values(engineer_client, query):
    response = engineer_client.get(f"{URL}?{query}")

    assert response.status_code == 400
    [message] = response.json()["period"]
    assert "7d, 30d, 90d" in message


def test_anonymous_is_401(api_client):
    response = api_client.get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_bad_token_is_401(api_client):
    response = api_client.get(URL, HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert response.status_code == 401


def test_token_authentication_works(api_client, member):
    token = Token.objects.create(user=member(Role.ENGINEER))
    response = api_client.get(URL, HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200


def test_session_login_works(client, member):
    user = member(Role.ENGINEER)
    client.force_login(user)
    assert client.get(URL, HTTP_ACCEPT="application/json").status_code == 200


def test_viewer_is_denied_403(api_client, member):
    api_client.force_authenticate(member(Role.VIEWER))
    assert api_client.get(URL).status_code == 403


def test_user_without_membership_is_denied_403(api_client, account):
    api_client.force_authenticate(UserFactory())
    assert api_client.get(URL).status_code == 403


def test_staff_without_membership_is_denied_403_as_a_member_of_no_account(api_client, account):
    api_client.force_authenticate(UserFactory(is_staff=True, is_superuser=True))
    response = api_client.get(URL)
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert "not a member of any account" in detail
    assert "role" not in detail.lower()


def test_a_viewer_is_told_about_their_role(api_client, member):
    api_client.force_authenticate(member(Role.VIEWER))
    assert "role in this account" in api_client.get(URL).json()["detail"]


@pytest.mark.parametrize(
    ("header", "said"),
    [
        ("Bearer abc123", 'The Authorization scheme "Bearer" is not accepted'),
        ("abc123", "The Authorization header has no scheme"),
        ("Basic dXNlcjpwYXNz", 'The Authorization scheme "Basic" is not accepted'),
    ],
)
def test_a_wrong_authentication_scheme_is_a_401_saying_which_to_use(api_client, member, header, said):
    key = Token.objects.create(user=member(Role.ENGINEER)).key
    response = api_client.get(URL, HTTP_AUTHORIZATION=header.replace("abc123", key))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    detail = response.json()["detail"]
    assert detail.startswith(said)
    assert detail.endswith('use "Authorization: Token <key>".')


def test_several_memberships_without_account_is_400(api_client, member, account, other_account):
    user = member(Role.ENGINEER, account=account)
    member(Role.ADMIN, account=other_account, user=user)
    api_client.force_authenticate(user)

    response = api_client.get(URL)

    assert response.status_code == 400
    assert "account" in response.json()


def test_several_memberships_pick_the_account_and_its_role(api_client, member, account, other_account):
    now = timezone.now()
    claimed_handoff(account, claimed_at=now - timedelta(days=1), lag=10)
    claimed_handoff(other_account, claimed_at=now - timedelta(days=1), lag=20)
    user = member(Role.ENGINEER, account=account)
    member(Role.VIEWER, account=other_account, user=user)
    api_client.force_authenticate(user)

    mine = api_client.get(URL, {"account": account.pk})
    assert mine.status_code == 200
    assert mine.json()["avg_seconds_to_first_action"] == 10.0
    assert api_client.get(URL, {"account": other_account.pk}).status_code == 403


def test_account_of_which_user_is_not_a_member_is_404_like_a_missing_one(
    engineer_client, other_account
):
    foreign = engineer_client.get(URL, {"account": other_account.pk})
    missing = engineer_client.get(URL, {"account": other_account.pk + 1000})

    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()


@pytest.mark.parametrize("value", ["a b", "", "-1", "-abc", "0", "1.5", "x" * 101, str(2**63), str(10**30)])
def test_malformed_account_is_400_naming_the_field(engineer_client, value):
    response = engineer_client.get(URL, {"account": value})
    assert response.status_code == 400
    assert "account" in response.json()


def test_the_account_may_be_named_by_its_slug_where_accounts_have_one(api_client, member, account, other_account):
    claimed_handoff(account, claimed_at=timezone.now() - timedelta(days=1), lag=10)
    user = member(Role.ENGINEER, account=account)
    member(Role.ENGINEER, account=other_account, user=user)
    api_client.force_authenticate(user)
    window = {"start": "2026-01-01", "end": "2026-02-01"}
    by_id = api_client.get(URL, {"account": account.pk, **window})

    by_slug = api_client.get(URL, {"account": "acme", **window})

    if MODELS.has_slugs:
        assert by_slug.status_code == 200, by_slug.content
        assert by_slug.json() == by_id.json()
        assert api_client.get(URL, {"account": "ACME"}).status_code == 404  # exact, as a slug is
    else:  # a host's organisations without a slug field (FIELDS["account.slug"] = None): ids only
        assert by_slug.status_code == 400
        assert "no slug" in by_slug.json()["account"][0]


def test_an_unknown_or_foreign_slug_is_the_404_of_a_foreign_id(engineer_client, account, other_account):
    if not MODELS.has_slugs:
        pytest.skip("a host's accounts without slugs take ids only")
    foreign_id = engineer_client.get(URL, {"account": other_account.pk})
    foreign_slug = engineer_client.get(URL, {"account": "globex"})
    unknown_slug = engineer_client.get(URL, {"account": "no-such-account"})

    assert foreign_id.status_code == foreign_slug.status_code == unknown_slug.status_code == 404
    assert foreign_id.json() == foreign_slug.json() == unknown_slug.json()


def test_an_account_slug_of_digits_only_is_named_by_its_id(api_client, member):
    if not MODELS.has_slugs:
        pytest.skip("a host's accounts without slugs take ids only")
    digits = MODELS.account(name="Numbers Inc", slug="2024")
    api_client.force_authenticate(member(Role.ENGINEER, account=digits))
    assert api_client.get(URL, {"account": digits.pk}).status_code == 200
    # "2024" is an id: not this account's (unless its id happens to be 2024).
    assert api_client.get(URL, {"account": "2024"}).status_code == (200 if digits.pk == 2024 else 404)


def test_repeated_account_is_400(engineer_client, account):
    response = engineer_client.get(f"{URL}?account={account.pk}&account={account.pk}")
    assert response.status_code == 400
    assert "account" in response.json()


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_writes_are_405(engineer_client, method):
    assert getattr(engineer_client, method)(URL).status_code == 405


def test_head_and_options_are_allowed(engineer_client):
    assert engineer_client.head(URL).status_code == 200
    options = engineer_client.options(URL)
    assert options.status_code == 200
    assert set(options["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "OPTIONS"}


def test_browsable_api_renders_with_a_login_link(client, account):
    page = client.get(URL, HTTP_ACCEPT="text/html")
    assert page.status_code == 401
    assert "/api-auth/login/" in page.content.decode()


def test_browsable_api_renders_the_figures_for_a_logged_in_engineer(client, member):
    client.force_login(member(Role.ENGINEER))
    page = client.get(URL, HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    assert "n_handoffs_claimed" in page.content.decode()


def seed_handoffs(account, count):
    now = timezone.now()
    for index in range(count):
        claimed_handoff(account, claimed_at=now - timedelta(minutes=index + 1), lag=index % 97)


def test_query_count_does_not_grow_with_handoffs(api_client, member, account, django_assert_num_queries):
    token = Token.objects.create(user=member(Role.ENGINEER))
    headers = {"HTTP_AUTHORIZATION": f"Token {token.key}"}

    # token + user, the access policy's roles (the memberships), the account, the metric
    # itself; the request's read-only transaction (here a savepoint in the test's own:
    # SAVEPOINT, ROLLBACK TO, RELEASE); on PostgreSQL, binding the user and then the
    # account to it for Row-Level Security.
    request_queries = 4 + 3 + (2 if connection.vendor == "postgresql" else 0)

    seed_handoffs(account, 10)
    with django_assert_num_queries(request_queries):
        assert api_client.get(URL, **headers).json()["n_handoffs_claimed"] == 10

    seed_handoffs(MODELS.account(), 50)
    seed_handoffs(account, 490)
    with django_assert_num_queries(request_queries):
        assert api_client.get(URL, **headers).json()["n_handoffs_claimed"] == 500


@pytest.mark.django_db(transaction=True)
def test_browsable_api_renders_outside_any_test_transaction(client, member):
    """As under a real server: the page renders after the request's own transaction has ended."""
    client.force_login(member(Role.ENGINEER))
    page = client.get(URL, {"period": "7d"}, HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    assert "n_handoffs_claimed" in page.content.decode()


@pytest.mark.parametrize("path", ["", "/trend", "/by-engineer", "/handoffs"])
def test_the_browsable_apis_format_links_work(client, member, path):
    """The browsable API offers ?format=json and ?format=api on every page."""
    client.force_login(member(Role.ADMIN))
    html = client.get(URL + path, {"format": "api"})
    assert html.status_code == 200
    assert html["Content-Type"].startswith("text/html")
    assert client.get(URL + path, {"format": "json"})["Content-Type"] == "application/json"
