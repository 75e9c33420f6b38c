"""Load for tests/cluster.py: page loads and LiveView visitors from the client host.

Both run in threads that entered the client's network namespace (tests/netns.py),
so every socket they open starts from the client's own address and reaches the
service only through the load balancer, as a user's browser would. Every loop
is bounded: by a stop flag the test sets, and by a hard limit of its own.
"""

import asyncio
import contextlib
import http.client
import json
import ssl
import statistics
import threading
import time
from dataclasses import dataclass, field

from tests import netns
from tests.stack import LiveSession

INSECURE_TLS = ssl.create_default_context()
INSECURE_TLS.check_hostname = False
INSECURE_TLS.verify_mode = ssl.CERT_NONE


@dataclass
class Request:
    at: float  # time.monotonic() when sent
    path: str
    status: int | None  # None: no HTTP answer at all
    error: str = ""
    seconds: float = 0.0


class PageLoads:
    """Threads that GET each path in turn through the balancer, over kept-alive HTTPS."""

    def __init__(self, namespace, balancer, domain, source, paths=("/", "/health/"), threads=4, pause=0.02):
        self.namespace, self.balancer, self.domain, self.source = namespace, balancer, domain, source
        self.paths, self.threads, self.pause = paths, threads, pause
        self.requests = []
        self._stop = threading.Event()
        self._workers = []

    def start(self, limit_seconds=300):
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, args=(limit_seconds,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def _connection(self):
        return http.client.HTTPSConnection(
            self.balancer, 443, timeout=30, context=INSECURE_TLS, source_address=(self.source, 0)
        )

    def _run(self, limit_seconds):
        netns.enter(self.namespace)
        connection = self._connection()
        deadline = time.monotonic() + limit_seconds
        turn = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            path = self.paths[turn % len(self.paths)]
            turn += 1
            started = time.monotonic()
            try:
                connection.request("GET", path, headers={"Host": self.domain})
                response = connection.getresponse()
                response.read()
                self.requests.append(Request(started, path, response.status, "", time.monotonic() - started))
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
                    connection = self._connection()
            except (OSError, http.client.HTTPException) as error:
                self.requests.append(Request(started, path, None, repr(error), time.monotonic() - started))
                connection.close()
                connection = self._connection()
            time.sleep(self.pause)
        connection.close()

    def stop(self, timeout=60):
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout)

    def failures(self, since=None, until=None):
        return [
            r
            for r in self.requests
            if r.status != 200 and (since is None or r.at >= since) and (until is None or r.at <= until)
        ]

    def between(self, since, until):
        return [r for r in self.requests if since <= r.at <= until]


@dataclass
class Visitor:
    """One user with the counter page open: clicks every `interval` s, reconnects when dropped."""

    number: int
    closes: list = field(default_factory=list)  # monotonic time each socket closed
    reconnects: list = field(default_factory=list)  # seconds from a close to the next mount
    sent: int = 0
    answered: int = 0
    in_flight_at_close: int = 0  # events whose socket the server closed before answering
    unanswered: list = field(default_factory=list)  # (ref, why) on sockets that stayed open
    failed_attempts: int = 0
    answer_seconds: list = field(default_factory=list)  # click to its answer
    open_seconds: list = field(default_factory=list)  # connect, TLS and mount of each reconnect
    session: LiveSession | None = None
    last_mount: float = 0.0


class Visitors:
    """N LiveView sessions through the balancer, in one asyncio loop inside the client host."""

    def __init__(
        self, namespace, balancer, domain, source, count=50, interval=0.5, reply_timeout=5, sources=None
    ):
        self.namespace, self.balancer, self.domain, self.source = namespace, balancer, domain, source
        # Client addresses the visitors are spread over, as users behind different
        # NATs (Nginx paces WebSocket handshakes per address).
        self.sources = sources or [source]
        self.count, self.interval, self.reply_timeout = count, interval, reply_timeout
        self.visitors = [Visitor(n) for n in range(count)]
        self._stop = threading.Event()
        self._thread = None
        self.error = None

    @property
    def url(self):
        return f"wss://{self.domain}/ws/live/"

    @property
    def origin(self):
        return f"https://{self.domain}"

    def _session(self, visitor=None):
        source = self.sources[visitor.number % len(self.sources)] if visitor else self.source
        return LiveSession(
            self.url, self.origin, host=self.balancer, port=443,
            server_hostname=self.domain, local_addr=(source, 0),
        )  # fmt: skip

    def start(self, limit_seconds=300):
        ready = threading.Event()

        def run():
            try:
                netns.enter(self.namespace)
                asyncio.run(self._main(ready, limit_seconds))
            except BaseException as error:  # reported by stop()
                self.error = error
                ready.set()

        self._thread = threading.Thread(target=run, daemon=True, name="visitors")
        self._thread.start()
        if not ready.wait(120):
            raise TimeoutError("the visitors did not all mount within 120 s")
        if self.error:
            raise self.error
        return self

    async def _main(self, ready, limit_seconds):
        # Open in batches of ten: a crowd arriving, not one burst.
        mounted = 0
        for first in range(0, self.count, 10):
            batch = self.visitors[first : first + 10]
            sessions = await asyncio.gather(*(self._session(v).open(timeout=30) for v in batch))
            for visitor, session in zip(batch, sessions, strict=True):
                visitor.session, visitor.last_mount = session, time.monotonic()
            mounted += len(batch)
        ready.set()
        deadline = time.monotonic() + limit_seconds
        await asyncio.gather(*(self._visit(visitor, deadline) for visitor in self.visitors))

    async def _read(self, session, replies):
        """Read every message of one socket; hand answers to their clicks. Returns when it closes."""
        import websockets

        try:
            async for raw in session.socket:
                # Pushes (other users' totals) arrive unsolicited: only answers carry a ref.
                waiting = replies.pop(json.loads(raw).get("ref"), None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(time.monotonic())
        except websockets.ConnectionClosed:
            pass
        closed_at = time.monotonic()
        for waiting in replies.values():
            if not waiting.done():
                waiting.set_exception(ConnectionResetError("socket closed before the answer"))
        return closed_at

    async def _visit(self, visitor, deadline):
        from websockets.protocol import State

        ref = visitor.number * 1_000_000
        replies, reader = {}, None
        # People do not click in step: each visitor starts at its own point of the interval.
        await asyncio.sleep(self.interval * visitor.number / self.count)
        while not self._stop.is_set() and time.monotonic() < deadline:
            if visitor.session is None:
                await self._reconnect(visitor, deadline)
                continue
            if reader is None:
                replies = {}
                reader = asyncio.ensure_future(self._read(visitor.session, replies))
            # A socket the server has closed is not clicked on (the reader is about to see it).
            if not reader.done() and visitor.session.socket.state is State.OPEN:
                ref += 1
                visitor.sent += 1
                answer = replies[ref] = asyncio.get_running_loop().create_future()
                clicked = time.monotonic()
                try:
                    await visitor.session.socket.send(
                        json.dumps({"type": "event", "event": "increment", "params": {}, "ref": ref})
                    )
                    answered_at = await asyncio.wait_for(answer, self.reply_timeout)
                    visitor.answer_seconds.append(answered_at - clicked)
                    visitor.answered += 1
                except TimeoutError:
                    visitor.unanswered.append((ref, f"no answer within {self.reply_timeout} s"))
                except Exception:  # the socket closed before the answer came
                    visitor.in_flight_at_close += 1
            # Between clicks, a close is noticed the moment the reader sees it.
            await asyncio.wait({reader}, timeout=self.interval)
            if reader.done():
                # Reconnect times count from the socket's close, not from the next click.
                visitor.closes.append(reader.result())
                visitor.session, reader = None, None
        if visitor.session is not None:
            with contextlib.suppress(Exception):
                await visitor.session.close()
        if reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader, 10)

    async def _reconnect(self, visitor, deadline):
        """As djust's client does: try again at once, then back off (0.1 s doubling, 1 s at most)."""
        delay = 0.1
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                attempt = time.monotonic()
                session = await self._session(visitor).open(timeout=10)
                visitor.open_seconds.append(time.monotonic() - attempt)
            except Exception:  # refused, 502, closed during mount: try again
                visitor.failed_attempts += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            visitor.session, visitor.last_mount = session, time.monotonic()
            visitor.reconnects.append(visitor.last_mount - visitor.closes[-1])
            return

    def stop(self, timeout=60):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
        if self.error:
            raise self.error

    # --- figures ------------------------------------------------------------------------

    def reconnect_times(self):
        return [seconds for visitor in self.visitors for seconds in visitor.reconnects]

    def summary(self):
        times = self.reconnect_times()
        answers = [s for v in self.visitors for s in v.answer_seconds]
        opens = [s for v in self.visitors for s in v.open_seconds]
        return {
            "sessions": self.count,
            "socket closes": sum(len(v.closes) for v in self.visitors),
            "reconnects": len(times),
            "reconnect max s": round(max(times), 3) if times else None,
            "reconnect median s": round(statistics.median(times), 3) if times else None,
            "events sent": sum(v.sent for v in self.visitors),
            "events answered": sum(v.answered for v in self.visitors),
            "events in flight when the server closed the socket": sum(
                v.in_flight_at_close for v in self.visitors
            ),
            "events unanswered on an open socket": sum(len(v.unanswered) for v in self.visitors),
            "failed reconnect attempts": sum(v.failed_attempts for v in self.visitors),
            "click to answer median s": round(statistics.median(answers), 3) if answers else None,
            "click to answer max s": round(max(answers), 3) if answers else None,
            "reconnect: connect+TLS+mount median s": round(statistics.median(opens), 3) if opens else None,
            "reconnect: connect+TLS+mount max s": round(max(opens), 3) if opens else None,
        }

    def not_back(self):
        """Visitors whose socket is closed at the end (never reconnected)."""
        return [v.number for v in self.visitors if v.session is None]


# Figure blocks printed by the running test; tests/conftest.py moves them into its report,
# so they reach the terminal summary from pytest-xdist workers too.
FIGURES = []


def print_figures(title, values):
    """Print one test's figures as one block, and keep it for the terminal summary."""
    lines = [f"[cluster] {title}", *(f"[cluster]   {name}: {value}" for name, value in values.items())]
    block = "\n".join(lines)
    print(f"\n{block}")
    FIGURES.append(block)
