"""
The same host, served as an RLS-bound database role (not from startproject).

``scripts/host_smoke.py`` uses it for its PostgreSQL steps as the app role: the
app's cross-account pages (admin summary, report) then read through a connection
of their own, as the role made by ``manage.py grant_cross_account_role``,
HOST_CROSS_ACCOUNT_DATABASE_URL=postgres://flowpilot_cross_account@host:port/name
(the same database as HOST_DATABASE_URL). README, "Security".
"""

import os
from urllib.parse import unquote, urlsplit

from .settings import *  # noqa: F401,F403
from .settings import DATABASES

_url = urlsplit(os.environ['HOST_CROSS_ACCOUNT_DATABASE_URL'])
DATABASES['cross_account'] = {
    **DATABASES['default'],
    'USER': unquote(_url.username or ''),
    'PASSWORD': unquote(_url.password or ''),
    'TEST': {'MIRROR': 'default'},
}
DATABASE_ROUTERS = ['flowpilot_analytics.routers.AnalyticsReadRouter']
FLOWPILOT_ANALYTICS = {'CROSS_ACCOUNT_DB_ALIAS': 'cross_account'}
