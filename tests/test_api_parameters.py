"""Each endpoint's query parameters: pinned, documented, and anything else refused by name (never ignored)."""

import pytest

from flowpilot_analytics.access import Role

pytestmark = [pytest.mark.django_db, pytest.mark.core]

BASE = "/api/v1/analytics/flowpilot/"
WINDOW = {"account", "period", "start", "end", "time_zone", "clock", "format"}
# Every parameter each endpoint reads. A new one is added here, to the schema (checked below) and
# to the README: a parameter an endpoint does not read is a 400, so a typo never gives a default answer.
ACCEPTED = {
    "escalations": WINDOW | {"target_seconds", "compare"},
    "escalations/trend": WINDOW | {"interval", "target_seconds", "definition"},
    "escalations/by-engineer": WINDOW | {"claimed_by", "definition"},
    "escalations/handoffs": WINDOW | {"claimed_by", "has_action", "ordering", "page_size", "cursor", "definition"},
    "accounts": {"format"},
}


@pytest.fixture
def admin_client(api_client, member):
    api_client.force_authenticate(member(Role.ADMIN))
    return api_client


@pytest.mark.parametrize("endpoint", ACCEPTED)
def test_a_misspelt_parameter_is_a_400_naming_it_and_the_parameters_read(admin_client, endpoint):
    response = admin_client.get(BASE + endpoint, {"perod": "7d"})

    assert response.status_code == 400, response.content
    [message] = response.json()["perod"]
    assert message.startswith('Unknown parameter "perod". This endpoint reads: ')
    listed = message.removeprefix('Unknown parameter "perod". This endpoint reads: ').split(".")[0]
    assert set(listed.split(", ")) == ACCEPTED[endpoint]
    if "period" in ACCEPTED[endpoint]:
        assert message.endswith("Did you mean period?")


@pytest.mark.parametrize(
    ("endpoint", "parameter", "value"),
    [
        ("escalations/trend", "compare", "previous"),
        ("escalations/by-engineer", "target_seconds", "60"),
        ("escalations/by-engineer", "compare", "previous"),
        ("escalations/handoffs", "interval", "week"),
        ("escalations", "interval", "week"),
        ("escalations", "claimed_by", "1"),
    ],
)
def test_a_parameter_another_endpoint_reads_is_refused_here_not_ignored(admin_client, endpoint, parameter, value):
    response = admin_client.get(BASE + endpoint, {parameter: value})
    assert response.status_code == 400
    assert list(response.json()) == [parameter]


@pytest.mark.parametrize("endpoint", ACCEPTED)
def test_the_schema_documents_exactly_the_parameters_each_endpoint_reads(client, endpoint):
    body = client.get("/api/schema/", {"format": "json"}).json()
    documented = {parameter["name"] for parameter in body["paths"]["/" + "api/v1/analytics/flowpilot/"
                                                                     + endpoint]["get"]["parameters"]}
    assert documented == ACCEPTED[endpoint]
