"""Readings from /proc shared by tests and benchmarks: resident memory, open descriptors, threads,
context switches."""

from __future__ import annotations

import os


def _kb_field(path: str, name: str) -> int:
    with open(path) as fh:
        for line in fh:
            if line.startswith(name):
                return int(line.split()[1])
    raise RuntimeError(f"no {name.rstrip(':')} in {path}")


def rss_kb(pid: int) -> int:
    """Resident set size of `pid` in KiB (VmRSS)."""
    return _kb_field(f"/proc/{pid}/status", "VmRSS:")


def pss_kb(pid: int) -> int:
    """Proportional set size of `pid` in KiB: shared pages split between the processes mapping them."""
    return _kb_field(f"/proc/{pid}/smaps_rollup", "Pss:")


def fd_split(pid: int) -> tuple[int, int]:
    """(unix-socket descriptors, all others) of `pid`: in waypost the unix sockets are the Docker API
    connections plus asyncio's self-pipe pair."""
    with open("/proc/net/unix") as fh:
        unix = {line.split()[6] for line in fh.readlines()[1:] if len(line.split()) >= 7}
    n_unix = n_other = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in unix:
            n_unix += 1
        else:
            n_other += 1
    return n_unix, n_other


def threads(pid: int) -> int:
    """Number of threads of `pid`."""
    return _kb_field(f"/proc/{pid}/status", "Threads:")


def context_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of all threads of `pid` so far."""
    voluntary = involuntary = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        status = f"/proc/{pid}/task/{tid}/status"
        voluntary += _kb_field(status, "voluntary_ctxt_switches:")
        involuntary += _kb_field(status, "nonvoluntary_ctxt_switches:")
    return voluntary, involuntary
