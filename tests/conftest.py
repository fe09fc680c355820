from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from django.core.cache import cache
from django.db import connection
from django.utils import timezone as django_timezone
from rest_framework.test import APIClient

from flowpilot_analytics.db_roles import (
    DEFAULT_APP_ROLE,
    DEFAULT_CROSS_ACCOUNT_ROLE,
    AppRoleError,
    ensure_app_role,
    ensure_cross_account_role,
)
from flowpilot_analytics.factories import AccountFactory, MembershipFactory, UserFactory
from flowpilot_analytics.models import Membership
from tests.builders import claimed_handoff

# The demo project's own tables its serving role needs beside the app's (logins, sessions,
# tokens, the admin's permissions and log), granted as .ci/run and scripts/load_test.py do.
DEMO_PROJECT_APPS = ("auth", "contenttypes", "sessions", "admin", "authtoken")

# A fixed "now" keeps window edges exact; every test that builds data passes it on.
NOW = datetime(2026, 6, 15, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    """Throttle counts live in the cache; user ids repeat across tests."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def now():
    return NOW


@pytest.fixture
def account(db):
    return AccountFactory(name="Acme MSP", slug="acme")


@pytest.fixture
def other_account(db):
    return AccountFactory(name="Globex IT", slug="globex")


@pytest.fixture
def three_accounts(account, other_account):
    """Claims relative to the real clock, for the faces that read it (admin widget, report command).

    acme: in the week 30 s, 4m 05.12s and a claim without action, plus 7200 s 40 days ago;
    globex: one 3 s claim 10 days ago; zeta: no data at all.
    """
    now = django_timezone.now()
    claimed_handoff(account, claimed_at=now - timedelta(days=1), lag=30)
    claimed_handoff(account, claimed_at=now - timedelta(days=2), lag=245.12)
    claimed_handoff(account, claimed_at=now - timedelta(days=3))
    claimed_handoff(account, claimed_at=now - timedelta(days=40), lag=7200)
    claimed_handoff(other_account, claimed_at=now - timedelta(days=10), lag=3)
    empty = AccountFactory(name="Zeta Empty", slug="zeta")
    return account, other_account, empty


@pytest.fixture
def member(account):
    """Returns a function making a user with ``role`` in ``account`` (default: the fixture's)."""

    def make(role=Membership.Role.ENGINEER, *, account=account, user=None):
        membership = MembershipFactory(account=account, role=role, user=user or UserFactory())
        return membership.user

    return make


@pytest.fixture
def two_tenants(account, other_account, member):
    """Both accounts with data of the last hours and an engineer each; B's figures differ from A's."""
    now = django_timezone.now()
    claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=10)
    claimed_handoff(account, claimed_at=now - timedelta(hours=2), lag=20)
    for hours in range(1, 4):
        claimed_handoff(other_account, claimed_at=now - timedelta(hours=hours), lag=500)
    member(Membership.Role.ENGINEER, account=account)
    member(Membership.Role.ENGINEER, account=other_account)
    return account, other_account


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def engineer_client(api_client, member):
    api_client.force_authenticate(member(Membership.Role.ENGINEER))
    return api_client


# Names a CSV must survive: a comma and quotes, a newline, non-ASCII, a formula.
TRICKY_NAMES = {
    "alice": ("Zoë", 'Ångström, "Ali"'),
    "bob": ("Bob\nline two", "Ø"),
    "mallory": ("=HYPERLINK(\"http://x\")", "+1"),
}


@pytest.fixture
def team(account, other_account, member):
    """acme: alice 3 lags + 1 waiting, bob 2 lags, a deleted claimer 1 lag, mallory 1; globex: one of its own."""
    now = django_timezone.now()
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


@pytest.fixture
def frozen_clock(monkeypatch):
    """One "now" for the JSON and the CSV a test compares."""
    instant = django_timezone.now()
    monkeypatch.setattr(django_timezone, "now", lambda: instant)
    return instant


@pytest.fixture(scope="session", autouse=True)
def _app_role_in_test_database(django_db_setup, django_db_blocker):
    """Sets up the RLS-bound app role and the cross-account role in the test database, once, first.

    Fails, never skips, when it cannot: on PostgreSQL the RLS tests must run
    (CI relies on it). Grants made inside a test's transaction would be rolled
    back with it, hence a session fixture used by every test.
    """
    if connection.vendor != "postgresql":
        return None
    with django_db_blocker.unblock():
        assert not connection.in_atomic_block
        try:
            ensure_app_role(DEFAULT_APP_ROLE, extra_apps=DEMO_PROJECT_APPS)
            ensure_cross_account_role(DEFAULT_CROSS_ACCOUNT_ROLE)
        except AppRoleError as exc:
            pytest.fail(f"the RLS tests need the app role and the cross-account role and cannot set them up: "
                        f"{exc}")
    return DEFAULT_APP_ROLE


@pytest.fixture
def app_role(_app_role_in_test_database):
    """The role the app serves as (PostgreSQL only): not owner, not superuser, no BYPASSRLS."""
    if _app_role_in_test_database is None:
        pytest.skip("Row-Level Security needs PostgreSQL; on SQLite only the app-level filter applies")
    return _app_role_in_test_database


def set_local_role(role):
    """The rest of the test's transaction runs as ``role``, bound by Row-Level Security (checked)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {role}")
        cursor.execute("SELECT current_user, row_security_active('ai_session')")
        assert cursor.fetchone() == (role, True), f"RLS must apply to {role}"


@pytest.fixture
def become_app_role(app_role, db):
    """Returns a function switching the test's transaction to the app role (ends with the test).

    A superuser bypasses RLS even with FORCE, so every RLS assertion runs after
    this. Build the data first: as the app role, writes need a bound account.
    """
    return lambda: set_local_role(app_role)


@pytest.fixture
def cross_account_role(app_role):
    """The role the cross-account faces read through (PostgreSQL only): named in the cross-account policy."""
    return DEFAULT_CROSS_ACCOUNT_ROLE


@pytest.fixture
def become_cross_account_role(cross_account_role, db):
    """Returns a function switching the test's transaction to the cross-account role (ends with the test)."""
    return lambda: set_local_role(cross_account_role)


@pytest.fixture
def become_serving_role(_app_role_in_test_database, db):
    """As ``become_app_role`` on PostgreSQL; nothing on SQLite, which has no roles (the test runs on both)."""

    def become():
        if _app_role_in_test_database is not None:
            set_local_role(_app_role_in_test_database)

    return become


# Examples Schemathesis tried, per role (tests/test_api_schema.py); printed at the end.
SCHEMATHESIS_EXAMPLES = Counter()


@pytest.fixture
def schemathesis_examples():
    return SCHEMATHESIS_EXAMPLES


def pytest_terminal_summary(terminalreporter):
    if SCHEMATHESIS_EXAMPLES:
        counts = ", ".join(f"{role} {count}" for role, count in sorted(SCHEMATHESIS_EXAMPLES.items()))
        terminalreporter.write_line(
            f"Schemathesis tried {sum(SCHEMATHESIS_EXAMPLES.values())} examples against the schema "
            f"({connection.vendor}): {counts}"
        )


def pytest_report_header(config):
    return f"database vendor: {connection.vendor}"


def pytest_collection_modifyitems(config, items):
    if connection.vendor == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL; CI always does)")
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)
