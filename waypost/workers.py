"""`--workers N`: extra processes serving the same listening ports through SO_REUSEPORT.

Used by `waypost dns` and `waypost ambassador`. The first process serves as usual; each extra worker
is the same command re-run with the same settings, one process, and the shared-port switch. Workers
die with their parent (PR_SET_PDEATHSIG) and are stopped with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterable

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


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_prctl = c_library().prctl  # looked up here: the child must not load anything between fork and exec


class Workers:
    """Extra worker processes: ``await start(argv, n)`` spawns n, ``await stop()`` ends them."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, argv: list[str], count: int) -> None:
        """Spawn `count` processes running `argv`."""
        for _ in range(count):
            self.procs.append(await asyncio.create_subprocess_exec(*argv, preexec_fn=_die_with_parent))

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
