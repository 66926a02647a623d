"""`--workers N`: extra processes serving the same listening ports through SO_REUSEPORT.

Used by `waypost dns` and `waypost ambassador`. The first process serves as usual; each extra worker
is the same command re-run with the same settings, one process, and the shared-port switch. Workers
die with their parent (PR_SET_PDEATHSIG) and are stopped with it. Each worker may be bound to its own
share of the CPUs (:func:`cpu_shares`), as HAProxy's ``cpu-map`` and nginx's ``worker_cpu_affinity``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterable, Sequence

from waypost.config import ConfigError
from waypost.libc import libc as c_library

log = logging.getLogger("waypost")

MAX_WORKERS = 64
COMMON_VALUES = ("catalog", "catalog_token", "catalog_ca_file", "log_level", "log_format")


def check_workers(workers: int) -> None:
    """ConfigError unless 1 <= workers <= MAX_WORKERS."""
    if workers < 1 or workers > MAX_WORKERS:
        raise ConfigError(f"--workers {workers}: use 1 to {MAX_WORKERS}")


def worker_argv(command: str, args: argparse.Namespace, values: Iterable[str] = (), lists: Iterable[str] = (),
                switches: Iterable[str] = ()) -> list[str]:
    """The command line of one extra worker: `waypost COMMAND` with the given settings copied from `args`.

    `values` are single-valued flags, `lists` repeatable ones, `switches` store_true flags (all named
    by their argparse dest); the catalog and logging flags are always copied.
    """
    argv = [sys.executable, "-m", "waypost", command, "--workers", "1", "--reuse-port"]
    for dest in (*values, *COMMON_VALUES):
        value = getattr(args, dest, None)
        if value is not None:
            argv += ["--" + dest.replace("_", "-"), str(value)]
    for dest in lists:
        for value in getattr(args, dest, None) or []:
            argv += ["--" + dest.replace("_", "-"), str(value)]
    for dest in switches:
        if getattr(args, dest, False):
            argv.append("--" + dest.replace("_", "-"))
    return argv


def cpu_shares(cpus: Iterable[int], workers: int) -> list[set[int]]:
    """Worker i's CPUs: `cpus` cut into `workers` contiguous shares, or one CPU each (taken in turn)
    when the workers outnumber them. One worker, or one CPU, keeps them all."""
    ordered = sorted(cpus)
    if workers <= 1 or len(ordered) <= 1:
        return [set(ordered) for _ in range(workers)]
    if workers >= len(ordered):
        return [{ordered[i % len(ordered)]} for i in range(workers)]
    size, extra = divmod(len(ordered), workers)
    shares, start = [], 0
    for i in range(workers):
        end = start + size + (1 if i < extra else 0)
        shares.append(set(ordered[start:end]))
        start = end
    return shares


def allowed_cpus() -> set[int]:
    """The CPUs this process may run on (its cpuset in a container)."""
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):  # not Linux
        return set()


def bind_process(cpus: set[int]) -> bool:
    """Bind every thread of this process to `cpus`; False (and a warning) when the kernel refuses."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    try:
        for tid in tids:
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setaffinity(tid, cpus)
    except (AttributeError, OSError) as exc:
        log.warning("--cpu-affinity auto: cannot bind to CPUs %s (%s); running unbound (use --cpu-affinity off "
                    "to skip this)", format_cpus(cpus), exc)
        return False
    return True


def format_cpus(cpus: Iterable[int]) -> str:
    """CPU numbers as a comma-separated list."""
    return ",".join(str(c) for c in sorted(cpus))


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _child_setup(cpus: set[int] | None):  # type: ignore[no-untyped-def]
    """The function the child runs between fork and exec: die with the parent, keep to `cpus`."""
    def setup() -> None:
        _die_with_parent()
        if cpus:
            with contextlib.suppress(Exception):  # an exception here would fail the spawn
                os.sched_setaffinity(0, cpus)  # kept across exec
    return setup


_prctl = c_library().prctl  # looked up here: the child must not load anything between fork and exec


class Workers:
    """Extra worker processes: ``await start(argv, n)`` spawns n, ``await stop()`` ends them."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, argv: list[str], count: int, cpus: Sequence[set[int]] = ()) -> None:
        """Spawn `count` processes running `argv`; the i-th bound to `cpus[i]` when given."""
        for i in range(count):
            share = cpus[i] if i < len(cpus) else None
            self.procs.append(await asyncio.create_subprocess_exec(*argv, preexec_fn=_child_setup(share)))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM every worker and wait (up to `timeout` each) for it to exit."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.procs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), timeout)
        self.procs.clear()
