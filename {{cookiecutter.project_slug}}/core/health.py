"""Readiness and liveness endpoints for load balancers, orchestrators and humans.

/health/ (readiness) probes every dependency a LiveView needs: the database,
the cache, djust's state backend and the channel layer. It answers 200 when
all are up and 503 otherwise, in JSON, within a few seconds even when a
dependency hangs (each probe has a deadline; they run concurrently).
/health/live/ (liveness) touches nothing: restart the process only if it fails.

A worker the server has just started answers /health/ with 503 "warming up"
until it and its sibling workers have rendered their first page and mounted
their first LiveView (core/warmup.py): a load balancer then sends visitors
only to workers that will not make them wait for that. Liveness answers
meanwhile, so systemd, Docker and orchestrators do not take a worker that is
warming up for a hung one.

The probes are written here rather than taken from django-health-check: its
package imports its DNS and mail checks (dnspython, smtplib) whenever it is
imported, about 50 ms of every worker's start for checks this service never
runs.
"""

import asyncio
import inspect
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

from channels.layers import get_channel_layer
from django.core.cache import cache
from django.db import Error as DatabaseError
from django.db import connection
from django.http import JsonResponse
from djust import RustLiveView
from djust.state_backends import get_backend

from core import metrics, warmup

logger = logging.getLogger(__name__)

# Each probe's own clients give up after this long (connect_timeout and
# REDIS_SOCKET_TIMEOUT in prod.py); the probe is abandoned one second later,
# so the whole answer arrives in about three seconds at worst.
PROBE_TIMEOUT = 2


class Unavailable(Exception):
    """A dependency did not answer as it should; the message says how."""


def database():
    """SELECT 1 on a fresh connection, closed again (connect_timeout is set in prod.py)."""
    try:
        with connection.temporary_connection() as cursor:
            cursor.execute("SELECT 1")
            row = cursor.fetchone()
    except DatabaseError as error:
        raise Unavailable(str(error).rsplit(":")[0]) from error
    if row != (1,):
        raise Unavailable("SELECT 1 did not return 1")


async def cache_round_trip():
    """A key set in the cache reads back (a key of its own per probe, so probes never race)."""
    key = f"health-check:{uuid.uuid4().hex}"
    try:
        await cache.aset(key, "ok", timeout=10)
        value = await cache.aget(key)
        await cache.adelete(key)
    except Exception as error:
        raise Unavailable(f"cache unreachable: {type(error).__name__}") from error
    if value != "ok":
        raise Unavailable("cache did not return what was written")


def state_backend():
    """A tiny LiveView state written to djust's state backend reads back intact.

    djust's own ``get_backend().health_check()`` writes one fixed key shared by
    every caller, so two probes at the same moment (two load balancers, or two
    workers) can delete each other's key and report a healthy Redis as down.
    Each probe here uses a key of its own, with a short TTL in case it is
    interrupted before the delete.
    """
    token = uuid.uuid4().hex
    key = f"health-check:{token}"
    probe = RustLiveView("")
    probe.set_state("token", token)
    try:
        backend = get_backend()
        backend.set(key, probe, ttl=10)
        stored = backend.get(key)  # None on a miss or a read error
        backend.delete(key)
    except Exception as error:
        raise Unavailable(f"state backend unreachable: {type(error).__name__}") from error
    if stored is None or stored[0].get_state().get("token") != token:
        raise Unavailable("state backend did not return what was written")


async def channel_layer():
    """A message sent through the channel layer comes back.

    The probe uses an ordinary channel of its own, not a process-local
    ``specific.…!`` one: those share one Redis queue per worker with the
    LiveView consumers, and a consumer that disconnects at the wrong moment can
    take the probe's message with it (channels_redis drops a message popped by
    a cancelled receive), which reads as a three-second timeout.
    """
    layer = get_channel_layer()
    channel = f"health-check.{uuid.uuid4().hex}"
    try:
        await layer.send(channel, {"type": "health.ping"})
        message = await layer.receive(channel)
    except Exception as error:
        raise Unavailable(f"channel layer unreachable: {type(error).__name__}") from error
    if message.get("type") != "health.ping":
        raise Unavailable("channel layer returned another message")


CHECKS = {
    "database": database,
    "cache": cache_round_trip,
    "state_backend": state_backend,
    "channel_layer": channel_layer,
}


async def outcome(name, check, executor):
    """The check's answer, "ok" or what went wrong, within PROBE_TIMEOUT plus a second of grace."""
    if inspect.iscoroutinefunction(check):
        running = check()
    else:
        running = asyncio.get_running_loop().run_in_executor(executor, check)
    try:
        await asyncio.wait_for(running, PROBE_TIMEOUT + 1)
    except Unavailable as error:
        logger.warning("Readiness check %s failed: %s", name, error)
        return f"unavailable: {error}"
    except TimeoutError:
        logger.warning("Readiness check %s timed out", name)
        return f"unavailable: Timed out after {PROBE_TIMEOUT} seconds"
    except Exception:
        logger.exception("Readiness check %s failed unexpectedly", name)
        return "unknown error"
    return "ok"


async def readiness(request):
    """Always JSON (no Accept header needed): 200 when warm and every probe passes, else 503."""
    warming = warmup.not_ready_reason()
    if warming is not None:
        # Not ready yet, and not broken: no dependency is probed (nor counted
        # as failed) until the warm-up is over, a second or so.
        response = JsonResponse({"status": "warming up", "detail": warming}, status=503)
        # Django logs every 5xx as an ERROR ("Service Unavailable: /health/"),
        # which Sentry would turn into an event per probe on every deploy.
        # Warming up is expected, so that line is left out.
        response._has_been_logged = True
        return response
    # Threads of this request's own for the blocking probes: one that hangs is
    # abandoned at its deadline instead of holding a thread others need.
    executor = ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="health")
    try:
        probes = (outcome(name, check, executor) for name, check in CHECKS.items())
        results = await asyncio.gather(*probes)
    finally:
        executor.shutdown(wait=False)
    report = dict(zip(CHECKS, results, strict=True))
    healthy = all(value == "ok" for value in report.values())
    # For the readiness alert (deploy/monitoring/): failures by check.
    metrics.record_readiness(report)
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": report},
        status=200 if healthy else 503,
    )


async def liveness(request):
    """The process is up and its event loop answers; no dependency is touched."""
    return JsonResponse({"status": "ok"})
