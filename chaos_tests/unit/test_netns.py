"""The local backend's namespaces: which subnet a run takes, and what it is called."""

import ipaddress

import pytest

from chaoslab.errors import LabError
from chaoslab.local.netns import NodeNetwork, free_subnet

ROUTES = """\
default via 172.17.0.1 dev eth0
10.213.0.0/24 dev clh4834c6 proto kernel scope link src 10.213.0.1
172.17.0.0/16 dev eth0 proto kernel scope link src 172.17.0.2
local 10.213.1.1 dev clhab12cd table local proto kernel scope host src 10.213.1.1
broadcast 10.213.2.255 dev clhffffff table local proto kernel scope link src 10.213.2.1
local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1
"""


def test_a_run_takes_the_first_24_that_no_route_claims():
    # .0 is another run's gateway route, .1 and .2 are claimed by local and broadcast entries.
    assert free_subnet(ROUTES) == ipaddress.ip_network("10.213.3.0/24")


def test_the_default_route_claims_nothing():
    assert free_subnet("default via 10.0.0.1 dev eth0\n") == ipaddress.ip_network("10.213.0.0/24")


def test_a_host_whose_routes_cover_the_space_is_told_so():
    with pytest.raises(LabError, match="a free /24 in 10.213.0.0/16"):
        free_subnet("10.0.0.0/8 dev eth0 proto kernel scope link src 10.1.2.3\n")


def test_servers_get_addresses_in_order_after_the_gateway():
    network = NodeNetwork("run-1-abcdef", ipaddress.ip_network("10.213.7.0/24"), ("db-primary", "db-replica"))
    assert network.gateway == "10.213.7.1"
    assert [network.address(s) for s in network.servers] == ["10.213.7.10", "10.213.7.11"]
    assert network.namespace("db-replica") == "chaoslab-run-1-abcdef-db-replica"
    assert network.enter("db-primary") == ["--net=/run/netns/chaoslab-run-1-abcdef-db-primary"]
