"""Listening sockets created inside another process's network namespace.

A socket belongs to the namespace it was created in, so one host process can serve every
container: a dedicated thread ``setns()``-es into ``/proc/<pid>/ns/net``, creates and binds the
socket, switches back, and hands the socket to the event loop. Only that thread ever changes
namespace (``setns`` affects the calling thread alone). Python 3.11 has no ``os.setns``, so libc's
is called through ctypes.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import socket
from concurrent.futures import ThreadPoolExecutor

from waypost.libc import libc as c_library
from waypost.listen import tcp_listener

CLONE_NEWNET = 0x40000000


class NamespaceError(OSError):
    """Entering a namespace failed; the message says which privilege or process is missing."""


def _libc_setns() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    fn = c_library().setns
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_setns = _libc_setns()


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace `fd` refers to."""
    if _setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def check_privileges(pid: int | None = None) -> str | None:
    """Return why namespace entry can't work here (or None when it can).

    Tries a real round trip into the namespace of `pid` (default: our own), which needs
    CAP_SYS_ADMIN, and, for another pid, the host PID namespace to see it. The round trip moves
    the calling thread: run it where namespaces may change, i.e. :meth:`NamespaceBinder.check`.
    """
    target = f"/proc/{pid or os.getpid()}/ns/net"
    try:
        fd = os.open(target, os.O_RDONLY)
    except FileNotFoundError:
        return f"{target} does not exist: run with the host PID namespace (compose `pid: host`)"
    except PermissionError:
        return f"cannot open {target}: run as root with CAP_SYS_ADMIN (compose `cap_add: [SYS_ADMIN]` or `privileged: true`)"
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        setns(fd)
        setns(own)
    except OSError as exc:
        return (f"setns into {target} failed ({exc.strerror}): grant CAP_SYS_ADMIN "
                "(compose `cap_add: [SYS_ADMIN]` or `privileged: true`)")
    finally:
        os.close(fd)
        os.close(own)
    return None


class NamespaceBinder:
    """Creates listening TCP sockets inside other processes' network namespaces.

    All namespace switching happens in one dedicated worker thread that returns to the host
    namespace after every call, so the event loop's thread never leaves it.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="waypost-netns")
        self._home = os.open("/proc/self/ns/net", os.O_RDONLY)

    def close(self) -> None:
        """Stop the worker thread and release the handle on our own namespace.

        Does not block: the handle is closed by the thread itself, after the calls already queued,
        and the thread ends right after.
        """
        if self._home < 0:
            return
        home, self._home = self._home, -1
        self._pool.submit(os.close, home)
        self._pool.shutdown(wait=False)

    async def check(self, pid: int | None = None) -> str | None:
        """:func:`check_privileges` on this binder's thread: why namespace entry can't work, or None."""
        return await self.run(check_privileges, pid)

    def _listen_in(self, pid: int, host: str, port: int, backlog: int) -> socket.socket:
        path = f"/proc/{pid}/ns/net"
        try:
            target = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise NamespaceError(errno.ESRCH, f"process {pid} is gone ({path} missing)") from None
        try:
            try:
                setns(target)
            except OSError as exc:
                raise NamespaceError(exc.errno, f"cannot enter {path}: {exc.strerror} (needs CAP_SYS_ADMIN)") from None
            try:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                return tcp_listener(family, (host, port), backlog=backlog)
            finally:
                setns(self._home)  # always come home; failing here is fatal for the thread
        finally:
            os.close(target)

    async def listen(self, pid: int, host: str, port: int, backlog: int = 1024) -> socket.socket:
        """A non-blocking listening socket bound to host:port inside pid's network namespace."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._listen_in, pid, host, port, backlog)

    def _run_in(self, pid: int, fn, *args):  # type: ignore[no-untyped-def]
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            setns(target)
            try:
                return fn(*args)
            finally:
                setns(self._home)
        finally:
            os.close(target)

    async def run(self, fn, *args):  # type: ignore[no-untyped-def]
        """Run a small blocking function on this binder's thread, in the host namespace (the
        injector's hosts-file reads and writes: the one thread that does container plumbing)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    async def run_in(self, pid: int, fn, *args):  # type: ignore[no-untyped-def]
        """Run a small blocking function inside pid's network namespace (for tests and probes)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run_in, pid, fn, *args)
