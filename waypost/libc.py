"""The C library's functions that Python 3.11 does not wrap (setns, recvmmsg/sendmmsg, prctl)."""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def libc() -> ctypes.CDLL:
    """The process's own C library (symbols of the running program; no lookup, no subprocess)."""
    return ctypes.CDLL(None, use_errno=True)
