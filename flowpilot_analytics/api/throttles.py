from rest_framework.throttling import ScopedRateThrottle

from ..conf import app_settings


class AnalyticsRateThrottle(ScopedRateThrottle):
    """Per-user rate of the analytics endpoints: ``FLOWPILOT_ANALYTICS["THROTTLE_RATE"]``, read per request.

    The rate is the app's own setting (default ``120/minute``), so it applies in a
    host whose ``REST_FRAMEWORK`` names no ``analytics`` scope; ``None`` lifts it.
    The counts stay keyed by the view's ``throttle_scope`` in the default cache.
    """

    def get_rate(self):
        return app_settings.THROTTLE_RATE
