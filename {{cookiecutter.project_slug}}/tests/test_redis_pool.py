"""The cache's Redis pool is shared by every request of a process (config/redis_pool.py)."""

import asyncio

from config.redis_pool import ProcessConnectionPool

URL = "redis://:pw@127.0.0.1:6390/0"


def test_same_arguments_same_pool_even_from_other_contexts():
    first = ProcessConnectionPool.from_url(URL, socket_timeout=2.0)

    async def from_another_context():
        return ProcessConnectionPool.from_url(URL, socket_timeout=2.0)

    # Each ASGI request runs in a context of its own, like this task.
    assert asyncio.run(from_another_context()) is first


def test_other_arguments_other_pool():
    first = ProcessConnectionPool.from_url(URL, socket_timeout=2.0)
    assert ProcessConnectionPool.from_url(URL.replace("/0", "/1"), socket_timeout=2.0) is not first
    assert ProcessConnectionPool.from_url(URL, socket_timeout=3.0) is not first
