"""Database-connection cleanup for WebSocket messages, only while there is a connection to clean.

Django closes a connection that is too old or broken at the start and end of
each HTTP request (close_old_connections on request_started/request_finished).
A WebSocket has no requests, so channels 4.3 calls close_old_connections before
every message a consumer handles (AsyncConsumer.dispatch). It runs in a worker
thread (asgiref's one shared thread, where sync_to_async sends ORM calls), so
every click pays a thread hop, a sizeable share of djust's whole cost per event
(bench/hops.py), even when nothing in that thread ever opened a database
connection. The demo's counter never does.

What the cleanup protects, and how it is kept:

- A connection older than CONN_MAX_AGE is closed before the next message.
- close_old_connections also arms Django's health check (conn_health_checks in
  config/settings/prod.py): the next query first tests the connection and
  reconnects if the database closed it meanwhile (a PostgreSQL restart).

Both act only on a connection that is open. So the cleanup here runs exactly
as channels runs it, once per message, but only while the shared thread may
hold an open connection. Django sends `connection_created` in the thread that
connects, and the cleanup reports, from inside the shared thread, whether a
connection is still open after it ran. From a handler's first query until the
connection is closed (CONN_MAX_AGE later, or found broken), every message is
cleaned and health-checked as before.

Why not "once per CONN_MAX_AGE": the health check is armed by the cleanup
itself, so skipping it for a minute would keep a connection the database had
closed in use for up to a minute, failing every query of every event meanwhile.
"""

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections
from django.db.backends.signals import connection_created


class SharedThreadConnections:
    """Whether asgiref's shared thread may hold an open database connection.

    One per worker process. The flag is written by connection_created (in the
    thread that connects) and by the cleanup (in the shared thread); both are
    single assignments, atomic under the GIL. Consumers run their sync code,
    and so this cleanup, in the process's one shared thread (channels does not
    give a WebSocket a thread of its own), so a connection that thread opens
    is always noted before its next cleanup looks.
    """

    def __init__(self):
        # Unknown until a cleanup has looked: assume one is open.
        self.maybe_open = True
        self.cleanups = 0  # how many cleanups ran (the project's tests read it)

    def connected(self, **kwargs):
        # A connection made in another thread (an HTTP request's) costs the
        # next message one cleanup it did not need, which then finds none.
        self.maybe_open = True

    def close_old_connections(self):
        """Channels' cleanup, in the shared thread; then note whether one stayed open."""
        close_old_connections()
        self.cleanups += 1
        self.maybe_open = any(
            conn.connection is not None for conn in connections.all(initialized_only=True)
        )

    async def aclose_old_connections(self):
        """The per-message cleanup channels does, skipped while no connection is open."""
        if self.maybe_open:
            await sync_to_async(self.close_old_connections)()


SHARED_THREAD = SharedThreadConnections()
connection_created.connect(SHARED_THREAD.connected, dispatch_uid="core.db_connections")
