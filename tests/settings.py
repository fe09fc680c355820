"""Test settings: the project's, plus database aliases exercising the read router.

``replica`` is a test mirror of ``default`` (Django opens a second connection to
the same test database), standing in for a streaming replica. On PostgreSQL,
``cross_account`` is another mirror that takes the cross-account role
(``assume_role``), as a host's cross-account alias would connect as it. Tests that
read through them say so with ``django_db(databases=[...])``; the faces use the
default connection unless a test names the alias in ``CROSS_ACCOUNT_DB_ALIAS``
(a mirror sees only committed rows). The cache is local memory, whatever the environment.
"""

from config.settings import *  # noqa: F401,F403
from config.settings import DATABASES, FLOWPILOT_ANALYTICS

from flowpilot_analytics.db_roles import DEFAULT_CROSS_ACCOUNT_ROLE

DATABASES["replica"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["cross_account"] = {
        **DATABASES["default"],
        "OPTIONS": {**DATABASES["default"].get("OPTIONS", {}), "assume_role": DEFAULT_CROSS_ACCOUNT_ROLE},
        "TEST": {"MIRROR": "default"},
    }
FLOWPILOT_ANALYTICS["CROSS_ACCOUNT_DB_ALIAS"] = None
# Every test clears the cache (throttle counts): never a Redis that REDIS_URL names, which may be
# shared. The tests of the Redis cache (test_throttle.py) use it under a key prefix of their own.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
