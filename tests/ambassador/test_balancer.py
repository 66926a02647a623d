"""Balancer policies, passive ejection with a growing cool-down, and draining (no sockets needed)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from waypost.ambassador.balancer import DRAINING, EJECTED, UP, Balancer, Endpoint


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Conn:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


EPS = [("10.0.0.1", 1), ("10.0.0.2", 2), ("10.0.0.3", 3)]


def test_round_robin_spreads_evenly():
    b = Balancer("round-robin")
    b.set_backends(EPS)
    counts = Counter(b.pick().port for _ in range(300))
    assert counts == {1: 100, 2: 100, 3: 100}


def test_least_conn_picks_the_idlest():
    b = Balancer("least-conn")
    b.set_backends(EPS)
    busy = [b.backends[("10.0.0.1", 1)], b.backends[("10.0.0.2", 2)]]
    for backend in busy:
        for _ in range(3):
            b.connected(backend, Conn())
    assert {b.pick().port for _ in range(20)} == {3}


def test_p2c_prefers_less_loaded_and_never_the_busiest_of_two():
    b = Balancer("p2c", rng=random.Random(7))
    b.set_backends(EPS)
    loaded = b.backends[("10.0.0.1", 1)]
    for _ in range(10):
        b.connected(loaded, Conn())
    counts = Counter(b.pick().port for _ in range(600))
    # with three backends, the loaded one loses every pair it is in
    assert counts[1] == 0 and counts[2] > 200 and counts[3] > 200


def test_random_reaches_every_backend():
    b = Balancer("random", rng=random.Random(1))
    b.set_backends(EPS)
    assert {b.pick().port for _ in range(200)} == {1, 2, 3}


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="round-robin"):
        Balancer("fastest")


def test_ejection_after_consecutive_failures_and_growing_cooldown():
    clock = Clock()
    b = Balancer("round-robin", eject_after=2, eject_base=1.0, eject_max=8.0, clock=clock)
    b.set_backends(EPS[:2])
    bad = b.backends[("10.0.0.1", 1)]
    b.connect_failed(bad)
    assert bad.state(clock.now) == UP  # one failure is not enough
    b.connect_failed(bad)
    assert bad.state(clock.now) == EJECTED
    assert {b.pick().port for _ in range(10)} == {2}  # ejected: no new connections
    cooldowns = []
    for _ in range(5):
        cooldowns.append(bad.eject_until - clock.now)
        clock.now = bad.eject_until + 0.001  # cool-down over: it is tried again, and fails again
        assert bad.state(clock.now) == UP
        b.connect_failed(bad)
        b.connect_failed(bad)
    assert cooldowns == [1.0, 2.0, 4.0, 8.0, 8.0]
    clock.now = bad.eject_until + 0.001
    b.connected(bad, Conn())  # a success resets the schedule
    assert bad.ejections == 0 and bad.state(clock.now) == UP


def _eject(b: Balancer, backend) -> None:
    for _ in range(b.eject_after):
        b.connect_failed(backend)
    assert backend.state(b._clock()) == EJECTED


def test_ejected_backend_that_leaves_and_returns_stays_ejected():
    clock = Clock()
    b = Balancer("round-robin", eject_after=2, eject_base=4.0, eject_max=30.0, clock=clock)
    b.set_backends(EPS[:2])
    _eject(b, b.backends[("10.0.0.1", 1)])
    b.set_backends(EPS[1:2])  # gone from the catalog with no open connections: retired at once
    clock.now += 1.0
    b.set_backends(EPS[:2])  # back (a flapping check) before its 4 s cool-down ended
    back = b.backends[("10.0.0.1", 1)]
    assert back.state(clock.now) == EJECTED
    assert {b.pick().port for _ in range(10)} == {2}
    assert [x["state"] for x in b.snapshot()] == [EJECTED, UP]


def test_returning_backend_keeps_its_doubling_schedule_until_eject_max_after_the_cooldown():
    clock = Clock()
    b = Balancer("round-robin", eject_after=1, eject_base=1.0, eject_max=10.0, clock=clock)
    b.set_backends(EPS[:2])
    _eject(b, b.backends[("10.0.0.1", 1)])  # 1 s cool-down
    b.set_backends(EPS[1:2])
    clock.now += 5.0  # cool-down over, within eject_max of its end
    b.set_backends(EPS[:2])
    back = b.backends[("10.0.0.1", 1)]
    assert back.state(clock.now) == UP
    _eject(b, back)
    assert back.eject_until - clock.now == 2.0  # ejected again without a success: doubled

    b.set_backends(EPS[1:2])
    clock.now = back.eject_until + 10.5  # more than eject_max after the cool-down ended: forgotten
    b.set_backends(EPS[:2])
    fresh = b.backends[("10.0.0.1", 1)]
    _eject(b, fresh)
    assert fresh.eject_until - clock.now == 1.0


def test_remembered_ejections_are_bounded_under_address_churn():
    from waypost.ambassador import balancer as balancer_module

    clock = Clock()
    b = Balancer("round-robin", eject_after=1, eject_max=1.0, clock=clock)
    for i in range(balancer_module.PENALTY_MEMORY + 50):
        b.set_backends([("10.1.0.1", 1000 + i)])  # the previous one is retired, ejected
        _eject(b, b.backends[("10.1.0.1", 1000 + i)])
    assert len(b._penalties) <= balancer_module.PENALTY_MEMORY


def test_all_ejected_still_picks_the_soonest_back():
    clock = Clock()
    b = Balancer("p2c", eject_after=1, clock=clock)
    b.set_backends(EPS[:2])
    first, second = b.backends.values()
    b.connect_failed(first)
    clock.now += 0.5
    b.connect_failed(second)
    assert b.pick() is first
    assert b.pick(exclude={first}) is second
    assert b.pick(exclude={first, second}) is None


def test_removed_backend_drains_then_is_forgotten():
    b = Balancer("round-robin")
    b.set_backends(EPS)
    leaving = b.backends[("10.0.0.1", 1)]
    conn = Conn()
    b.connected(leaving, conn)
    b.set_backends(EPS[1:])
    assert leaving.state() == DRAINING
    assert all(b.pick().port != 1 for _ in range(20))
    assert [x["state"] for x in b.snapshot()] == [UP, UP, DRAINING]
    b.released(leaving, conn)
    assert b.draining == {} and len(b.all_backends()) == 2
    assert not conn.aborted


def test_backend_that_returns_while_draining_is_up_again():
    b = Balancer("round-robin")
    b.set_backends(EPS)
    leaving = b.backends[("10.0.0.1", 1)]
    b.connected(leaving, Conn())
    b.set_backends(EPS[1:])
    b.set_backends([Endpoint("10.0.0.1", 1, "id-1"), *EPS[1:]])
    assert b.backends[("10.0.0.1", 1)] is leaving
    assert leaving.state() == UP and leaving.active == 1 and leaving.endpoint.id == "id-1"
