"""How `--workers` processes share the CPUs (`--cpu-affinity auto`)."""

from __future__ import annotations

import pytest

from waypost.workers import cpu_shares


@pytest.mark.parametrize(("cpus", "workers", "shares"), [
    ({0, 1}, 2, [{0}, {1}]),
    ({0, 1, 2, 3}, 2, [{0, 1}, {2, 3}]),
    ({0, 1, 2, 3, 4}, 2, [{0, 1, 2}, {3, 4}]),
    ({2, 5, 7, 9}, 2, [{2, 5}, {7, 9}]),  # a cpuset with gaps: its own CPUs, never others
    ({0, 1, 2, 3, 4, 5, 6}, 3, [{0, 1, 2}, {3, 4}, {5, 6}]),
    ({0, 1}, 3, [{0}, {1}, {0}]),  # more workers than CPUs: one CPU each, taken in turn
    ({0, 1, 2, 3}, 1, [{0, 1, 2, 3}]),  # one worker keeps every CPU
    ({3}, 2, [{3}, {3}]),  # one CPU: nothing to share out
])
def test_each_worker_gets_its_own_share_of_the_cpus(cpus, workers, shares):
    assert cpu_shares(cpus, workers) == shares


def test_shares_cover_every_cpu_exactly_once_when_workers_fit():
    for ncpu in range(2, 17):
        for workers in range(2, ncpu + 1):
            shares = cpu_shares(range(ncpu), workers)
            assert len(shares) == workers and all(shares)
            assert sorted(c for s in shares for c in s) == list(range(ncpu))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
