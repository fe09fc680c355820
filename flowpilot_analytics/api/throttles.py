from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle


class AnalyticsRateThrottle(ScopedRateThrottle):
    """Per-user rate of the view's ``throttle_scope``, read from the settings at each request."""

    def get_rate(self):
        # DRF binds THROTTLE_RATES when the module is imported; reading api_settings
        # here follows the settings as they are (and as tests override them).
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
