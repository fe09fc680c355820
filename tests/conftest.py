from datetime import datetime, timezone

import pytest
from django.core.cache import cache
from django.db import connection
from rest_framework.test import APIClient

from flowpilot_analytics.factories import AccountFactory, MembershipFactory, UserFactory
from flowpilot_analytics.models import Membership

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
def member(account):
    """Returns a function making a user with ``role`` in ``account`` (default: the fixture's)."""

    def make(role=Membership.Role.ENGINEER, *, account=account, user=None):
        membership = MembershipFactory(account=account, role=role, user=user or UserFactory())
        return membership.user

    return make


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def engineer_client(api_client, member):
    api_client.force_authenticate(member(Membership.Role.ENGINEER))
    return api_client


def pytest_report_header(config):
    return f"database vendor: {connection.vendor}"


def pytest_collection_modifyitems(config, items):
    if connection.vendor == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL; CI always does)")
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)
