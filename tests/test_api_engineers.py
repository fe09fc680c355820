"""Per engineer, drill-down and CSV: GET .../escalations/by-engineer, .../escalations/handoffs, format=csv."""

import base64
import csv
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from flowpilot_analytics.factories import AccountFactory, MembershipFactory, UserFactory
from flowpilot_analytics.models import Membership
from flowpilot_analytics.stats import percentile
from tests.builders import claimed_handoff

pytestmark = pytest.mark.django_db

BASE = "/api/v1/analytics/flowpilot/escalations"
BY_ENGINEER = BASE + "/by-engineer"
HANDOFFS = BASE + "/handoffs"
TREND = BASE + "/trend"

# Names a CSV must survive: a comma and quotes, a newline, non-ASCII, a formula.
TRICKY_NAMES = {
    "alice": ("Zoë", 'Ångström, "Ali"'),
    "bob": ("Bob\nline two", "Ø"),
    "mallory": ("=HYPERLINK(\"http://x\")", "+1"),
}


def parse_csv(response):
    content = b"".join(response.streaming_content) if response.streaming else response.content
    text = content.decode("utf-8")
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.fixture
def team(account, other_account, member):
    """acme: alice 3 lags + 1 waiting, bob 2 lags, a deleted claimer 1 lag, mallory 1; globex: one of its own."""
    now = timezone.now()
    users = {}
    for username, (first, last) in TRICKY_NAMES.items():
        users[username] = member(
            Membership.Role.ENGINEER, user=UserFactory(username=username, first_name=first, last_name=last)
        )
    gone = UserFactory(username="gone")
    plan = [
        ("alice", 1, 30), ("alice", 2, 90.5), ("alice", 3, 600), ("alice", 4, None),
        ("bob", 1, 12.25), ("bob", 5, 7200),
        ("mallory", 6, 45),
        ("gone", 2, 3),
    ]
    for who, days, lag in plan:
        claimer = gone if who == "gone" else users[who]
        claimed_handoff(account, claimed_at=now - timedelta(days=days, minutes=who == "bob"), lag=lag,
                        claimed_by=claimer)
    claimed_handoff(account, claimed_at=now - timedelta(days=60), lag=1, claimed_by=users["alice"])
    claimed_handoff(other_account, claimed_at=now - timedelta(days=1), lag=5, claimed_by=users["alice"])
    gone.delete()
    users["admin"] = member(Membership.Role.ADMIN, user=UserFactory(username="boss"))
    users["viewer"] = member(Membership.Role.VIEWER)
    return users


def as_user(api_client, user):
    api_client.force_authenticate(user)
    return api_client


def expected(lags):
    values = sorted(round(lag * 1_000_000) for lag in lags)
    return {
        "n_handoffs_with_action": len(values),
        "median_seconds_to_first_action": round(percentile(values, 0.5) / 1e6, 3),
        "p95_seconds_to_first_action": round(percentile(values, 0.95) / 1e6, 3),
        "max_seconds_to_first_action": values[-1] / 1e6,
    }


# --- by-engineer ------------------------------------------------------------------------


def test_an_admin_sees_every_claimer_with_their_figures_the_deleted_one_last(api_client, team):
    body = as_user(api_client, team["admin"]).get(BY_ENGINEER, {"period": "30d"}).json()
    rows = {row["engineer_name"]: row for row in body["engineers"]}

    assert [row["engineer_name"] for row in body["engineers"]] == [
        '=HYPERLINK("http://x") +1', 'Bob\nline two Ø', 'Zoë Ångström, "Ali"', "(deleted user)"
    ]
    alice = rows['Zoë Ångström, "Ali"']
    assert alice["engineer_id"] == team["alice"].pk
    assert alice["n_handoffs_claimed"] == 4 and alice["n_handoffs_without_action"] == 1
    assert {name: alice[name] for name in expected([30, 90.5, 600])} == expected([30, 90.5, 600])
    assert rows["(deleted user)"]["engineer_id"] is None
    assert rows["(deleted user)"]["n_handoffs_claimed"] == 1
    assert {name: rows["Bob\nline two Ø"][name] for name in expected([12.25, 7200])} == expected([12.25, 7200])
    # The rows partition the summary: its claimed and acted-on counts are their sums.
    summary = api_client.get(BASE, {"period": "30d"}).json()
    for figure in ("n_handoffs_claimed", "n_handoffs_with_action"):
        assert sum(row[figure] for row in body["engineers"]) == summary[figure] == {"n_handoffs_claimed": 8,
                                                                                     "n_handoffs_with_action": 7}[figure]


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


# --- handoffs ---------------------------------------------------------------------------


def test_the_rows_agree_with_the_summary(api_client, team):
    client = as_user(api_client, team["admin"])
    body = client.get(HANDOFFS, {"period": "30d", "page_size": 500}).json()
    summary = client.get(BASE, {"period": "30d"}).json()
    rows = body["results"]

    assert len(rows) == summary["n_handoffs_claimed"] == 8
    lags = sorted(round(row["seconds_to_first_action"] * 1_000_000) for row in rows if row["first_action_at"])
    assert len(lags) == summary["n_handoffs_with_action"]
    assert round(percentile(lags, 0.5) / 1e6, 3) == summary["median_seconds_to_first_action"]
    assert round(percentile(lags, 0.95) / 1e6, 3) == summary["p95_seconds_to_first_action"]
    assert round(sum(lags) / len(lags) / 1e6, 3) == summary["avg_seconds_to_first_action"]
    assert body["next"] is None and body["ordering"] == "-claimed_at"
    claimed = [row["claimed_at"] for row in rows]
    assert claimed == sorted(claimed, reverse=True)
    first = rows[0]
    assert set(first) == {
        "handoff_id", "session_id", "claimed_at", "claimed_by_id", "claimed_by_name",
        "first_action_at", "seconds_to_first_action",
    }
    waiting = next(row for row in rows if row["first_action_at"] is None)
    assert waiting["seconds_to_first_action"] is None and waiting["claimed_by_id"] == team["alice"].pk
    assert {row["claimed_by_name"] for row in rows if row["claimed_by_id"] is None} == {"(deleted user)"}


def test_ordered_by_lag_with_the_handoffs_without_action_last(api_client, team):
    client = as_user(api_client, team["admin"])
    for ordering, reverse in (("-seconds_to_first_action", True), ("seconds_to_first_action", False)):
        rows = client.get(HANDOFFS, {"ordering": ordering}).json()["results"]
        lags = [row["seconds_to_first_action"] for row in rows]
        assert lags[-1] is None
        assert lags[:-1] == sorted(lags[:-1], reverse=reverse)
    assert [row["seconds_to_first_action"] for row in rows][0] == 3.0


def test_filtered_by_action_and_by_claimer(api_client, team):
    client = as_user(api_client, team["admin"])
    without = client.get(HANDOFFS, {"has_action": "false"}).json()["results"]
    assert [row["first_action_at"] for row in without] == [None]
    assert len(client.get(HANDOFFS, {"has_action": "true"}).json()["results"]) == 7
    bob = client.get(HANDOFFS, {"claimed_by": team["bob"].pk}).json()["results"]
    assert sorted(row["seconds_to_first_action"] for row in bob) == [12.25, 7200.0]


def test_an_engineer_sees_only_the_handoffs_they_claimed(api_client, team):
    rows = as_user(api_client, team["alice"]).get(HANDOFFS).json()["results"]
    assert {row["claimed_by_id"] for row in rows} == {team["alice"].pk}
    assert len(rows) == 4  # not the other account's, not the one out of the window


@pytest.mark.parametrize("ordering", ["-seconds_to_first_action", "seconds_to_first_action", "claimed_at", "-claimed_at"])
def test_pages_neither_repeat_nor_skip_a_handoff_when_handoffs_arrive_between_fetches(
    api_client, account, member, ordering
):
    admin = member(Membership.Role.ADMIN)
    client = as_user(api_client, admin)
    now = timezone.now()
    original = set()
    for index in range(11):
        # Equal lags and equal claim instants in pairs: the id must break the ties.
        lag = None if index % 5 == 4 else 10 * (index // 2)
        original.add(claimed_handoff(account, claimed_at=now - timedelta(hours=index // 2 + 1), lag=lag).pk)

    seen, params, pages = [], {"ordering": ordering, "page_size": 3, "period": "7d"}, 0
    while True:
        body = client.get(HANDOFFS, params).json()
        seen += [row["handoff_id"] for row in body["results"]]
        pages += 1
        # Arrivals: a fresh claim, and backfilled ones in the middle of the window and of the lags.
        claimed_handoff(account, claimed_at=timezone.now(), lag=15)
        claimed_handoff(account, claimed_at=now - timedelta(hours=2, minutes=30), lag=pages * 7)
        claimed_handoff(account, claimed_at=now - timedelta(hours=3, minutes=30))
        if body["next_cursor"] is None:
            break
        assert body["next"].endswith("cursor=" + body["next_cursor"]) or "cursor=" in body["next"]
        params = {**params, "cursor": body["next_cursor"]}

    seen_original = [pk for pk in seen if pk in original]
    assert sorted(seen_original) == sorted(original)
    assert len(seen) == len(set(seen)), "no handoff appears twice"
    assert pages >= 4


def test_a_cursor_pins_the_window_of_the_first_page(api_client, account, member, monkeypatch):
    client = as_user(api_client, member(Membership.Role.ADMIN))
    now = timezone.now()
    for hours in range(4):
        claimed_handoff(account, claimed_at=now - timedelta(days=7) + timedelta(minutes=5 + hours), lag=1)
    first = client.get(HANDOFFS, {"period": "7d", "page_size": 2, "ordering": "claimed_at"}).json()
    later = now + timedelta(minutes=30)  # by then the first page's oldest handoffs left the period
    monkeypatch.setattr(timezone, "now", lambda: later)
    second = client.get(
        HANDOFFS, {"period": "7d", "page_size": 2, "ordering": "claimed_at", "cursor": first["next_cursor"]}
    ).json()
    assert second["window_start"] == first["window_start"]
    assert len(first["results"]) + len(second["results"]) == 4


@pytest.mark.parametrize(
    "params, field",
    [
        ({"ordering": "lag"}, "ordering"),
        ({"ordering": "seconds_to_first_action", "ordering ": "x"}, None),
        ({"page_size": "0"}, "page_size"),
        ({"page_size": "501"}, "page_size"),
        ({"has_action": "maybe"}, "has_action"),
        ({"has_action": ""}, "has_action"),
        ({"has_action": "null"}, "has_action"),
        ({"claimed_by": "bob"}, "claimed_by"),
        ({"claimed_by": "0"}, "claimed_by"),
        ({"claimed_by": str(2**63)}, "claimed_by"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "WyJjbGFpbWVkX2F0IiwxLDEsIm5vdyJd"}, "cursor"),  # well-formed base64 JSON, not ours
        ({"format": "xml"}, "format"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api_client, team, params, field):
    response = as_user(api_client, team["admin"]).get(HANDOFFS, params)
    if field is None:
        assert response.status_code == 200  # an unknown parameter is ignored, as on the summary
        return
    assert response.status_code == 400
    assert field in response.json()
    assert response["Content-Type"].startswith("application/json")


def test_a_cursor_of_another_ordering_is_refused(api_client, team):
    client = as_user(api_client, team["admin"])
    cursor = client.get(HANDOFFS, {"page_size": 2}).json()["next_cursor"]
    response = client.get(HANDOFFS, {"page_size": 2, "cursor": cursor, "ordering": "seconds_to_first_action"})
    assert response.status_code == 400
    assert "ordering=-claimed_at" in response.json()["cursor"][0]


@pytest.mark.parametrize("url", [BASE, TREND, BY_ENGINEER, HANDOFFS])
def test_repeated_format_is_a_400(api_client, team, url):
    response = as_user(api_client, team["admin"]).get(url + "?format=csv&format=json")
    assert response.status_code == 400 and "format" in response.json()


# --- CSV --------------------------------------------------------------------------------


def flat(body):
    """The JSON as the CSV's columns: nested names joined with _, the distribution one column per bucket."""
    row = {}
    for name, value in body.items():
        if isinstance(value, dict):
            row.update({f"{name}_{key}": inner for key, inner in flat(value).items()})
        elif isinstance(value, list):
            row.update({f"{name}_{item['bucket']}": item["count"] for item in value})
        else:
            row[name] = value
    return row


def cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@pytest.fixture
def frozen_clock(monkeypatch):
    """One "now" for the JSON and the CSV a test compares."""
    instant = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: instant)
    return instant


def test_the_summary_as_csv_is_one_row_of_the_same_fields(api_client, team, frozen_clock):
    client = as_user(api_client, team["admin"])
    params = {"period": "30d", "compare": "previous", "target_seconds": "60"}
    body = client.get(BASE, params).json()
    response = client.get(BASE, {**params, "format": "csv"})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="escalations-acme-30d.csv"'
    rows = parse_csv(response)
    assert len(rows) == 1
    assert list(rows[0]) == list(flat(body))
    assert "distribution_under_1m" in rows[0] and "previous_distribution_over_24h" in rows[0]
    assert rows[0] == {name: cell(value) for name, value in flat(body).items()}
    assert rows[0]["metric_definition"].startswith("elapsed_seconds(")


def test_accept_text_csv_works_as_format_csv(api_client, team, frozen_clock):
    client = as_user(api_client, team["admin"])
    by_header = client.get(TREND, {"period": "7d"}, HTTP_ACCEPT="text/csv")
    by_param = client.get(TREND, {"period": "7d", "format": "csv"})
    assert by_header.content == by_param.content
    assert by_header["Content-Disposition"] == 'attachment; filename="escalations-trend-acme-7d.csv"'
    rows = parse_csv(by_header)
    buckets = client.get(TREND, {"period": "7d"}).json()["buckets"]
    assert len(rows) == len(buckets) == 8
    assert [row["range_start"] for row in rows] == [bucket["range_start"] for bucket in buckets]
    summary = client.get(BASE, {"period": "7d"}).json()
    assert sum(int(row["n_handoffs_claimed"]) for row in rows) == summary["n_handoffs_claimed"] == 8


def test_by_engineer_csv_escapes_commas_quotes_newlines_non_ascii_and_formulas(api_client, team, frozen_clock):
    client = as_user(api_client, team["admin"])
    body = client.get(BY_ENGINEER).json()
    response = client.get(BY_ENGINEER, {"format": "csv"})
    raw = response.content.decode("utf-8")
    rows = parse_csv(response)

    assert response["Content-Disposition"] == 'attachment; filename="escalations-by-engineer-acme-30d.csv"'
    assert [row["engineer_name"] for row in rows] == [
        "'=HYPERLINK(\"http://x\") +1", "Bob\nline two Ø", 'Zoë Ångström, "Ali"', "(deleted user)"
    ]
    assert '"Zoë Ångström, ""Ali"""' in raw  # quoted, quotes doubled
    assert "\r\n" in raw
    envelope = {name: value for name, value in body.items() if name != "engineers"}
    for row, engineer in zip(rows, body["engineers"]):
        expected_row = {name: cell(value) for name, value in flat({**envelope, **engineer}).items()}
        expected_row["engineer_name"] = row["engineer_name"]  # checked above, with its formula guard
        assert row == expected_row


def test_csv_keeps_negative_numbers_as_numbers(api_client, account, member):
    client = as_user(api_client, member(Membership.Role.ADMIN))
    now = timezone.now()
    claimed_handoff(account, claimed_at=now - timedelta(days=1), lag=10)
    claimed_handoff(account, claimed_at=now - timedelta(days=9), lag=100)
    row = parse_csv(client.get(BASE, {"period": "7d", "compare": "previous", "format": "csv"}))[0]
    assert row["change_avg_seconds_to_first_action"] == "-90.0"


def test_the_handoffs_csv_streams_every_row_without_pages(api_client, team, frozen_clock):
    client = as_user(api_client, team["admin"])
    response = client.get(HANDOFFS, {"format": "csv", "page_size": 2, "ordering": "seconds_to_first_action"})

    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"] == 'attachment; filename="escalations-handoffs-acme-30d.csv"'
    rows = parse_csv(response)
    body = client.get(HANDOFFS, {"page_size": 500, "ordering": "seconds_to_first_action"}).json()
    assert len(rows) == len(body["results"]) == 8
    envelope = {name: body[name] for name in body if name not in ("results", "next", "next_cursor")}
    assert [row["handoff_id"] for row in rows] == [str(row["handoff_id"]) for row in body["results"]]
    for row, item in zip(rows, body["results"]):
        expected_row = {name: cell(value) for name, value in flat({**envelope, **item}).items()}
        if item["claimed_by_name"].startswith("="):
            expected_row["claimed_by_name"] = "'" + item["claimed_by_name"]
        assert row == expected_row


def test_an_empty_list_as_csv_is_its_header(api_client, account, member):
    client = as_user(api_client, member(Membership.Role.ADMIN))
    for url, column in ((HANDOFFS, "seconds_to_first_action"), (BY_ENGINEER, "distribution_over_24h")):
        response = client.get(url, {"format": "csv"})
        content = b"".join(response.streaming_content) if response.streaming else response.content
        lines = content.decode().splitlines()
        assert len(lines) == 1 and column in lines[0].split(",")


def test_a_custom_window_names_its_dates_in_the_file_name(api_client, team):
    response = as_user(api_client, team["admin"]).get(
        BY_ENGINEER, {"start": "2026-03-01", "end": "2026-04-01", "time_zone": "Europe/Paris", "format": "csv"}
    )
    assert response["Content-Disposition"] == (
        'attachment; filename="escalations-by-engineer-acme-2026-03-01_2026-04-01.csv"'
    )


def test_an_error_asked_as_csv_is_json(api_client, team):
    response = as_user(api_client, team["admin"]).get(BY_ENGINEER, {"format": "csv", "period": "14d"})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert "period" in response.json()
    assert as_user(api_client, team["viewer"]).get(HANDOFFS, {"format": "csv"}).status_code == 403


# --- query counts -----------------------------------------------------------------------


def build(account, n_handoffs, n_claimers):
    now = timezone.now()
    claimers = [UserFactory() for _ in range(n_claimers)]
    for index in range(n_handoffs):
        claimed_handoff(
            account,
            claimed_at=now - timedelta(hours=index + 1),
            lag=None if index % 7 == 0 else index,
            claimed_by=claimers[index % n_claimers],
        )


# The request's savepoint, its rollback and release, and the membership (with its account),
# then: the grouped figures and the claimers' names (by-engineer, 2), or the page with its
# claimers joined (handoffs, 1). On PostgreSQL two more: binding the user, then the account (RLS).
@pytest.mark.parametrize("url, params, own_queries", [
    (BY_ENGINEER, {}, 2),
    (HANDOFFS, {"page_size": 50}, 1),
    (HANDOFFS, {"page_size": 50, "ordering": "-seconds_to_first_action"}, 1),
    (HANDOFFS, {"format": "csv"}, 1),
])
def test_the_query_count_does_not_grow_with_handoffs_or_engineers(
    api_client, member, django_assert_num_queries, url, params, own_queries
):
    counts = []
    for n_handoffs, n_claimers in ((10, 3), (200, 40)):
        account = AccountFactory()
        client = as_user(api_client, member(Membership.Role.ADMIN, account=account))
        build(account, n_handoffs, n_claimers)
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url, params)
            if response.streaming:
                b"".join(response.streaming_content)
        assert response.status_code == 200
        counts.append(len(queries))
    expected = 4 + own_queries + (2 if connection.vendor == "postgresql" else 0)
    assert counts == [expected, expected]
    with django_assert_num_queries(expected):
        response = client.get(url, params)
        if response.streaming:
            b"".join(response.streaming_content)


# --- Found in review: no names of other tenants' users, no 500 from hostile cursors -----------


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


def forged_cursor(payload):
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "payload",
    [
        "[" * 5000,
        '["-claimed_at", "2026-01-01T00:00:00+00:00", 1, "0001-01-01T00:00:00+00:00"]',
        '["-claimed_at", "0001-01-01T00:00:00+05:00", 1, "2026-01-01T00:00:00+00:00"]',
        '["claimed_at", "9999-12-31T23:00:00-05:00", 1, "2026-01-01T00:00:00+00:00"]',
    ],
)
def test_hostile_cursors_are_400_naming_the_cursor(api_client, team, payload):
    response = as_user(api_client, team["admin"]).get(HANDOFFS, {"cursor": forged_cursor(payload)})
    assert response.status_code == 400
    assert "cursor" in response.json()
