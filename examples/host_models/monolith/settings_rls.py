"""
The same host, served as an RLS-bound database role (not from startproject).

``scripts/host_smoke.py`` uses it for its PostgreSQL steps as the app role. The
pages reading every organisation (the admin summary, the report) read through a
connection of their own, as ``monolith_reporting``: the role the monolith's own
policies let read every organisation (``support/migrations/0002_row_level_security.py``),
HOST_CROSS_ACCOUNT_DATABASE_URL=postgres://monolith_reporting@host:port/name
(the same database as HOST_DATABASE_URL).
"""

import os
from urllib.parse import unquote, urlsplit

from .settings import *  # noqa: F401,F403
from .settings import DATABASES, FLOWPILOT_ANALYTICS

_url = urlsplit(os.environ['HOST_CROSS_ACCOUNT_DATABASE_URL'])
DATABASES['cross_account'] = {
    **DATABASES['default'],
    'USER': unquote(_url.username or ''),
    'PASSWORD': unquote(_url.password or ''),
    'TEST': {'MIRROR': 'default'},
}
DATABASE_ROUTERS = ['flowpilot_analytics.routers.AnalyticsReadRouter']
FLOWPILOT_ANALYTICS = {**FLOWPILOT_ANALYTICS, 'CROSS_ACCOUNT_DB_ALIAS': 'cross_account'}
