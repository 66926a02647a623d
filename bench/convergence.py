"""Convergence and memory of injected ambassadors, on the local dockerd.

    python bench/convergence.py            # 20 runs per case, 100 labelled clients
    python bench/convergence.py --quick    # 5 runs per case, 20 clients

**Convergence**: the time from ``docker run`` of a new backend (create + start through the API,
the two calls ``docker run -d`` makes) to the first request answered by that backend through a
client container's injected ambassador. Two cases: *scale-out* (one backend already serves; the
new one is the second, balancing is round-robin, a request is issued every ~5 ms:
``POLL_INTERVAL``) and *from zero* (no backend; a request already waits in the ambassador, held
by ``--wait-for-backends``, and is answered once the new backend is
routable). The "after start" column starts the clock when the ``docker run`` call returned, which
leaves out Docker's own create/start time and is what waypost (registrator → catalog → watch →
balancer) adds. p99 of 20 runs is, by nearest rank, the slowest run.

*How requests are made*: like the app would, from **inside the client container's network
namespace** to the name it dials: the bench reads ``web``'s 127.127.x.y address from the
container's hosts file, a worker thread ``setns``-es into ``/proc/<pid>/ns/net`` to create the
socket (waypost's own ``NamespaceBinder.run_in``), and the connect, ``GET /`` and read run on the
bench's event loop. Same socket path as an app in the container, without ``docker exec``'s 50-100 ms
per request (busybox has no sub-second ``date`` to time from inside). Each backend's ``httpd``
answers with its container's host name, so the bench knows which backend served it.

**Memory**: RSS growth of the ``waypost up`` process while N more labelled clients get attached
and each serves one request, divided by N; versus one sidecar ``waypost ambassador --route …``
process per client: 3 sidecars are started against the same catalog, each serves one request, and
their mean RSS (and PSS, which splits shared library pages fairly) is multiplied by N.

``waypost up`` runs as a child process exactly as shipped, with ``--inject-label`` set to a
bench-only key (``waypost.bench-<session>.connect`` instead of ``waypost.connect``): other
injectors on the host then never touch the bench's clients, nor ours theirs. Everything created carries
tests/dockerkit's session label and is removed at the end, image included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# bench/ holds dns.py and friends, which would shadow real packages; the repo root is needed for
# tests.dockerkit and goes last, so dnspython's `dns` still wins over the repo's dns/ folder.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from tests.ports import free_port  # noqa: E402 - needs the repository root on sys.path
from tests.procinfo import pss_kb, rss_kb  # noqa: E402

BACKEND_CMD = ["sh", "-c", "hostname > /www/index.html; exec httpd -f -p 8080 -h /www"]
SIDECAR_SAMPLES = 3
# one request through the injected route every ~5 ms: the resolution of the convergence times. Each
# request makes busybox httpd fork; polling much faster loads the 2 cores enough to slow down the
# very `docker run` being timed (2 ms polling added ~40 ms to its p50 here).
POLL_INTERVAL = 0.005


# ---- small helpers -----------------------------------------------------------------------------


def nearest_rank(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil
    return ordered[int(rank) - 1]


def sidecar_command() -> list[str]:
    """The `waypost ambassador` command line."""
    return [sys.executable, "-m", "waypost", "ambassador"]


def wait_for(check: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited ({proc.returncode})\n" + (log.read_text() if log else ""))
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}" + ("\n" + log.read_text()[-3000:] if log else ""))


# ---- the bench ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, runs: int, clients: int, workdir: Path) -> None:
        from tests import dockerkit

        self.kit = dockerkit
        self.runs = runs
        self.n_clients = clients
        self.workdir = workdir
        self.docker = dockerkit.client()
        self.label_key = f"waypost.bench-{dockerkit.SESSION}.connect"
        self.service = f"web-{uuid.uuid4().hex[:8]}"
        self.image = ""
        self.backend_image = ""
        self.up: subprocess.Popen | None = None
        self.up_log = workdir / "up.log"
        self.http = ""
        self.sidecars: list[subprocess.Popen] = []
        self.binder: Any = None

    # ---- setup / teardown --------------------------------------------------------------------

    def start_up(self) -> None:
        http, dns = free_port(), free_port()
        self.http = f"http://127.0.0.1:{http}"
        out = open(self.up_log, "w")  # noqa: SIM115 - the child owns it
        self.up = subprocess.Popen(
            [sys.executable, "-m", "waypost", "up", "--inject-label", self.label_key, "--http", f"127.0.0.1:{http}",
             "--dns", f"127.0.0.1:{dns}", "--node", "bench", "--internal", "--lb", "round-robin",
             "--connect-timeout", "1", "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        out.close()
        wait_for(lambda: "ambassadors" in self.up_log.read_text(), 30, "waypost up's summary", self.up, self.up_log)
        if "injection OFF" in self.up_log.read_text():
            raise RuntimeError("injection is off in waypost up (needs root/CAP_SYS_ADMIN):\n" + self.up_log.read_text())

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.http + "/v1/waypost/status", timeout=5) as resp:
            return json.loads(resp.read())

    def instances(self) -> list[str]:
        """Healthy instance IDs of the bench service (the catalog API shares up's HTTP port)."""
        with urllib.request.urlopen(f"{self.http}/v1/health/service/{self.service}?passing=1", timeout=5) as resp:
            return [e["Service"]["ID"] for e in json.loads(resp.read())]

    def attached(self) -> set[str]:
        return {a["container"] for a in self.status()["ambassadors"] if a["routes"]}

    def close(self) -> None:
        for proc in self.sidecars:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if self.up is not None and self.up.poll() is None:
            self.up.send_signal(signal.SIGINT)
            try:
                self.up.wait(20)
            except subprocess.TimeoutExpired:
                self.up.kill()
                self.up.wait()
        if self.binder is not None:
            self.binder.close()
        self.kit.cleanup(self.docker, images=True)
        self.docker.close()

    # ---- containers --------------------------------------------------------------------------

    def run_backend(self) -> Any:
        """`docker run -d` of one backend: create + start, the two calls the CLI makes (the SDK's
        ``containers.run`` would add an inspect in between); returns the container object."""
        api = self.docker.api
        created = api.create_container(self.backend_image, BACKEND_CMD, environment={"SERVICE_NAME": self.service},
                                       labels=self.kit.labels(), name=self.kit.unique_name(), stop_signal="SIGKILL",
                                       host_config=api.create_host_config())
        api.start(created["Id"])
        return self.docker.containers.prepare_model({"Id": created["Id"]})

    def run_client(self) -> Any:
        return self.kit.run(self.docker, self.image, ["sleep", "3600"],
                            extra_labels={self.label_key: f"web:8080@{self.service}"})

    def route_of(self, container: Any) -> tuple[int, str]:
        """(pid, 127.127.x.y) of `web` in the client: its namespace and the hosts line waypost wrote."""
        container.reload()
        pid = container.attrs["State"]["Pid"]

        def address() -> str | None:
            with open(f"/proc/{pid}/root/etc/hosts") as f:
                for line in f:
                    fields = line.split("#")[0].split()
                    if fields[1:2] == ["web"]:
                        return fields[0]
            return None

        return pid, wait_for(address, 30, f"the hosts line in {container.name}")

    # ---- requests from inside a container's namespace ----------------------------------------

    async def get(self, pid: int, address: str, timeout: float = 6.0) -> str | None:
        """GET / through the client's injected route; the answering backend's host name, or None."""
        loop = asyncio.get_running_loop()
        sock = await self.binder.run_in(pid, socket.socket, socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (address, 8080))
                await loop.sock_sendall(sock, b"GET / HTTP/1.0\r\n\r\n")
                chunks = []
                while chunk := await loop.sock_recv(sock, 4096):
                    chunks.append(chunk)
        except (OSError, TimeoutError):
            return None
        finally:
            sock.close()
        text = b"".join(chunks).decode(errors="replace")
        if " 200 " not in text.split("\r\n", 1)[0]:
            return None
        return text.split("\r\n\r\n", 1)[1].strip()

    # ---- convergence -------------------------------------------------------------------------

    async def converge_once(self, pid: int, address: str, baseline: int) -> tuple[float, float]:
        """Start a backend while requesting; (ms from the run call, ms from its return) to its first answer."""
        new_id: list[str] = []
        first: list[float] = []
        stop = asyncio.Event()

        async def requester() -> None:
            while not stop.is_set():
                answer = await self.get(pid, address)
                if new_id and answer == new_id[0]:
                    first.append(time.monotonic())
                    return
                await asyncio.sleep(POLL_INTERVAL)

        task = asyncio.create_task(requester())
        await asyncio.sleep(0.05)  # let a request be in flight (held, in the from-zero case)
        t_call = time.monotonic()
        backend = await asyncio.to_thread(self.run_backend)
        t_ret = time.monotonic()
        new_id.append(backend.id[:12])
        try:
            async with asyncio.timeout(15):
                await task
        except TimeoutError:
            raise RuntimeError(f"backend {new_id[0]} never answered through the injected ambassador") from None
        finally:
            stop.set()
        await asyncio.to_thread(backend.remove, force=True)
        await asyncio.to_thread(wait_for, lambda: len(self.instances()) == baseline, 15, "the backend's deregistration")
        return (first[0] - t_call) * 1000, (first[0] - t_ret) * 1000

    async def convergence(self, pid: int, address: str, keep: Any | None) -> tuple[list[float], list[float]]:
        totals, after = [], []
        baseline = 1 if keep is not None else 0
        for _ in range(self.runs):
            total, since_start = await self.converge_once(pid, address, baseline)
            totals.append(total)
            after.append(since_start)
        return totals, after

    # ---- memory ------------------------------------------------------------------------------

    async def injected_memory(self) -> tuple[int, int, int]:
        """waypost up's RSS in KB before, grown by, and after removing n more labelled clients."""
        assert self.up is not None
        await asyncio.sleep(1.0)
        before = rss_kb(self.up.pid)
        clients = await asyncio.gather(*(asyncio.to_thread(self.run_client) for _ in range(self.n_clients)))
        ids = {c.id[:12] for c in clients}
        await asyncio.to_thread(wait_for, lambda: ids <= self.attached(), 120, f"{len(ids)} clients attached")
        routes = [await asyncio.to_thread(self.route_of, c) for c in clients]
        # one at a time: busybox httpd listens with a backlog of 9, a burst would lose SYNs
        answers = [await self.get(pid, addr) for pid, addr in routes]
        failed = sum(1 for a in answers if a is None)
        if failed:
            raise RuntimeError(f"{failed} of {len(answers)} injected clients got no answer")
        await asyncio.sleep(1.0)
        grown = rss_kb(self.up.pid) - before
        await asyncio.gather(*(asyncio.to_thread(c.remove, force=True) for c in clients))
        await asyncio.to_thread(wait_for, lambda: not (ids & self.attached()), 60, "clients detached")
        await asyncio.sleep(1.0)
        return before, grown, rss_kb(self.up.pid)

    def sidecar_memory(self) -> tuple[float, float]:
        """Mean (RSS, PSS) in KB of a sidecar ambassador process that served one request."""
        rss, pss = [], []
        for i in range(SIDECAR_SAMPLES):
            port = free_port()
            log = self.workdir / f"sidecar-{i}.log"
            out = open(log, "w")  # noqa: SIM115
            proc = subprocess.Popen([*sidecar_command(), "--route", f"127.0.0.1:{port}={self.service}",
                                     "--catalog", self.http], stdout=out, stderr=subprocess.STDOUT, text=True)
            out.close()
            self.sidecars.append(proc)
            wait_for(lambda log=log: "ambassador ready" in log.read_text(), 30, "a sidecar ambassador", proc, log)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            if b" 200 " not in data.split(b"\r\n", 1)[0]:
                raise RuntimeError(f"the sidecar ambassador did not route a request: {data[:200]!r}")
            time.sleep(0.5)
            rss.append(rss_kb(proc.pid))
            pss.append(pss_kb(proc.pid))
        for proc in self.sidecars:
            proc.kill()
            proc.wait()
        self.sidecars.clear()
        return statistics.mean(rss), statistics.mean(pss)

    # ---- all of it ---------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        from waypost.ambassador.netns import NamespaceBinder

        self.image = await asyncio.to_thread(self.kit.build_image, self.docker)
        # backends EXPOSE their port and publish nothing: `waypost up --internal` registers container
        # IPs, so a host port (and Docker's per-port proxy process) would be dead weight
        self.backend_image = await asyncio.to_thread(
            self.kit.build_image, self.docker, f"{self.kit.SESSION}-web", ("EXPOSE 8080/tcp",))
        await asyncio.to_thread(self.start_up)
        self.binder = NamespaceBinder()
        client = await asyncio.to_thread(self.run_client)
        pid, address = await asyncio.to_thread(self.route_of, client)

        # from zero: nothing registered, a request waits in the ambassador
        zero = await self.convergence(pid, address, keep=None)
        # scale-out: one backend serves, the new one is the second
        keeper = await asyncio.to_thread(self.run_backend)
        await asyncio.to_thread(wait_for, lambda: len(self.instances()) == 1, 15, "the first backend's registration")
        if await self.get(pid, address) != keeper.id[:12]:
            raise RuntimeError("the client's injected ambassador does not reach the first backend")
        scale = await self.convergence(pid, address, keep=keeper)

        before, grown, after_removal = await self.injected_memory()
        side_rss, side_pss = await asyncio.to_thread(self.sidecar_memory)
        return {"zero": zero, "scale": scale, "before_kb": before, "grown_kb": grown, "after_removal_kb": after_removal,
                "sidecar_rss_kb": side_rss, "sidecar_pss_kb": side_pss}


def print_table(r: dict[str, Any], runs: int, clients: int) -> None:
    rows = []
    for label, key in (("scale-out 1→2", "scale"), ("from zero 0→1 (held request)", "zero")):
        totals, after = r[key]
        docker = [t - a for t, a in zip(totals, after, strict=True)]
        for what, values in (("from docker run", totals), ("  docker run call itself", docker),
                             ("  after run returned (waypost)", after)):
            rows.append((f"{label}, {what}", statistics.median(values), nearest_rank(values, 99), max(values)))
    print(f"\nconvergence: docker run of a new backend → first request it answers through an injected "
          f"ambassador ({runs} runs each; p99 by nearest rank)")
    print(f"{'case':<60} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}   target p99 < 300 ms")
    for name, p50, p99, mx in rows:
        verdict = "" if "docker run call" in name else ("ok" if p99 < 300 else "MISSED")
        print(f"{name:<60} {p50:8.1f} {p99:8.1f} {mx:8.1f}   {verdict}")
    per_client = r["grown_kb"] / clients
    side_rss, side_pss = r["sidecar_rss_kb"], r["sidecar_pss_kb"]
    print(f"\nmemory for {clients} clients (sidecar: mean of {SIDECAR_SAMPLES} processes × {clients})")
    print(f"{'':<60} {'total MB':>9} {'per client KB':>14} {'vs injected':>12}")
    print(f"{'injected (RSS growth of waypost up)':<60} {r['grown_kb'] / 1024:9.1f} {per_client:14.1f} "
          f"{'1.0×':>12}   target < 100 KB: {'ok' if per_client < 100 else 'MISSED'}")
    for name, kb in (("one sidecar ambassador process each (RSS)", side_rss),
                     ("one sidecar ambassador process each (PSS)", side_pss)):
        ratio = kb / per_client if per_client > 0 else float("inf")
        print(f"{name:<60} {kb * clients / 1024:9.1f} {kb:14.1f} {ratio:11.0f}×")
    print(f"(waypost up RSS: {r['before_kb'] / 1024:.1f} MB before the clients, "
          f"{(r['before_kb'] + r['grown_kb']) / 1024:.1f} MB with them, {r['after_removal_kb'] / 1024:.1f} MB "
          "after they were removed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 runs per case and 20 clients (about 30 s)")
    parser.add_argument("--runs", type=int, default=None, help="convergence runs per case (default 20)")
    parser.add_argument("--clients", type=int, default=None, help="labelled clients for memory (default 100)")
    args = parser.parse_args()
    runs = args.runs or (5 if args.quick else 20)
    clients = args.clients or (20 if args.quick else 100)
    if os.geteuid() != 0:
        sys.exit("convergence bench: injection needs root (CAP_SYS_ADMIN); run it as root")
    try:
        from tests import dockerkit

        c = dockerkit.client()
        c.ping()
        c.close()
    except Exception as exc:  # noqa: BLE001 - any failure means no engine
        sys.exit(f"convergence bench: no Docker engine answers ({exc}); start dockerd first")
    with tempfile.TemporaryDirectory(prefix="waypost-convergence-") as tmp:
        bench = Bench(runs, clients, Path(tmp))
        try:
            result = asyncio.run(bench.run())
        except Exception:
            print("waypost up log (tail):\n" + (bench.up_log.read_text()[-3000:] if bench.up_log.exists() else ""),
                  file=sys.stderr)
            raise
        finally:
            bench.close()
    print_table(result, runs, clients)


if __name__ == "__main__":
    main()
