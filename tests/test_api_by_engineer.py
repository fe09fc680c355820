"""GET .../escalations/by-engineer: each claimer's figures, and who may see which claimer."""

import pytest

from flowpilot_analytics.factories import MembershipFactory, UserFactory
from flowpilot_analytics.models import Membership
from flowpilot_analytics.stats import percentile
from tests.builders import BY_ENGINEER, HANDOFFS, URL, as_user

pytestmark = pytest.mark.django_db


def expected(lags):
    values = sorted(round(lag * 1_000_000) for lag in lags)
    return {
        "n_handoffs_with_action": len(values),
        "median_seconds_to_first_action": round(percentile(values, 0.5) / 1e6, 3),
        "p95_seconds_to_first_action": round(percentile(values, 0.95) / 1e6, 3),
        "max_seconds_to_first_action": values[-1] / 1e6,
    }


def test_an_admin_sees_every_claimer_with_their_figures_the_deleted_one_last(api_client, team):
    body = as_user(api_client, team["admin"]).get(BY_ENGINEER, {"period": "30d"}).json()
    rows = {row["engineer_name"]: row for row in body["engineers"]}

    assert [row["engineer_name"] for row in body["engineers"]] == [
        '=HYPERLINK("http://x") +1',
        "Bob\nline two Ø",
        'Zoë Ångström, "Ali"',
        "(deleted user)",
    ]
    alice = rows['Zoë Ångström, "Ali"']
    assert alice["engineer_id"] == team["alice"].pk
    assert alice["n_handoffs_claimed"] == 4 and alice["n_handoffs_without_action"] == 1
    assert {name: alice[name] for name in expected([30, 90.5, 600])} == expected([30, 90.5, 600])
    assert rows["(deleted user)"]["engineer_id"] is None
    assert rows["(deleted user)"]["n_handoffs_claimed"] == 1
    assert {name: rows["Bob\nline two Ø"][name] for name in expected([12.25, 7200])} == expected(
        [12.25, 7200]
    )
    # The rows partition the summary: its claimed and acted-on counts are their sums.
    summary = api_client.get(URL, {"period": "30d"}).json()
    for figure in ("n_handoffs_claimed", "n_handoffs_with_action"):
        assert (
            sum(row[figure] for row in body["engineers"])
            == summary[figure]
            == {"n_handoffs_claimed": 8, "n_handoffs_with_action": 7}[figure]
        )


def test_an_engineer_sees_only_their_own_row(api_client, team):
    body = as_user(api_client, team["bob"]).get(BY_ENGINEER).json()
    assert [row["engineer_id"] for row in body["engineers"]] == [team["bob"].pk]
    own = api_client.get(BY_ENGINEER, {"claimed_by": team["bob"].pk}).json()
    assert own["engineers"] == body["engineers"]
    assert own["engineers"][0]["n_handoffs_claimed"] == 2


def test_an_engineer_without_handoffs_gets_their_own_row_with_zero_counts(api_client, team, member):
    newcomer = member(Membership.Role.ENGINEER, user=UserFactory(username="newcomer"))
    rows = as_user(api_client, newcomer).get(BY_ENGINEER).json()["engineers"]
    assert len(rows) == 1
    assert rows[0]["engineer_id"] == newcomer.pk and rows[0]["engineer_name"] == "newcomer"
    assert rows[0]["n_handoffs_claimed"] == 0 and rows[0]["median_seconds_to_first_action"] is None


@pytest.mark.parametrize("url", [BY_ENGINEER, HANDOFFS])
def test_denied_an_engineer_asking_for_another_engineers_row_or_handoffs(api_client, team, url):
    client = as_user(api_client, team["bob"])
    for other in (team["alice"].pk, "deleted"):
        response = client.get(url, {"claimed_by": other})
        assert response.status_code == 403
        assert f"claimed_by={team['bob'].pk}" in response.json()["detail"]


@pytest.mark.parametrize("url", [BY_ENGINEER, HANDOFFS])
def test_denied_a_viewer(api_client, team, url):
    assert as_user(api_client, team["viewer"]).get(url).status_code == 403


@pytest.mark.parametrize("url", [BY_ENGINEER, HANDOFFS])
def test_denied_anonymous(api_client, url):
    assert api_client.get(url).status_code == 401


def test_an_admin_narrows_to_one_claimer_or_to_the_deleted_ones(api_client, team):
    client = as_user(api_client, team["admin"])
    deleted = client.get(BY_ENGINEER, {"claimed_by": "deleted"}).json()["engineers"]
    assert [(row["engineer_id"], row["n_handoffs_claimed"]) for row in deleted] == [(None, 1)]
    alice = client.get(BY_ENGINEER, {"claimed_by": team["alice"].pk}).json()["engineers"]
    assert [row["engineer_id"] for row in alice] == [team["alice"].pk]
    assert client.get(BY_ENGINEER, {"claimed_by": 2**62}).json()["engineers"] == []


def test_an_admin_cannot_learn_the_name_of_a_user_outside_the_account(
    api_client, team, other_account, become_serving_role
):
    """As the role the app serves as: Row-Level Security must not hide the account's own members."""
    outsider = UserFactory(username="outsider", first_name="Secret", last_name="Person")
    MembershipFactory(user=outsider, account=other_account, role=Membership.Role.ENGINEER)
    superuser = UserFactory(username="root", first_name="Root", is_superuser=True, is_staff=True)
    become_serving_role()
    client = as_user(api_client, team["admin"])

    for user in (outsider, superuser):
        response = client.get(BY_ENGINEER, {"claimed_by": user.pk})
        assert response.status_code == 200
        assert response.json()["engineers"] == []
        assert "Secret" not in response.content.decode() and "Root" not in response.content.decode()
    # A member of the account without handoffs in the window still gets a zero row.
    quiet = as_user(api_client, team["admin"]).get(BY_ENGINEER, {"claimed_by": team["viewer"].pk}).json()
    assert [row["n_handoffs_claimed"] for row in quiet["engineers"]] == [0]
