"""Open sessions stay in their channel-layer groups: one renewal loop per worker.

core/consumers.py explains why (GroupKeeper). The template's tests prove it
end to end against Redis with a five-second group_expiry; here, in-process,
with the in-memory channel layer of the test settings.
"""

import asyncio
import time

import pytest
from channels.layers import InMemoryChannelLayer

from core.consumers import GROUP_KEEPER, GroupKeeper
from tests.test_counter import mounted_session

pytestmark = pytest.mark.asyncio


class Session:
    """What GroupKeeper reads of a consumer: its layer, channel name and groups."""

    def __init__(self, layer, number):
        self.channel_layer = layer
        self.channel_name = f"specific.test!{number}"
        self.groups = [f"view-{number}", "presence"]

    def channel_groups(self):
        return self.groups


async def joined(sessions):
    for session in sessions:
        for group in session.groups:
            await session.channel_layer.group_add(group, session.channel_name)


async def test_one_loop_renews_every_open_session_until_none_is_left():
    layer = InMemoryChannelLayer()
    keeper = GroupKeeper()
    sessions = [Session(layer, number) for number in range(3)]
    await joined(sessions)
    started = time.time()
    for session in sessions:
        keeper.add(session, 0.1)
    loop = keeper.task
    await asyncio.sleep(0.35)
    assert keeper.task is loop, "a second renewal loop was started"
    for session in sessions:
        for group in session.groups:
            renewed = layer.groups[group][session.channel_name]
            assert renewed > started, (group, session.channel_name)

    # A session that has closed is not joined again (djust has left its groups).
    keeper.discard(sessions[0])
    left = layer.groups["presence"][sessions[0].channel_name]
    await asyncio.sleep(0.25)
    assert layer.groups["presence"][sessions[0].channel_name] == left
    assert layer.groups["presence"][sessions[1].channel_name] > left

    # With no session left, the loop ends at its next round.
    for session in sessions[1:]:
        keeper.discard(session)
    await asyncio.wait_for(loop, 1)


@pytest.mark.django_db(transaction=True)
async def test_the_demo_sessions_are_kept_in_their_groups_while_open():
    first, second = await mounted_session(), await mounted_session()
    try:
        kept = [session for session in GROUP_KEEPER.sessions if session.channel_groups()]
        assert len(kept) >= 2, "the open sessions are not renewed"
        for session in kept:
            # The demo's LiveView group and its presence group.
            assert len(session.channel_groups()) == 2, session.channel_groups()
        assert not GROUP_KEEPER.task.done()
    finally:
        await first.disconnect()
        await second.disconnect()
    assert not [session for session in GROUP_KEEPER.sessions if session.channel_groups()]
