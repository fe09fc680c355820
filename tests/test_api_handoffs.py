"""GET .../escalations/handoffs: the drill-down, its keyset pages and its query counts (core suite)."""

import base64
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from flowpilot_analytics.access import Role
from flowpilot_analytics.api.pagination import Cursor
from flowpilot_analytics.factories import UserFactory
from flowpilot_analytics.stats import percentile
from tests.builders import BY_ENGINEER, HANDOFFS, URL, as_user, claimed_handoff
from tests.model_sets import MODELS

pytestmark = [pytest.mark.django_db, pytest.mark.core]


def test_the_rows_agree_with_the_summary(api_client, team):
    client = as_user(api_client, team["admin"])
    body = client.get(HANDOFFS, {"period": "30d", "page_size": 500}).json()
    summary = client.get(URL, {"period": "30d"}).json()
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
        "handoff_id",
        "session_id",
        "claimed_at",
        "claimed_by_id",
        "claimed_by_name",
        "first_action_at",
        "seconds_to_first_action",
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


@pytest.mark.parametrize(
    "ordering", ["-seconds_to_first_action", "seconds_to_first_action", "claimed_at", "-claimed_at"]
)
def test_pages_neither_repeat_nor_skip_a_handoff_when_handoffs_arrive_between_fetches(
    api_client, account, member, ordering
):
    admin = member(Role.ADMIN)
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
    client = as_user(api_client, member(Role.ADMIN))
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
        ({"ordering": "seconds_to_first_action", "ordering ": "x"}, "ordering "),
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
    assert response.status_code == 400
    assert field in response.json()
    assert response["Content-Type"].startswith("application/json")


def test_a_cursor_of_another_ordering_is_refused(api_client, team):
    client = as_user(api_client, team["admin"])
    cursor = client.get(HANDOFFS, {"page_size": 2}).json()["next_cursor"]
    response = client.get(HANDOFFS, {"page_size": 2, "cursor": cursor, "ordering": "seconds_to_first_action"})
    assert response.status_code == 400
    assert "ordering=-claimed_at" in response.json()["cursor"][0]


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


# The request's savepoint, its rollback and release, the access policy's roles (the
# memberships) and the account, then: the grouped figures and the claimers' names
# (by-engineer, 2), or the page and its claimers' names (handoffs, 2). On PostgreSQL two
# more: binding the user, then the account (RLS).
# The CSV export reads its rows after the request, in a transaction of its own: its savepoint,
# the rows (one statement, fetched in chunks from a server-side cursor on PostgreSQL), their
# claimers' names (one query per chunk: one here), the rollback and release; on PostgreSQL
# its two bindings too. Main's export was 4 statements: the claimers' names were joined to the
# rows; they are read from the user model in use now (issue 12), hence 5.
EXPORT_QUERIES = 5 + (2 if connection.vendor == "postgresql" else 0)


@pytest.mark.parametrize(
    "url, params, own_queries",
    [
        (BY_ENGINEER, {}, 2),
        (HANDOFFS, {"page_size": 50}, 2),
        (HANDOFFS, {"page_size": 50, "ordering": "-seconds_to_first_action"}, 2),
        (HANDOFFS, {"format": "csv"}, EXPORT_QUERIES),
    ],
)
def test_the_query_count_does_not_grow_with_handoffs_or_engineers(
    api_client, member, django_assert_num_queries, url, params, own_queries
):
    counts = []
    for n_handoffs, n_claimers in ((10, 3), (200, 40)):
        account = MODELS.account()
        client = as_user(api_client, member(Role.ADMIN, account=account))
        build(account, n_handoffs, n_claimers)
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url, params)
            if response.streaming:
                b"".join(response.streaming_content)
        assert response.status_code == 200
        counts.append(len(queries))
    expected = 5 + own_queries + (2 if connection.vendor == "postgresql" else 0)
    assert counts == [expected, expected]
    with django_assert_num_queries(expected):
        response = client.get(url, params)
        if response.streaming:
            b"".join(response.streaming_content)


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


# --- Signed cursors ---------------------------------------------------------------------


def first_cursor(client, **params):
    body = client.get(HANDOFFS, {"page_size": 2, **params}).json()
    assert body["next_cursor"], "the fixture has more than one page"
    return body["next_cursor"]


def test_a_well_formed_unsigned_cursor_is_refused(api_client, team):
    """The cursor format of earlier releases: any client could write one, moving the window at will."""
    client = as_user(api_client, team["admin"])
    forged = forged_cursor('["-claimed_at", "2026-06-01T00:00:00+00:00", 1, "2030-01-01T00:00:00+00:00"]')
    response = client.get(HANDOFFS, {"cursor": forged})
    assert response.status_code == 400
    assert "cursor" in response.json()


def test_any_change_to_a_cursor_is_refused(api_client, team, settings):
    # One request per character of the cursor: no throttle.
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "THROTTLE_RATE": None}
    client = as_user(api_client, team["admin"])
    cursor = first_cursor(client)
    assert client.get(HANDOFFS, {"page_size": 2, "cursor": cursor}).status_code == 200
    for index, character in enumerate(cursor):
        tampered = cursor[:index] + ("B" if character == "A" else "A") + cursor[index + 1:]
        response = client.get(HANDOFFS, {"page_size": 2, "cursor": tampered})
        assert response.status_code == 400, (index, tampered)
        assert list(response.json()) == ["cursor"]


def test_a_cursor_is_bound_to_its_account(api_client, team, account, other_account, member):
    client = as_user(api_client, team["admin"])
    cursor = first_cursor(client)
    # Now an admin of the other account too, where the cursor's position would be valid SQL.
    member(Role.ADMIN, account=other_account, user=team["admin"])
    own = client.get(HANDOFFS, {"page_size": 2, "cursor": cursor, "account": account.pk})
    other = client.get(HANDOFFS, {"page_size": 2, "cursor": cursor, "account": other_account.pk})
    assert own.status_code == 200
    assert other.status_code == 400 and "cursor" in other.json()


def test_a_cursor_is_bound_to_its_endpoint():
    cursor = Cursor(ordering="-claimed_at", value=timezone.now(), handoff_id=7, now=timezone.now())
    token = cursor.encode(salt="flowpilot_analytics.cursor:one:1")
    assert Cursor.decode(token, salt="flowpilot_analytics.cursor:one:1") == cursor
    with pytest.raises(ValueError):
        Cursor.decode(token, salt="flowpilot_analytics.cursor:two:1")
    with pytest.raises(ValueError):
        Cursor.decode(token, salt="flowpilot_analytics.cursor:one:2")


def test_a_cursor_signed_with_another_key_is_refused(api_client, team, settings):
    client = as_user(api_client, team["admin"])
    cursor = first_cursor(client)
    signed_with = settings.SECRET_KEY
    settings.SECRET_KEY = "another-secret-key-" + "x" * 40
    response = client.get(HANDOFFS, {"page_size": 2, "cursor": cursor})
    assert response.status_code == 400 and "cursor" in response.json()
    # A key being rotated out (SECRET_KEY_FALLBACKS) still reads the cursors it signed.
    settings.SECRET_KEY_FALLBACKS = [signed_with]
    assert client.get(HANDOFFS, {"page_size": 2, "cursor": cursor}).status_code == 200
