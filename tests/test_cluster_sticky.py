"""Sticky sessions across two app hosts (issue 11, requirement 6), on tests/cluster.py's hosts.

The sticky variant's Nginx site keys on the client's address. The client host has
eight addresses (users behind eight NATs); each opens a LiveView session four times
through the balancer. Which host accepted each socket is read from the hosts' own
logs, where bin/serve names the client address of every WebSocket it accepts.
A module of its own, so that tests/test_cluster.py's cluster is gone before this one starts.
"""

import asyncio

import pytest

from tests import netns
from tests.cluster import Cluster, default_prefix, missing_requirements
from tests.cluster_load import Visitors, print_figures

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.xdist_group("cluster")]

STICKY = "py3.11-sticky-nosentry"
RECONNECTS = 4


@pytest.fixture(scope="module")
def sticky_cluster(bake, tmp_path_factory):
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    project = bake(STICKY).sync()
    running = Cluster(project, tmp_path_factory.mktemp("sticky"), prefix=f"{default_prefix()}s").start()
    yield running
    running.close()


def connect_repeatedly(cluster, address):
    """Open and close one LiveView session RECONNECTS times from this client address."""
    visitors = Visitors(**cluster.users(source=address), count=1)

    async def scenario():
        for _ in range(RECONNECTS):
            session = await visitors._session().open(timeout=30)
            await session.close()

    return asyncio.run(scenario())


def test_sticky_sessions_keep_each_address_on_one_host_and_spread_addresses(sticky_cluster):
    client = sticky_cluster.network["client"]
    addresses = [client.front, *client.extra_front]
    for address in addresses:
        netns.run_in(client.netns, connect_repeatedly, sticky_cluster, address, timeout=120)
    placed = {address: sticky_cluster.sockets_accepted(address) for address in addresses}
    hosts_of = {a: sorted(role for role, count in counts.items() if count) for a, counts in placed.items()}
    spread = {role: [a for a, roles in hosts_of.items() if roles == [role]] for role in ("app1", "app2")}
    print_figures(
        f"requirement 6: sticky sessions ({STICKY})",
        {
            f"sockets per host, {RECONNECTS} connections from each address": placed,
            "addresses on app1": len(spread["app1"]),
            "addresses on app2": len(spread["app2"]),
        },
    )
    moved = {address: counts for address, counts in placed.items() if len(hosts_of[address]) != 1}
    assert not moved, f"users were moved between app hosts across their reconnects: {moved}"
    assert spread["app1"] and spread["app2"], (
        f"all {len(addresses)} client addresses landed on one app host: {hosts_of}"
    )
