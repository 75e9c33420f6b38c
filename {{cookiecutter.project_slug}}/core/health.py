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
"""

import asyncio
import dataclasses
import datetime
import uuid

from channels.layers import get_channel_layer
from django.http import JsonResponse
from djust import RustLiveView
from djust.state_backends import get_backend
from health_check import checks
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView

from core import metrics, warmup

# Per-probe deadline; django-health-check adds one second of grace, so the
# whole answer arrives in about three seconds at worst.
PROBE_TIMEOUT = datetime.timedelta(seconds=2)


@dataclasses.dataclass
class Database(checks.Database):
    """SELECT 1 on a fresh connection (connect_timeout is set in prod.py)."""

    timeout: datetime.timedelta = PROBE_TIMEOUT


@dataclasses.dataclass
class Cache(checks.Cache):
    """A key set in the cache reads back."""

    timeout: datetime.timedelta = PROBE_TIMEOUT


@dataclasses.dataclass
class StateBackend(HealthCheck):
    """A tiny LiveView state written to djust's state backend reads back intact.

    djust's own ``get_backend().health_check()`` writes one fixed key shared by
    every caller, so two probes at the same moment (two load balancers, or two
    workers) can delete each other's key and report a healthy Redis as down.
    Each probe here uses a key of its own, with a short TTL in case it is
    interrupted before the delete.
    """

    timeout: datetime.timedelta = PROBE_TIMEOUT

    def run(self):
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
            raise ServiceUnavailable(
                f"state backend unreachable: {type(error).__name__}"
            ) from error
        if stored is None or stored[0].get_state().get("token") != token:
            raise ServiceUnavailable("state backend did not return what was written")


@dataclasses.dataclass
class ChannelLayer(HealthCheck):
    """A message sent through the channel layer comes back.

    The probe uses an ordinary channel of its own, not a process-local
    ``specific.…!`` one: those share one Redis queue per worker with the
    LiveView consumers, and a consumer that disconnects at the wrong moment can
    take the probe's message with it (channels_redis drops a message popped by
    a cancelled receive), which reads as a three-second timeout.
    """

    timeout: datetime.timedelta = PROBE_TIMEOUT

    async def run(self):
        layer = get_channel_layer()
        channel = f"health-check.{uuid.uuid4().hex}"
        try:
            await layer.send(channel, {"type": "health.ping"})
            message = await layer.receive(channel)
        except Exception as error:
            raise ServiceUnavailable(
                f"channel layer unreachable: {type(error).__name__}"
            ) from error
        if message.get("type") != "health.ping":
            raise ServiceUnavailable("channel layer returned another message")


class ReadinessView(HealthCheckView):
    """Always JSON (no Accept header needed): 200 when every probe passes, else 503."""

    checks = (
        ("database", Database),
        ("cache", Cache),
        ("state_backend", StateBackend),
        ("channel_layer", ChannelLayer),
    )

    def get_checks(self):
        return [check(timeout=PROBE_TIMEOUT) for _, check in self.checks]

    async def get(self, request, *args, **kwargs):
        warming = warmup.not_ready_reason()
        if warming is not None:
            # Not ready yet, and not broken: no dependency is probed (nor
            # counted as failed) until the warm-up is over, a second or so.
            return JsonResponse({"status": "warming up", "detail": warming}, status=503)
        with self.get_executor() as executor:
            results = await asyncio.gather(
                *(check.get_result(executor) for check in self.get_checks())
            )
        report = {
            name: "ok" if result.error is None else str(result.error)
            for (name, _), result in zip(self.checks, results, strict=True)
        }
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


readiness = ReadinessView.as_view()
