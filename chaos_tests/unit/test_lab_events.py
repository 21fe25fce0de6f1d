"""A failover done by hand is measured from the lab's events as part F measures its own."""

from __future__ import annotations

import time

from chaoslab.checkers import ACTION, FAULT, NEW_PRIMARY
from chaoslab.history import History
from chaoslab.lab_events import LabEvent, mark_failover


def _marks(history: History) -> dict[str, float]:
    return {event.name: event.time for event in history.events}


def test_the_brief_s_failover_marks_the_fault_the_promotion_s_start_and_the_switch_s_end():
    now = time.time()
    events = [LabEvent("fault", "kill redis", now + 1, now + 1.1),          # not a failover
              LabEvent("fault", "kill db-primary", now + 2, now + 2.1),
              LabEvent("promote", "db-replica (pg_ctl)", now + 4, now + 4.2),
              LabEvent("switch", "db-replica (reload)", now + 5, now + 5.3)]
    history = History()
    fault = mark_failover(history, events, since=now)
    assert fault == events[1]
    marks = _marks(history)
    assert abs((marks[ACTION] - marks[FAULT]) - 1.9) < 0.01
    assert abs((marks[NEW_PRIMARY] - marks[ACTION]) - 1.3) < 0.01


def test_with_the_role_aware_config_the_promotion_alone_gives_the_new_primary():
    now = time.time()
    events = [LabEvent("fault", "stop db-primary", now + 1, now + 1.5),
              LabEvent("promote", "db-replica (sql)", now + 3, now + 3.2)]
    history = History()
    mark_failover(history, events, since=now)
    marks = _marks(history)
    assert abs((marks[NEW_PRIMARY] - marks[FAULT]) - 1.7) < 0.01


def test_events_before_the_load_and_faults_elsewhere_give_no_failover():
    now = time.time()
    events = [LabEvent("fault", "kill db-primary", now - 10, now - 9.9),
              LabEvent("fault", "pause redis", now + 1, now + 1.1),
              LabEvent("fault", "start db-primary", now + 2, now + 2.5)]
    history = History()
    assert mark_failover(history, events, since=now) is None
    assert history.events == []


def test_a_fault_on_patronis_leader_is_a_failover_whatever_the_node_s_name():
    now = time.time()
    events = [LabEvent("fault", "kill pg-2", now + 1, now + 1.1),                     # a standby
              LabEvent("fault", "kill pg-1", now + 2, now + 2.1, on_primary=True)]   # the leader
    history = History()
    assert mark_failover(history, events, since=now) == events[1]
    assert set(_marks(history)) == {FAULT}, "Patroni promotes by itself: no operator's action to mark"
