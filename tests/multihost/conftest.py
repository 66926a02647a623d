"""A small LAN of "hosts" on one machine: Linux network namespaces joined by a bridge.

Topology (one per test, every name starts with ``wm<pid hex>n<counter>``)::

    root namespace (this test process, the shared catalog) ─ 10.231.X.1
        │ veth
    switch namespace: bridge br0 ── veth ── host namespaces h1, h2, … 10.231.X.11, .12, …
                                  └─ veth ── client namespace          10.231.X.100

The bridge lives in its own namespace on purpose: the root namespace usually has Docker's
``FORWARD DROP`` policy and ``br_netfilter``, which would drop frames bridged there. Nothing is
routed beyond 10.231.X.0/24; X is a /24 no route in the root namespace uses yet.

Each host runs backends (a tiny TCP server answering ``<host> <peer ip> <line>``) on the same port,
registered in the one catalog with the host's address, as a registrator on each host would.
The client namespace runs a sidecar ``waypost ambassador`` on its own loopback, and the test
dials it from inside that namespace (a socket created there by a thread that ``setns``-es in).
Everything (processes, namespaces, veths) is removed by the fixture's finalizer, and namespaces
left by a killed earlier run (its pid gone) are removed at start.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.tooling import missing, require_tool

BACKEND_PORT = 7379
SUBNET_FIRST = 231  # 10.231.X.0/24
STALE_RE = re.compile(r"^wm([0-9a-f]+)n\d+")

# A backend: answers every connection with "<host> <peer ip> <first line>" and closes it.
BACKEND_SCRIPT = r"""
import asyncio, sys
name, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
async def handle(reader, writer):
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
        peer = writer.get_extra_info("peername")[0]
        writer.write(f"{name} {peer} {line.decode().strip()}\n".encode())
        await writer.drain()
    except Exception:
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, host, port)
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""

_counter = 0


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one iproute2 command; a failure raises with its stderr."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> None:
    """Delete namespaces and root veths a killed earlier run left behind (its pid is gone)."""
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = STALE_RE.match(name)
        if m and not _pid_alive(int(m.group(1), 16)):
            ip("netns", "del", name, check=False)
    for line in ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            ifname = parts[1].strip().split("@")[0]
            m = STALE_RE.match(ifname)
            if m and not _pid_alive(int(m.group(1), 16)):
                ip("link", "del", ifname, check=False)


def free_subnet() -> int:
    """An X for 10.231.X.0/24 that no route in the root namespace touches."""
    used = ip("-4", "route", "show", "table", "all", check=False).stdout
    candidates = [x for x in range(1, 255) if f"10.{SUBNET_FIRST}.{x}." not in used]
    if not candidates:
        raise RuntimeError(f"no free /24 left in 10.{SUBNET_FIRST}.0.0/16")
    return random.choice(candidates)


@dataclass
class NetHost:
    """One namespace on the LAN."""

    name: str  # short name: h1, client, …
    netns: str
    address: str
    index: int

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"


@dataclass
class Lab:
    """The namespaces, links and processes of one test; :meth:`close` removes them all."""

    tag: str
    subnet: int
    log_dir: Path
    hosts: dict[str, NetHost] = field(default_factory=dict)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    _links: int = 0

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the LAN (where the shared catalog listens)."""
        return self.addr(1)

    def addr(self, last: int) -> str:
        return f"10.{SUBNET_FIRST}.{self.subnet}.{last}"

    # ---- topology ----------------------------------------------------------------------------

    def build(self) -> None:
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "set", "lo", "up")
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        root_if = f"{self.tag}r"
        ip("link", "add", root_if, "type", "veth", "peer", "name", "uplink", "netns", self.switch)
        ip("-n", self.switch, "link", "set", "uplink", "master", "br0", "up")
        ip("addr", "add", f"{self.gateway}/24", "dev", root_if)
        ip("link", "set", root_if, "up")

    def add_host(self, name: str, last: int) -> NetHost:
        """A new namespace plugged into the switch at 10.231.X.<last>."""
        self._links += 1
        host = NetHost(name, f"{self.tag}-{name}", self.addr(last), self._links)
        ip("netns", "add", host.netns)
        self.hosts[name] = host
        port = f"port{host.index}"
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        ip("-n", host.netns, "link", "set", "lo", "up")
        ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.netns, "link", "set", "eth0", "up")
        return host

    def unplug(self, name: str) -> None:
        """Cut a host off the LAN (its link goes down: packets to it vanish, connects time out)."""
        ip("-n", self.hosts[name].netns, "link", "set", "eth0", "down")

    # ---- processes ---------------------------------------------------------------------------

    def spawn(self, host: NetHost, argv: list[str], log_name: str) -> subprocess.Popen[str]:
        """Start `argv` inside `host`'s namespace, output to a log file; killed by :meth:`close`."""
        out = open(self.log_dir / log_name, "w")  # noqa: SIM115 - the child owns it
        try:
            proc = subprocess.Popen(["ip", "netns", "exec", host.netns, *argv], stdout=out,
                                    stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def log(self, log_name: str) -> str:
        return (self.log_dir / log_name).read_text(errors="replace")

    def wait_for_log(self, proc: subprocess.Popen[str], log_name: str, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log(log_name):
                return
            if proc.poll() is not None:
                raise AssertionError(f"{log_name} exited ({proc.returncode}):\n{self.log(log_name)}")
            time.sleep(0.05)
        raise AssertionError(f"{log_name} did not print {text!r} within {timeout}s:\n{self.log(log_name)}")

    def start_backend(self, host: NetHost, port: int = BACKEND_PORT) -> subprocess.Popen[str]:
        """A backend on host:port answering with the host's name; returns once it listens."""
        name = f"backend-{host.name}-{port}.log"
        proc = self.spawn(host, [sys.executable, "-c", BACKEND_SCRIPT, host.name, host.address, str(port)], name)
        self.wait_for_log(proc, name, "ready")
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def close(self) -> None:
        """Kill every process, then delete every namespace and the root veth (errors ignored)."""
        for proc in self.procs:
            try:
                self.kill(proc)
            except Exception:  # noqa: BLE001 - keep cleaning
                pass
        for host in self.hosts.values():
            ip("netns", "del", host.netns, check=False)
        ip("netns", "del", self.switch, check=False)
        ip("link", "del", f"{self.tag}r", check=False)  # gone with its peer already, normally


def ambassador_command() -> list[str]:
    """The `waypost ambassador` command line."""
    return [sys.executable, "-m", "waypost", "ambassador"]


class NetnsDialer:
    """Connects to addresses as seen from inside a namespace (e.g. its 127.0.0.1).

    A socket belongs to the namespace it is created in, so one worker thread enters the
    namespace, creates the socket and comes back; the connect itself runs on the event loop.
    """

    def __init__(self, netns_path: str) -> None:
        from waypost.ambassador.netns import setns

        self._setns = setns
        self._path = netns_path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="multihost-netns")

    def _socket(self) -> socket.socket:
        home = os.open("/proc/self/ns/net", os.O_RDONLY)
        target = os.open(self._path, os.O_RDONLY)
        try:
            self._setns(target)
            try:
                return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            finally:
                self._setns(home)
        finally:
            os.close(target)
            os.close(home)

    async def request(self, port: int, line: str = "ping", host: str = "127.0.0.1", timeout: float = 5.0) -> str:
        """Send one line to host:port inside the namespace; the whole answer (until EOF)."""
        loop = asyncio.get_running_loop()
        sock = await loop.run_in_executor(self._pool, self._socket)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (host, port))
                reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        try:
            async with asyncio.timeout(timeout):
                writer.write(line.encode() + b"\n")
                await writer.drain()
                return (await reader.read()).decode()
        finally:
            writer.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _require_netns(tag: str) -> None:
    require_tool("ip", "iproute2")
    if os.geteuid() != 0:
        missing("network namespaces need root", "run the tests as root (or in a container with --privileged)")
    probe = f"{tag}-probe"
    done = ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        missing(f"`ip netns add` is not permitted here ({done.stderr.strip()})",
                "run as root with CAP_SYS_ADMIN and CAP_NET_ADMIN (e.g. docker run --privileged)")
    ip("netns", "del", probe, check=False)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A switch namespace bridged to the root namespace; hosts are added by the test or fixtures."""
    global _counter
    _counter += 1
    tag = f"wm{os.getpid():x}n{_counter}"
    _require_netns(tag)
    remove_stale()
    the_lab = Lab(tag, free_subnet(), tmp_path)
    try:
        the_lab.build()
        yield the_lab
    finally:
        the_lab.close()


@pytest.fixture
async def lan_catalog(lab: Lab) -> AsyncIterator[object]:
    """The one shared catalog: the embedded catalog in this process, on the root namespace's LAN address."""
    from waypost.catalog import CatalogClient
    from waypost.config import CatalogConfig
    from waypost.server.app import CatalogServer

    server = CatalogServer(host=lab.gateway, port=0, node_name="catalog", node_address=lab.gateway)
    await server.start()
    client = CatalogClient(CatalogConfig.from_url(server.url))
    try:
        yield client
    finally:
        await client.close()
        await server.stop()
