"""Test settings: the project's, plus a second database alias to exercise the read router.

``replica`` is a test mirror of ``default`` (Django opens a second connection to
the same test database), standing in for a streaming replica. Tests that read
through it say so with ``django_db(databases=[...])``.
"""

from config.settings import *  # noqa: F401,F403
from config.settings import DATABASES

DATABASES["replica"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}
