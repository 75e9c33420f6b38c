"""Django's Redis cache backend, counting hits and misses for /metrics.

django-prometheus ships the same wrapper (NativeRedisCache), but its module
imports django-redis, a second Redis client this project does not use. This
one records django-prometheus' own cache metrics (django_cache_get_total,
django_cache_get_hits_total, django_cache_get_misses_total,
django_cache_get_fail_total) and changes nothing else: a value stored as None
still reads back as None, where django-prometheus' version returns the default.
"""

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django_prometheus.cache.metrics import (
    django_cache_get_fail_total,
    django_cache_get_total,
    django_cache_hits_total,
    django_cache_misses_total,
)

MISSING = object()


class RedisCache(DjangoRedisCache):
    """RedisCache whose get() is counted: hit, miss or failure (Redis unreachable)."""

    def get(self, key, default=None, version=None):
        django_cache_get_total.labels(backend="redis").inc()
        try:
            value = super().get(key, MISSING, version)
        except Exception:
            django_cache_get_fail_total.labels(backend="redis").inc()
            raise
        if value is MISSING:
            django_cache_misses_total.labels(backend="redis").inc()
            return default
        django_cache_hits_total.labels(backend="redis").inc()
        return value
