"""One Redis connection pool per process for Django's cache.

Django keeps one cache object per async context, and under ASGI every request
runs in a context of its own: each request built a new RedisCache with a new
connection pool, and so opened a new Redis connection, which stayed open until
the garbage collector found the pool. Measured at about 75 page views a second
on two workers: 300 to 500 idle connections on Redis, each holding buffers that
count against its maxmemory but that no eviction can free, and a TCP connect
plus AUTH on every request. A flood of page views could also reach Redis'
maxclients (10,000). Sharing the pool keeps a handful of connections per worker.
"""

import threading

from redis import ConnectionPool

_shared = {}
_lock = threading.Lock()


class ProcessConnectionPool(ConnectionPool):
    """ConnectionPool.from_url() returning the same pool for the same arguments.

    redis-py's pool is thread-safe and resets itself in a forked child, so one
    per process serves every request and thread.
    """

    @classmethod
    def from_url(cls, url, **kwargs):
        key = (url, repr(sorted(kwargs.items())))
        with _lock:
            pool = _shared.get(key)
            if pool is None:
                pool = _shared[key] = super().from_url(url, **kwargs)
        return pool
