import logging

from rest_framework.throttling import ScopedRateThrottle

from ..conf import app_settings

logger = logging.getLogger(__name__)


class AnalyticsRateThrottle(ScopedRateThrottle):
    """Per-user rate of the analytics endpoints: ``FLOWPILOT_ANALYTICS["THROTTLE_RATE"]``, read per request.

    The rate is the app's own setting (default ``120/minute``), so it applies in a
    host whose ``REST_FRAMEWORK`` names no ``analytics`` scope; ``None`` lifts it.

    The count lives in the default cache as one counter per slot of the period
    (a sixtieth of it), which the cache increments atomically: with a cache
    shared by every worker (Redis, Memcached) concurrent requests on several
    processes never both take the last place, as DRF's read-then-write history
    would let them. A request counts itself first and is refused (its count
    withdrawn) when the slots of the last period, plus the current one, then
    hold more than the rate: any span of one period admits at most the rate.
    With a per-process cache (Django's default) each process counts apart.
    When the cache fails, the request is let through and the error logged: the
    statement timeout still bounds what it may cost.
    """

    # The period is cut in this many slots; the window counts one more (the one under way).
    slots = 60

    def get_rate(self):
        return app_settings.THROTTLE_RATE

    def allow_request(self, request, view):
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        try:
            return self.count_request()
        except Exception:
            logger.exception("The analytics throttle's cache failed; request %s let through", self.key)
            return True

    def count_request(self):
        slot_seconds = self.duration / self.slots
        current = int(self.now // slot_seconds)
        window = range(current - self.slots, current + 1)
        keys = [f"{self.key}:{slot}" for slot in window]
        counts = [self.increment(keys[-1], timeout=int(self.duration + 2 * slot_seconds) + 1)]
        earlier = self.cache.get_many(keys[:-1])
        counts = [int(earlier.get(key, 0)) for key in keys[:-1]] + counts
        if sum(counts) <= self.num_requests:
            return True
        # Refused requests do not count, as in DRF's throttles.
        try:
            self.cache.decr(keys[-1])
        except ValueError:
            pass
        counts[-1] -= 1
        # Retry when enough of the oldest slots have left the window for one more request:
        # slot s leaves it when slot s + slots + 1 begins.
        remaining = sum(counts)
        for slot, count in zip(window, counts):
            remaining -= count
            if remaining < self.num_requests:
                break
        self.retry_after = max(0.0, (slot + self.slots + 1) * slot_seconds - self.now)
        return False

    def increment(self, key, *, timeout):
        """The slot's count after adding this request, atomically where the cache's ``incr`` is."""
        try:
            return self.cache.incr(key)
        except ValueError:  # no count yet in this slot (or it has just expired)
            if self.cache.add(key, 1, timeout):
                return 1
            return self.cache.incr(key)

    def wait(self):
        return getattr(self, "retry_after", None)
