"""GET /accounts: the caller's accounts, with id, slug, name and role, from the access policy."""

import pytest
from django.db import connection

from flowpilot_analytics.access import Role
from flowpilot_analytics.factories import UserFactory
from tests.model_sets import MODELS

pytestmark = [pytest.mark.django_db, pytest.mark.core]

ACCOUNTS = "/api/v1/analytics/flowpilot/accounts"
SUMMARY = "/api/v1/analytics/flowpilot/escalations"


def test_a_member_of_several_accounts_gets_each_by_name_with_their_role(api_client, member, account, other_account):
    user = member(Role.VIEWER, account=other_account)
    member(Role.ENGINEER, account=account, user=user)
    MODELS.account(name="Initech", slug="initech")  # not theirs
    api_client.force_authenticate(user)

    response = api_client.get(ACCOUNTS)

    assert response.status_code == 200, response.content
    assert response.json() == {
        "accounts": [
            {"id": account.pk, "slug": "acme" if MODELS.has_slugs else None, "name": "Acme MSP",
             "role": "engineer"},
            {"id": other_account.pk, "slug": "globex" if MODELS.has_slugs else None, "name": "Globex IT",
             "role": "viewer"},
        ]
    }


def test_each_listed_account_opens_by_its_id_and_its_slug(api_client, member, account, other_account):
    user = member(Role.ENGINEER, account=account)
    member(Role.ADMIN, account=other_account, user=user)
    api_client.force_authenticate(user)
    for listed in api_client.get(ACCOUNTS).json()["accounts"]:
        assert api_client.get(SUMMARY, {"account": listed["id"]}).status_code == 200
        if listed["slug"] is not None:
            assert api_client.get(SUMMARY, {"account": listed["slug"]}).status_code == 200


def test_a_user_of_no_account_staff_included_gets_an_empty_list(api_client, account):
    api_client.force_authenticate(UserFactory(is_staff=True, is_superuser=True))
    response = api_client.get(ACCOUNTS)
    assert response.status_code == 200
    assert response.json() == {"accounts": []}


def test_anonymous_is_401(api_client):
    assert api_client.get(ACCOUNTS).status_code == 401


@pytest.mark.parametrize("params", [{"account": "1"}, {"period": "7d"}, {"format": "csv"}])
def test_a_parameter_the_list_does_not_read_is_a_400_naming_it(api_client, member, params):
    api_client.force_authenticate(member(Role.ENGINEER))
    response = api_client.get(ACCOUNTS, params)
    assert response.status_code == 400
    assert list(response.json()) == list(params)


def test_read_only(api_client, member):
    api_client.force_authenticate(member(Role.ADMIN))
    assert api_client.post(ACCOUNTS).status_code == 405


def test_a_constant_number_of_queries_whatever_the_number_of_accounts(
    api_client, member, django_assert_num_queries
):
    user = member(Role.ENGINEER)
    for index in range(5):
        member(Role.ADMIN, account=MODELS.account(name=f"Account {index}", slug=f"account-{index}"), user=user)
    api_client.force_authenticate(user)
    # The access policy's roles, the accounts' rows; the request's read-only transaction (here a
    # savepoint: SAVEPOINT, ROLLBACK TO, RELEASE); on PostgreSQL, binding it to the user.
    expected = 2 + 3 + (connection.vendor == "postgresql")
    with django_assert_num_queries(expected):
        assert len(api_client.get(ACCOUNTS).json()["accounts"]) == 6
