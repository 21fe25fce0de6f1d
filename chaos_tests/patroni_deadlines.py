"""The deadlines of the Patroni scenarios (test_patroni.py and test_patroni_network.py),
from the lab's Patroni timings."""

from __future__ import annotations

from chaoslab.patroni import LAB_TIMINGS

# A lost leader is replaced within ttl + loop_wait; the rest is promotion, HAProxy's
# checks (about 1 s) and the API's reconnection. Generous, but bounded.
ELECTION_DEADLINE_S = LAB_TIMINGS.leader_loss_bound + 20
WRITE_DEADLINE_S = ELECTION_DEADLINE_S + 15
REJOIN_DEADLINE_S = 90
