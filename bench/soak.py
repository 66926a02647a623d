"""Soak: `waypost up` under mixed traffic; RSS, descriptors and p99 latency must stay flat.

    python bench/soak.py                # 10 minutes, a row every 30 s, 30 s catalog outage, 500-container churn
    python bench/soak.py --quick        # 1 minute, a row every 10 s, 10 s catalog outage
    python bench/soak.py --minutes 20   # longer (the outage and the 500-container churn included)

Set-up (loopback and the local dockerd only; everything is removed at the end):

- ``waypost catalog --data-dir`` as its own process, so the outage phase can SIGKILL it, and
  ``waypost up --catalog URL --internal --inject-label <bench-only key>``;
- three backend containers (busybox httpd, ``SERVICE_NAME=soak-web``), a sidecar
  ``waypost ambassador --route 127.0.0.1:P=soak-web`` process, and a client container labelled
  ``<key>=web:8080@soak-web`` (an injected ambassador).

Traffic, all the time: UDP DNS queries to up's DNS at ~200/s from this process (``soak-web`` A must
always carry its 3 records; SRV, churning and NXDOMAIN names too); ``GET /`` through the sidecar at
~40/s and through the injected ambassador at ~20/s (from inside the client's network namespace: the
socket is made there by waypost's ``NamespaceBinder.run_in``, the I/O runs on this loop); labelled
``sleep`` containers (a fifth with the injection label) created and removed continuously, at most 20
alive. Phases: at 40 % of the run the catalog is killed for 30 s (quick: 10 s), while everything
keeps going; in a full run, at 60 %, 500 more containers start and stop in waves of 50.

Each row: RSS and descriptors of the ``waypost up`` process (descriptors split: unix sockets, i.e.
Docker API keep-alive connections that docker-py caches up to 25 pools per client, and all the
rest), the sidecar's RSS, and per kind of traffic the count, p99 latency and errors in the interval.
The verdict fits least-squares lines through the rows after the first (warm-up), outage rows left
out (the catalog connections are gone then, descriptors dip): over all of them
and over the last half of the run, each projected over the whole run. A measure is flat when its
last-half growth stays under the bound (RSS: 8 MiB or 10 %; descriptors: 16): one-off steps such as
the first recovery from the outage show in the whole-run figure, a leak keeps growing to the end.
p99 latency is judged on the steady rows only (not the outage or the 500-container churn, which
loads this 2-core box): flat when the later half's median p99 is within 2x (+5 ms) of the earlier. At the end the catalog's
registrations of the churning service must equal the running churn containers exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# bench/ holds dns.py, which would shadow dnspython; the repo root (for tests.dockerkit) goes last.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from tests.ports import free_port  # noqa: E402 - needs the repository root on sys.path
from tests.procinfo import fd_split, rss_kb  # noqa: E402

BACKEND_CMD = ["sh", "-c", "hostname > /www/index.html; exec httpd -f -p 8080 -h /www"]
SERVICE, CHURN_SERVICE = "soak-web", "soak-churn"
CHURN_MAX_ALIVE = 20
BIG_CHURN, BIG_WAVE = 500, 50
RSS_BOUND_MIB = 8.0  # or 10 % of the first sample, whichever is larger
FD_BOUND = 16


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 for fewer than 2 points)."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # noqa: BLE001 - not there yet
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


@dataclass
class Traffic:
    """Latencies (ms) and errors of one kind of traffic since the last row."""

    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    total_errors: int = 0
    total: int = 0
    outage_errors: int = 0

    def ok(self, ms: float) -> None:
        self.latencies.append(ms)
        self.total += 1

    def fail(self, in_outage: bool) -> None:
        self.errors += 1
        self.total_errors += 1
        self.total += 1
        if in_outage:
            self.outage_errors += 1

    def take(self) -> tuple[int, float, int]:
        row = (len(self.latencies) + self.errors, p99(self.latencies), self.errors)
        self.latencies, self.errors = [], 0
        return row


class DnsLoad(asyncio.DatagramProtocol):
    """UDP queries at a steady rate; answers matched by ID, 2 s without one counts as an error."""

    def __init__(self, soak: Soak) -> None:
        from dnslib import DNSRecord

        self.soak = soak
        self.pending: dict[int, tuple[float, bool]] = {}
        names = [(f"{SERVICE}.service.consul", "A", True), (f"{SERVICE}.service.consul", "SRV", False),
                 (f"{CHURN_SERVICE}.service.consul", "A", False)]
        names += [(f"nosuch{i}.service.consul", "A", False) for i in range(50)]
        self.packets = [(DNSRecord.question(n, t).pack(), strict) for n, t, strict in names]
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        qid = int.from_bytes(data[:2], "big")
        sent = self.pending.pop(qid, None)
        if sent is None:
            return
        t0, strict = sent
        rcode, ancount = data[3] & 0x0F, int.from_bytes(data[6:8], "big")
        if rcode == 2 or (strict and (rcode != 0 or ancount != 3)):
            self.soak.dns.fail(self.soak.in_outage)
        else:
            self.soak.dns.ok((time.monotonic() - t0) * 1000)

    async def run(self, rate: float) -> None:
        i = 0
        while True:
            now = time.monotonic()
            for qid, (t0, _) in list(self.pending.items()):
                if now - t0 > 2.0:
                    del self.pending[qid]
                    self.soak.dns.fail(self.soak.in_outage)
            for _ in range(2):
                packet, strict = self.packets[i % len(self.packets)] if i % 3 else self.packets[0]
                qid = random.randrange(65536)
                if qid in self.pending:
                    continue
                self.pending[qid] = (time.monotonic(), strict)
                self.transport.sendto(qid.to_bytes(2, "big") + packet[2:])  # type: ignore[union-attr]
                i += 1
            await asyncio.sleep(2 / rate)


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        from tests import dockerkit

        self.kit = dockerkit
        self.args = args
        self.workdir = workdir
        self.docker = dockerkit.client()
        self.label_key = f"waypost.soak-{dockerkit.SESSION}.connect"
        self.image = ""
        self.procs: dict[str, subprocess.Popen] = {}
        self.catalog_port, self.http_port, self.dns_port, self.sidecar_port = (free_port() for _ in range(4))
        self.catalog_url = f"http://127.0.0.1:{self.catalog_port}"
        self.in_outage = False
        self.dns, self.sidecar, self.injected = Traffic("dns"), Traffic("sidecar"), Traffic("injected")
        self.churn_alive: list[str] = []
        self.churn_ops = 0
        self.big_churn_done = 0
        self.phase = "steady"
        self.rows: list[dict[str, Any]] = []
        self.binder: Any = None
        self.client_route: tuple[int, str] = (0, "")

    # ---- processes ---------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        out = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        out.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def start_catalog(self) -> None:
        self.spawn("catalog", [sys.executable, "-m", "waypost", "catalog", "--listen", f"127.0.0.1:{self.catalog_port}",
                               "--data-dir", str(self.workdir / "catalog"), "--node", "soak"])
        wait_for(lambda: urllib.request.urlopen(self.catalog_url + "/v1/status/leader", timeout=1).status == 200,
                 20, "the catalog")

    def kill(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def start_up(self) -> None:
        self.spawn("up", [sys.executable, "-m", "waypost", "up", "--catalog", self.catalog_url, "--http",
                          f"127.0.0.1:{self.http_port}", "--dns", f"127.0.0.1:{self.dns_port}", "--node", "soak",
                          "--internal", "--inject-label", self.label_key, "--lb", "round-robin",
                          "--log-level", "warning"])
        wait_for(lambda: "ambassadors" in self.log("up"), 30, "waypost up's summary")
        if "injection OFF" in self.log("up"):
            raise RuntimeError("injection is off in waypost up (needs root/CAP_SYS_ADMIN):\n" + self.log("up"))

    def start_sidecar(self) -> None:
        self.spawn("sidecar", [sys.executable, "-m", "waypost", "ambassador", "--route",
                               f"127.0.0.1:{self.sidecar_port}={SERVICE}", "--catalog", self.catalog_url,
                               "--lb", "round-robin"])
        wait_for(lambda: "ambassador ready" in self.log("sidecar"), 30, "the sidecar ambassador")

    def close(self) -> None:
        for name in ("sidecar", "up", "catalog"):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.kill(name)
        if self.binder is not None:
            self.binder.close()
        self.kit.cleanup(self.docker, images=True)
        self.docker.close()

    # ---- catalog views -----------------------------------------------------------------------

    def registered(self, service: str) -> set[str]:
        with urllib.request.urlopen(f"{self.catalog_url}/v1/catalog/service/{service}", timeout=5) as resp:
            return {e["ServiceID"].split(":")[1] for e in json.loads(resp.read())}  # soak:<name>:<port>

    def stale(self) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=2) as resp:
                for line in resp.read().decode().splitlines():
                    if line.startswith("waypost_dns_catalog_stale "):
                        return "yes" if float(line.split()[1]) else "no"
        except OSError:
            return "?"
        return "?"

    # ---- containers --------------------------------------------------------------------------

    def create_churn(self, inject: bool) -> str:
        labels = self.kit.labels({"waypost.soak": "churn", **({self.label_key: f"web:8080@{SERVICE}"} if inject else {})})
        created = self.docker.api.create_container(
            self.image, ["sleep", "3600"], name=self.kit.unique_name("soak"), ports=[8080],
            environment={"SERVICE_NAME": CHURN_SERVICE}, labels=labels, stop_signal="SIGKILL",
            host_config=self.docker.api.create_host_config())
        self.docker.api.start(created["Id"])
        return str(self.docker.api.inspect_container(created["Id"])["Name"]).lstrip("/")

    def running_churn(self) -> set[str]:
        found = self.docker.api.containers(filters={"label": ["waypost.soak=churn", f"{self.kit.LABEL}={self.kit.SESSION}"]})
        return {str(c["Names"][0]).lstrip("/") for c in found}

    def remove(self, name: str) -> None:
        self.docker.api.remove_container(name, force=True)

    async def churn(self) -> None:
        """Keep containers coming and going, at most CHURN_MAX_ALIVE alive."""
        while True:
            if len(self.churn_alive) < CHURN_MAX_ALIVE and random.random() < 0.6:
                self.churn_alive.append(await asyncio.to_thread(self.create_churn, random.random() < 0.2))
            elif self.churn_alive:
                victim = self.churn_alive.pop(random.randrange(len(self.churn_alive)))
                await asyncio.to_thread(self.remove, victim)
            self.churn_ops += 1
            await asyncio.sleep(0.2)

    async def big_churn(self) -> None:
        """BIG_CHURN containers started and stopped in waves of BIG_WAVE."""
        for _ in range(BIG_CHURN // BIG_WAVE):
            names = await asyncio.gather(*(asyncio.to_thread(self.create_churn, i % 5 == 0) for i in range(BIG_WAVE)))
            await asyncio.sleep(1.0)
            await asyncio.gather(*(asyncio.to_thread(self.remove, n) for n in names))
            self.big_churn_done += len(names)

    # ---- traffic -----------------------------------------------------------------------------

    async def http_get(self, host: str, port: int, sock: socket.socket | None = None) -> bool:
        loop = asyncio.get_running_loop()
        if sock is None:
            sock = socket.socket()
        sock.setblocking(False)
        try:
            async with asyncio.timeout(5):
                await loop.sock_connect(sock, (host, port))
                await loop.sock_sendall(sock, b"GET / HTTP/1.0\r\n\r\n")
                chunks = []
                while chunk := await loop.sock_recv(sock, 4096):
                    chunks.append(chunk)
        except (OSError, TimeoutError):
            return False
        finally:
            sock.close()
        return b" 200 " in b"".join(chunks).split(b"\r\n", 1)[0]

    async def sidecar_load(self, period: float) -> None:
        while True:
            t0 = time.monotonic()
            if await self.http_get("127.0.0.1", self.sidecar_port):
                self.sidecar.ok((time.monotonic() - t0) * 1000)
            else:
                self.sidecar.fail(self.in_outage)
            await asyncio.sleep(period)

    async def injected_load(self, period: float) -> None:
        pid, address = self.client_route
        while True:
            t0 = time.monotonic()
            sock = await self.binder.run_in(pid, socket.socket, socket.AF_INET, socket.SOCK_STREAM)
            if await self.http_get(address, 8080, sock):
                self.injected.ok((time.monotonic() - t0) * 1000)
            else:
                self.injected.fail(self.in_outage)
            await asyncio.sleep(period)

    # ---- the run -----------------------------------------------------------------------------

    def setup(self) -> None:
        from waypost.ambassador.netns import NamespaceBinder

        self.image = self.kit.build_image(self.docker)
        self.start_catalog()
        self.start_up()
        for _ in range(3):
            self.kit.run(self.docker, self.image, BACKEND_CMD, environment={"SERVICE_NAME": SERVICE},
                         ports={"8080/tcp": None})
        wait_for(lambda: len(self.registered(SERVICE)) == 3, 30, "3 backends registered")
        self.start_sidecar()
        client = self.kit.run(self.docker, self.image, ["sleep", "3600"],
                              extra_labels={self.label_key: f"web:8080@{SERVICE}"})
        client.reload()
        pid = client.attrs["State"]["Pid"]

        def address() -> str | None:
            with open(f"/proc/{pid}/root/etc/hosts") as f:
                for line in f:
                    if line.split("#")[0].split()[1:2] == ["web"]:
                        return line.split()[0]
            return None

        self.client_route = (pid, wait_for(address, 30, "the injected route's hosts line"))
        for i in range(CHURN_MAX_ALIVE * 3 // 4):  # start the churn near its steady population
            self.churn_alive.append(self.create_churn(i % 5 == 0))
        self.binder = NamespaceBinder()

    def sample(self, elapsed: float) -> dict[str, Any]:
        up, sidecar = self.procs["up"], self.procs["sidecar"]
        unix, other = fd_split(up.pid)
        row: dict[str, Any] = {"t": elapsed, "phase": self.phase, "rss": rss_kb(up.pid) / 1024, "fd_unix": unix,
                               "fd_other": other, "sidecar_rss": rss_kb(sidecar.pid) / 1024, "stale": self.stale(),
                               "alive": len(self.churn_alive)}
        for traffic in (self.dns, self.sidecar, self.injected):
            row[traffic.name] = traffic.take()
        return row

    def print_row(self, row: dict[str, Any]) -> None:
        def kind(v: tuple[int, float, int]) -> str:
            return f"{v[0]:>6} {v[1]:>7.1f} {v[2]:>4}"

        print(f"{row['t']:>6.0f} {row['phase']:<12} {row['rss']:>7.1f} {row['fd_unix']:>5} {row['fd_other']:>5} "
              f"{row['sidecar_rss']:>7.1f} {row['stale']:>5} {row['alive']:>5}  {kind(row['dns'])}  "
              f"{kind(row['sidecar'])}  {kind(row['injected'])}", flush=True)

    async def run(self) -> None:
        minutes = self.args.minutes
        total = minutes * 60
        interval = 10.0 if self.args.quick else 30.0
        outage = 10.0 if self.args.quick else 30.0
        await asyncio.to_thread(self.setup)
        loop = asyncio.get_running_loop()
        dns_load = DnsLoad(self)
        transport, _ = await loop.create_datagram_endpoint(lambda: dns_load,
                                                           remote_addr=("127.0.0.1", self.dns_port))
        tasks = [loop.create_task(dns_load.run(200)), loop.create_task(self.sidecar_load(0.05)),
                 loop.create_task(self.sidecar_load(0.05)), loop.create_task(self.injected_load(0.05)),
                 loop.create_task(self.churn())]
        print(f"soak: {minutes:g} min, a row every {interval:g}s; catalog outage of {outage:g}s at 40%"
              + ("" if self.args.quick else f", {BIG_CHURN}-container churn at 60%"), flush=True)
        print(f"{'t(s)':>6} {'phase':<12} {'up RSS':>7} {'unix':>5} {'fds':>5} {'sc RSS':>7} {'stale':>5} "
              f"{'alive':>5}  {'dns n':>6} {'p99ms':>7} {'err':>4}  {'sc n':>6} {'p99ms':>7} {'err':>4}  "
              f"{'inj n':>6} {'p99ms':>7} {'err':>4}", flush=True)
        start = time.monotonic()
        outage_at, outage_end = 0.4 * total, 0.4 * total + outage
        big_at = 0.6 * total if not self.args.quick else None
        big_task: asyncio.Task[None] | None = None
        next_row = interval
        try:
            while (elapsed := time.monotonic() - start) < total:
                if not self.in_outage and outage_at <= elapsed < outage_end and self.procs["catalog"].poll() is None:
                    self.kill("catalog")
                    self.in_outage, self.phase = True, "outage"
                elif self.in_outage and elapsed >= outage_end:
                    await asyncio.to_thread(self.start_catalog)
                    self.in_outage, self.phase = False, "steady"
                if big_at is not None and big_task is None and elapsed >= big_at:
                    big_task = loop.create_task(self.big_churn())
                    self.phase = "churn-500"
                if big_task is not None and big_task.done() and self.phase == "churn-500":
                    big_task.result()
                    self.phase = "steady"
                if elapsed >= next_row:
                    row = self.sample(elapsed)
                    self.rows.append(row)
                    self.print_row(row)
                    next_row += interval
                for name, proc in self.procs.items():
                    if proc.poll() is not None and not (name == "catalog" and self.in_outage):
                        raise RuntimeError(f"{name} exited:\n{self.log(name)[-3000:]}")
                await asyncio.sleep(0.1)
            if big_task is not None:
                await big_task
            if not self.rows or self.rows[-1]["t"] < total - 1:
                row = self.sample(time.monotonic() - start)
                self.rows.append(row)
                self.print_row(row)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            transport.close()
        # the churn stopped: the catalog must hold exactly the running churn containers (asked of
        # the engine: a create cancelled with the churn task may still have completed)
        await asyncio.sleep(2.0)
        running = await asyncio.to_thread(self.running_churn)
        t0 = time.monotonic()
        try:
            await asyncio.to_thread(wait_for, lambda: self.registered(CHURN_SERVICE) == running, 60,
                                    "registrations == running churn containers")
        except TimeoutError:
            registered = self.registered(CHURN_SERVICE)
            print(f"registrations != running churn containers after 60s: registered but not running "
                  f"{sorted(registered - running)}, running but not registered {sorted(running - registered)}")
            raise
        self.converged_in = time.monotonic() - t0
        self.verdict(total)

    def verdict(self, total: float) -> None:
        # outage rows are left out: the catalog connections are gone then, so descriptors dip
        rows = [r for r in (self.rows[1:] if len(self.rows) > 2 else self.rows) if r["phase"] != "outage"]
        late = [r for r in rows if r["t"] >= total / 2] or rows
        if len(late) < 2:
            late = rows[-2:]

        def growth(key: str, subset: list[dict[str, Any]]) -> float:
            return slope([r["t"] for r in subset], [r[key] for r in subset]) * total

        rss_bound = max(RSS_BOUND_MIB, 0.1 * rows[0]["rss"])
        print("\nverdict: least-squares growth projected over the whole run; judged on the last half (one-off "
              "steps, e.g. the first\noutage recovery or the first big churn, show in the whole-run figure; a leak "
              "keeps growing through the last half)")
        print(f"  {'measure':<34} {'whole run':>10} {'last half':>10} {'bound':>8}")
        flat = True
        for name, key, bound in (("up RSS (MiB)", "rss", rss_bound), ("up descriptors (not unix)", "fd_other", FD_BOUND),
                                 ("up unix sockets (Docker API)", "fd_unix", FD_BOUND),
                                 ("sidecar RSS (MiB)", "sidecar_rss", rss_bound)):
            whole, last = growth(key, rows), growth(key, late)
            ok = last <= bound
            flat &= ok
            print(f"  {name:<34} {whole:>+10.2f} {last:>+10.2f} {bound:>8.2f}  {'flat' if ok else 'GROWING'}")
        steady = [r for r in rows if r["phase"] == "steady"] or rows
        half = len(steady) // 2 or 1
        print(f"  {'p99 latency, steady rows (ms)':<34} {'early':>10} {'late':>10} {'bound':>8}")
        for name in ("dns", "sidecar", "injected"):
            early_p99 = statistics.median(r[name][1] for r in steady[:half])
            late_p99 = statistics.median(r[name][1] for r in steady[half:] or steady)
            ok = late_p99 <= 2 * early_p99 + 5
            flat &= ok
            print(f"  {name:<34} {early_p99:>10.1f} {late_p99:>10.1f} {2 * early_p99 + 5:>8.1f}  "
                  f"{'flat' if ok else 'GROWING'}")
        for t in (self.dns, self.sidecar, self.injected):
            print(f"  {t.name:<10} {t.total:>8} requests, {t.total_errors} errors ({t.outage_errors} during the outage)")
        print(f"  churn: {self.churn_ops} create/remove operations"
              + (f", plus {self.big_churn_done} containers started and stopped in the big churn"
                 if self.big_churn_done else "")
              + f"; registrations == running churn containers {self.converged_in:.1f}s after the churn stopped")
        errors = sum(t.total_errors for t in (self.dns, self.sidecar, self.injected))
        print(f"\nVERDICT: {'flat' if flat else 'NOT flat'}; {errors} failed requests/queries in total")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 minute, rows every 10 s, 10 s outage, no 500 churn")
    parser.add_argument("--minutes", type=float, default=None, help="length of the run (default 10; quick 1)")
    args = parser.parse_args()
    args.minutes = args.minutes or (1.0 if args.quick else 10.0)
    if os.geteuid() != 0:
        sys.exit("soak bench: injection needs root (CAP_SYS_ADMIN); run it as root")
    try:
        from tests import dockerkit

        c = dockerkit.client()
        c.ping()
        c.close()
    except Exception as exc:  # noqa: BLE001 - any failure means no engine
        sys.exit(f"soak bench: no Docker engine answers ({exc}); start dockerd first")
    with tempfile.TemporaryDirectory(prefix="waypost-soak-") as tmp:
        soak = Soak(args, Path(tmp))
        try:
            asyncio.run(soak.run())
        except BaseException:
            for name in ("up", "sidecar", "catalog"):
                if (soak.workdir / f"{name}.log").exists():
                    print(f"--- {name} log (tail) ---\n{soak.log(name)[-2000:]}", file=sys.stderr)
            raise
        finally:
            soak.close()


if __name__ == "__main__":
    main()
