"""The consumer's database-connection cleanup runs only while a connection is open.

core/db_connections.py explains why. Here, in-process with the test settings:
the demo's events cause no cleanup at all, and once the consumer's thread has
queried the database every message is cleaned up again, as channels does.
tests/test_event_database.py in the template proves the rest against a real
PostgreSQL restart.
"""

import inspect
import textwrap

import pytest
from asgiref.sync import sync_to_async
from channels.consumer import AsyncConsumer
from django.contrib.sessions.models import Session

from core.consumers import StrictLiveViewConsumer
from core.db_connections import SHARED_THREAD
from tests.test_counter import mounted_session, reply_to

# channels 4.3's AsyncConsumer.dispatch, which StrictLiveViewConsumer.dispatch
# copies with its cleanup call replaced.
CHANNELS_DISPATCH = '''
async def dispatch(self, message):
    """
    Works out what to do with a message.
    """
    handler = getattr(self, get_handler_name(message), None)
    if handler:
        await aclose_old_connections()
        await handler(message)
    else:
        raise ValueError("No handler for message type %s" % message["type"])
'''


def test_channels_dispatch_is_the_one_the_consumer_replaces():
    """If this fails, channels changed the method core/consumers.py overrides.

    Read the new AsyncConsumer.dispatch (channels/consumer.py), carry its
    changes into StrictLiveViewConsumer.dispatch, then update the text above.
    """
    current = textwrap.dedent(inspect.getsource(AsyncConsumer.dispatch))
    assert current.strip() == CHANNELS_DISPATCH.strip()
    # Nor may djust's consumer (or channels' WebSocket ones) start defining a
    # dispatch of its own, which the override would silently skip.
    mro = StrictLiveViewConsumer.__mro__
    between = mro[1 : mro.index(AsyncConsumer)]
    assert [cls for cls in between if "dispatch" in vars(cls)] == []


async def click(communicator, ref):
    event = {"type": "event", "event": "increment", "params": {}, "ref": ref}
    await communicator.send_json_to(event)
    return await reply_to(communicator, ref)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_cleanup_runs_only_while_the_consumers_thread_holds_a_connection():
    communicator = await mounted_session()
    try:
        assert not SHARED_THREAD.maybe_open, (
            "a database connection is open in asgiref's shared thread before any query here"
        )

        # The demo's clicks touch no database: no cleanup, no thread hop for it.
        before = SHARED_THREAD.cleanups
        for ref in (1, 2, 3):
            assert (await click(communicator, ref))["type"] == "patch"
        assert SHARED_THREAD.cleanups == before

        # A query in the thread where handlers' ORM calls run (a `def` handler,
        # or the async ORM) opens a connection there: from now on every
        # message is cleaned up first, closing it when too old or broken.
        await sync_to_async(Session.objects.count)()
        assert SHARED_THREAD.maybe_open
        before = SHARED_THREAD.cleanups
        for ref in (4, 5):
            assert (await click(communicator, ref))["type"] == "patch"
        assert SHARED_THREAD.cleanups >= before + 2
    finally:
        await communicator.disconnect()
