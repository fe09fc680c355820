"""The throttle's count: atomic, shared by every worker through Redis, exact over any span of one period.

The issue it fixes: "120/minute" let 203 requests through with two gunicorn workers,
each counting in its own memory, and DRF's read-then-write history lets two
concurrent requests both take the last place even in a shared cache. The tests
marked ``redis`` run on the Redis that ``REDIS_URL`` names (CI starts one); without
it they are skipped with the reason printed. The load test measures the same on a
2-worker gunicorn (``make loadtest-throttle``, docs/load-test.md).
"""

import json
import logging
import os
import runpy
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.exceptions import ImproperlyConfigured

from flowpilot_analytics.api.throttles import AnalyticsRateThrottle
from flowpilot_analytics.models import Membership

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_FILE = ROOT / "config" / "settings.py"
URL = "/api/v1/analytics/flowpilot/escalations"
REDIS_URL = os.environ.get("REDIS_URL")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="needs Redis: set REDIS_URL (CI does)")


def fake_request(user_id=1):
    return SimpleNamespace(user=SimpleNamespace(pk=user_id, is_authenticated=True), META={})


VIEW = SimpleNamespace(throttle_scope="analytics")


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(AnalyticsRateThrottle, "timer", clock)
    return clock


@pytest.fixture
def rate(settings):
    def set_rate(value):
        settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "THROTTLE_RATE": value}

    return set_rate


def allow(user_id=1):
    throttle = AnalyticsRateThrottle()
    return throttle.allow_request(fake_request(user_id), VIEW), throttle.wait()


@pytest.fixture
def redis_cache(settings):
    """The default cache on Redis (REDIS_URL), under a key prefix of this test's own, emptied after it."""
    prefix = f"flowpilot-test-{secrets.token_hex(4)}"
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                    "KEY_PREFIX": prefix},
    }
    yield caches["default"]
    client = caches["default"]._cache.get_client(write=True)
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)


# --- The rule, on any cache -------------------------------------------------------------


def test_retry_after_is_when_the_next_request_is_admitted(rate, clock):
    rate("3/minute")
    assert [allow()[0] for _ in range(3)] == [True, True, True]
    refused, retry_after = allow()
    assert refused is False
    # A period, and at most one slot (a sixtieth) more: the count is kept per slot.
    assert 60 <= retry_after <= 61

    clock.now += retry_after - 0.01
    assert allow()[0] is False
    clock.now += 0.01
    assert allow()[0] is True


def test_a_steady_stream_gets_the_rate_and_never_more_in_any_span_of_one_period(rate, clock):
    rate("20/minute")
    admitted = []
    started = clock.now
    while clock.now < started + 300:  # five minutes, ten requests a second
        if allow()[0]:
            admitted.append(clock.now)
        clock.now += 0.1
    busiest = max(sum(1 for other in admitted if at - 60 < other <= at) for at in admitted)
    assert busiest == 20
    # The window is a slot longer than the period: the long-run rate is within 1/61 of the setting.
    assert 0.95 * 20 * 5 <= len(admitted) <= 20 * 5 + 20


def test_refused_requests_do_not_count(rate, clock):
    rate("2/minute")
    assert [allow()[0] for _ in range(10)] == [True, True] + [False] * 8
    clock.now += 61
    assert [allow()[0] for _ in range(3)] == [True, True, False]


def test_each_user_is_counted_apart(rate, clock):
    rate("1/minute")
    assert (allow(1)[0], allow(1)[0], allow(2)[0]) == (True, False, True)


class BarrierCache:
    """The throttle's cache, holding each request at its read until the other has read too.

    Forces the interleaving of two concurrent requests at the last place: DRF's
    history (read, then write) lets both through; a count taken atomically first
    lets one.
    """

    def __init__(self, cache):
        self.cache, self.barrier = cache, threading.Barrier(2, timeout=10)

    def __getattr__(self, name):
        return getattr(self.cache, name)

    def get(self, *args, **kwargs):
        value = self.cache.get(*args, **kwargs)
        self.barrier.wait()
        return value

    def get_many(self, *args, **kwargs):
        value = self.cache.get_many(*args, **kwargs)
        self.barrier.wait()
        return value


def two_at_the_last_place(monkeypatch):
    """Fills the rate but one place, then sends two requests at once; how many got through."""
    for _ in range(4):
        assert allow()[0]
    monkeypatch.setattr(AnalyticsRateThrottle, "cache", BarrierCache(caches["default"]))
    results = []
    threads = [threading.Thread(target=lambda: results.append(allow()[0])) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return sorted(results)


def test_two_concurrent_requests_cannot_both_take_the_last_place(rate, clock, monkeypatch):
    rate("5/minute")
    assert two_at_the_last_place(monkeypatch) == [False, True]


@needs_redis
def test_two_concurrent_requests_cannot_both_take_the_last_place_on_redis(
    rate, clock, monkeypatch, redis_cache
):
    rate("5/minute")
    assert two_at_the_last_place(monkeypatch) == [False, True]


# --- Two processes: the count is shared only through a shared cache ----------------------------

WORKER = """
import json, os, sys, time
from types import SimpleNamespace
import django
django.setup()
from django.test.utils import override_settings
from flowpilot_analytics.api.throttles import AnalyticsRateThrottle

caches, start, attempts = json.loads(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
request = SimpleNamespace(user=SimpleNamespace(pk=1, is_authenticated=True), META={})
view = SimpleNamespace(throttle_scope="analytics")
with override_settings(CACHES=caches, FLOWPILOT_ANALYTICS={"THROTTLE_RATE": "50/minute"}):
    time.sleep(max(0.0, start - time.time()))  # both processes start counting together
    print(sum(AnalyticsRateThrottle().allow_request(request, view) for _ in range(attempts)))
"""


def admitted_by_two_processes(caches_setting, attempts=40):
    """Two processes, 40 requests each, at 50/minute for one user: how many each let through."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    start = time.time() + 2.5
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(caches_setting), str(start), str(attempts)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    counts = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        counts.append(int(out.strip().splitlines()[-1]))
    return counts


@needs_redis
def test_two_processes_sharing_redis_admit_the_rate_once():
    prefix = f"flowpilot-test-{secrets.token_hex(4)}"
    shared = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "KEY_PREFIX": prefix}}
    try:
        counts = admitted_by_two_processes(shared)
    finally:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
    assert sum(counts) == 50, counts


def test_two_processes_with_the_default_cache_each_admit_the_rate():
    """Why a shared cache: Django's default (local memory) is per process."""
    local = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    assert admitted_by_two_processes(local) == [40, 40]


# --- When the cache fails, the API still answers ---------------------------------------


class BrokenCache(BaseCache):
    """A cache whose server is down: every call fails, as the Redis client does then."""

    def __init__(self, location, params):
        super().__init__(params)

    def _fail(self, *args, **kwargs):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")

    get = set = add = incr = decr = delete = get_many = clear = _fail


@pytest.mark.django_db
def test_a_failing_cache_lets_the_request_through_and_logs_it(monkeypatch, api_client, member, caplog):
    monkeypatch.setattr(AnalyticsRateThrottle, "cache", BrokenCache("", {}))
    api_client.force_authenticate(member(Membership.Role.ENGINEER))
    with caplog.at_level(logging.ERROR, logger="flowpilot_analytics.api.throttles"):
        response = api_client.get(URL, {"period": "7d"})
    assert response.status_code == 200
    assert "throttle's cache failed" in caplog.text


# --- The demo project's cache ------------------------------------------------------------


@pytest.fixture
def demo_settings(monkeypatch):
    for name in ("DJANGO_CACHE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)

    def load(**variables):
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        return runpy.run_path(str(SETTINGS_FILE)).get("CACHES")

    return load


def test_the_demo_uses_redis_when_a_url_is_given(demo_settings):
    assert demo_settings() is None, "no URL: Django's default, local memory"
    assert demo_settings(REDIS_URL="redis://127.0.0.1:6379/13")["default"] == {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/13",
        "KEY_PREFIX": "flowpilot_analytics",
    }
    chosen = demo_settings(DJANGO_CACHE_URL="rediss://cache.internal:6380/2")["default"]
    assert chosen["LOCATION"] == "rediss://cache.internal:6380/2", "DJANGO_CACHE_URL wins over REDIS_URL"


@pytest.mark.parametrize("variable", ["DJANGO_CACHE_URL", "REDIS_URL"])
def test_a_cache_url_that_is_not_redis_stops_the_start_naming_the_variable(demo_settings, variable):
    with pytest.raises(ImproperlyConfigured, match=variable):
        demo_settings(**{variable: "memcached://127.0.0.1:11211"})
