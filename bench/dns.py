"""Benchmark: `waypost dns` vs dnsmasq serving the same names, measured with dnsperf.

    python bench/dns.py [--quick] [--services N] [--instances N] [--seconds S] [--rounds R] [--workers N]

Both servers run as separate processes on loopback and are measured alternately in the same run
(waypost first in odd rounds, dnsmasq first in even ones). dnsmasq serves the same A records from
a hosts file. Reported: queries/s, lost queries and average latency for A lookups of service names
(waypost vs dnsmasq), SRV lookups (waypost SRV vs dnsmasq A) and the catalog change → DNS answer
latency (register / deregister an instance, poll DNS until the answer changes) when the embedded
catalog is available. Waypost is fed by the embedded catalog (`waypost catalog`) when it exists,
else by a small in-process runner that pushes the same instances into the view (``--serve``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# `python bench/dns.py` puts bench/ first on sys.path, where this very file is "dns": drop it so
# nothing here can shadow dnspython or confuse imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
# The repository root goes last (for tests.ports), so dnspython's `dns` still wins over our dns/.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from tests.ports import free_port  # noqa: E402 - needs the repository root on sys.path

DNSPERF = shutil.which("dnsperf")
DNSMASQ = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")


def address(service: int, instance: int) -> str:
    return f"10.{service // 250}.{service % 250}.{instance + 1}"


def services_spec(n_services: int, n_instances: int) -> dict[str, list[tuple[str, int]]]:
    return {f"svc{s}": [(address(s, i), 8000 + i) for i in range(n_instances)] for s in range(n_services)}


# ---- waypost fed without a catalog (the view's apply entry point) ---------------------------------

def serve_fixture(port: int, n_services: int, n_instances: int, workers: int) -> None:
    """Run DnsServer with the benchmark's instances pushed straight into the view."""
    from waypost.catalog import Instance
    from waypost.cli import install_uvloop
    from waypost.dns import CatalogView, DnsConfig, DnsServer

    install_uvloop()

    async def main() -> None:
        view = CatalogView()
        for name, endpoints in services_spec(n_services, n_instances).items():
            view.apply(name, [Instance(id=f"{name}-{i}", service=name, address=a, port=p, node="bench",
                                       node_address="127.0.0.1") for i, (a, p) in enumerate(endpoints)])
        server = DnsServer(DnsConfig(listen=("127.0.0.1", port)), view, reuse_port=workers > 1)
        await server.start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def run_dns_cli(argv: list[str]) -> int:
    """`waypost dns` through its own CLI module (for checkouts where `waypost` lacks the command)."""
    from waypost.cli import add_common_arguments, install_uvloop
    from waypost.dns import cli
    from waypost.logs import setup_logging

    parser = argparse.ArgumentParser(prog="waypost dns")
    cli.add_arguments(parser)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    install_uvloop()
    return asyncio.run(cli.run(args))


# ---- processes ------------------------------------------------------------------------------------

def wait_dns(port: int, name: str, timeout: float = 20.0) -> None:
    """Block until a UDP A query for `name` gets an answer with at least one record."""
    deadline = time.monotonic() + timeout
    query = build_query(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                s.sendto(query, ("127.0.0.1", port))
                data, _ = s.recvfrom(4096)
                if len(data) >= 12 and struct.unpack("!H", data[6:8])[0] > 0:
                    return
            except OSError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"DNS on port {port} never answered {name}")


def build_query(name: str, qtype: int = 1, qid: int = 0x1234) -> bytes:
    wire = b"".join(bytes((len(p),)) + p.encode() for p in name.strip(".").split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + wire + struct.pack("!HH", qtype, 1)


def answer_ips(data: bytes) -> set[str]:
    """The A records in a response (parsed by hand: answers use a pointer to the question)."""
    from dnslib import DNSRecord

    try:
        rec = DNSRecord.parse(data)
    except Exception:
        return set()
    return {str(r.rdata) for r in rec.rr if r.rtype == 1}


def start_dnsmasq(port: int, spec: dict[str, list[tuple[str, int]]], tmp: Path) -> subprocess.Popen:
    hosts = tmp / "hosts"
    hosts.write_text("".join(f"{a} {name}.service.consul\n" for name, eps in spec.items() for a, _ in eps))
    proc = subprocess.Popen(
        [DNSMASQ, "--no-daemon", "--port", str(port), "--listen-address", "127.0.0.1", "--bind-interfaces",
         "--no-resolv", "--no-hosts", "--addn-hosts", str(hosts), "--local=/consul/", "--cache-size=10000",
         "--user=root" if os.geteuid() == 0 else "--user=" + os.environ.get("USER", "nobody"),
         "--pid-file=" + str(tmp / "dnsmasq.pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    wait_dns(port, "svc0.service.consul")
    return proc


def catalog_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("waypost.server.app", "waypost.server.cli"))


def start_waypost(port: int, args: argparse.Namespace, catalog_url: str | None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if catalog_url:
        flags = ["--listen", f"127.0.0.1:{port}", "--catalog", catalog_url, "--workers", str(args.workers),
                 "--log-level", "warning"]
        from waypost.cli import SUBCOMMANDS

        if "dns" in SUBCOMMANDS:
            cmd = [sys.executable, "-m", "waypost", "dns", *flags]
        else:  # not wired into `waypost` yet: run the same CLI module through this script
            cmd = [sys.executable, __file__, "--run-dns", *flags]
    else:
        cmd = [sys.executable, __file__, "--serve", str(port), "--services", str(args.services),
               "--instances", str(args.instances), "--workers", str(args.workers)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, start_new_session=True)]
    if not catalog_url:
        procs += [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
                  for _ in range(args.workers - 1)]
    wait_dns(port, f"svc{args.services - 1}.service.consul", timeout=60)
    proc = procs[0]
    proc.extra = procs[1:]  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    for p in [proc, *getattr(proc, "extra", [])]:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)  # started with start_new_session: its own group
            except (ProcessLookupError, PermissionError):
                p.terminate()
    for p in [proc, *getattr(proc, "extra", [])]:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ---- the embedded catalog -----------------------------------------------------------------------

class Catalog:
    """`waypost catalog` in a subprocess plus a client to register the benchmark's instances."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "waypost", "catalog", "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", str(tmp / "catalog"), "--log-level", "warning"],
            stdout=subprocess.DEVNULL, start_new_session=True,
        )

    async def client(self):  # type: ignore[no-untyped-def]
        from waypost.catalog import CatalogClient
        from waypost.config import CatalogConfig

        client = CatalogClient(CatalogConfig.from_url(self.url))
        deadline = time.monotonic() + 20
        while True:
            try:
                await client.services()
                return client
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def register_all(self, spec: dict[str, list[tuple[str, int]]]) -> None:
        from waypost.catalog import ServiceDef

        client = await self.client()
        try:
            sem = asyncio.Semaphore(16)

            async def one(name: str, i: int, a: str, p: int) -> None:
                async with sem:
                    await client.register(ServiceDef(id=f"{name}-{i}", name=name, address=a, port=p))

            await asyncio.gather(*(one(n, i, a, p) for n, eps in spec.items() for i, (a, p) in enumerate(eps)))
        finally:
            await client.close()


async def change_latency(catalog: Catalog, dns_port: int, samples: int) -> dict[str, list[float]]:
    """Seconds from the start of a register/deregister call to the DNS answer showing it."""
    from waypost.catalog import ServiceDef

    client = await catalog.client()
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect(("127.0.0.1", dns_port))
    out: dict[str, list[float]] = {"register": [], "deregister": []}

    async def poll(name: str, want_present: str | None, gone: str | None) -> float:
        qid = random.randrange(65536)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            qid = (qid + 1) & 0xFFFF
            sock.send(build_query(name, qid=qid))
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 0.2)
            except TimeoutError:
                continue
            ips = answer_ips(data)
            if (want_present and want_present in ips) or (gone and gone not in ips):
                return time.perf_counter()
            await asyncio.sleep(0.0005)
        return float("nan")

    try:
        for k in range(samples):
            ip = f"10.250.{k // 250}.{k % 250 + 1}"
            name = "churn"
            t0 = time.perf_counter()
            await client.register(ServiceDef(id=f"churn-{k}", name=name, address=ip, port=9000))
            out["register"].append(await poll(f"{name}.service.consul", ip, None) - t0)
            t0 = time.perf_counter()
            await client.deregister(f"churn-{k}")
            # keep one other instance so the name still exists and we see this one disappear
            if k == 0:
                await client.register(ServiceDef(id="churn-anchor", name=name, address="10.251.0.1", port=9000))
                await poll(f"{name}.service.consul", "10.251.0.1", None)
                continue
            out["deregister"].append(await poll(f"{name}.service.consul", None, ip) - t0)
    finally:
        sock.close()
        await client.close()
    return out


# ---- dnsperf ------------------------------------------------------------------------------------

def dnsperf(port: int, datafile: Path, seconds: float, clients: int) -> dict[str, float]:
    cmd = [DNSPERF, "-s", "127.0.0.1", "-p", str(port), "-d", str(datafile), "-l", str(seconds),
           "-c", str(clients), "-q", "200", "-t", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout

    def grab(pattern: str) -> float:
        m = re.search(pattern, out)
        return float(m.group(1)) if m else float("nan")

    return {
        "qps": grab(r"Queries per second:\s+([\d.]+)"),
        "sent": grab(r"Queries sent:\s+(\d+)"),
        "lost": grab(r"Queries lost:\s+(\d+)"),
        "latency_ms": grab(r"Average Latency \(s\):\s+([\d.]+)") * 1000,
        "noerror": grab(r"NOERROR (\d+)"),
    }


def summarise(runs: list[dict[str, float]]) -> dict[str, float]:
    return {
        "qps": statistics.median(r["qps"] for r in runs),
        "lost": sum(r["lost"] for r in runs),
        "sent": sum(r["sent"] for r in runs),
        "latency_ms": statistics.median(r["latency_ms"] for r in runs),
    }


def pct(values: list[float], q: float) -> float:
    vals = sorted(v for v in values if v == v)
    if not vals:
        return float("nan")
    return vals[min(len(vals) - 1, int(round(q / 100 * (len(vals) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (under ~30 s in all)")
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=None, help="length of one dnsperf run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1, help="waypost processes sharing the port")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf -c (sockets)")
    parser.add_argument("--no-catalog", action="store_true", help="feed waypost through the view, not a catalog")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    if sys.argv[1:2] == ["--run-dns"]:
        return run_dns_cli(sys.argv[2:])
    args = parser.parse_args()
    if args.serve is not None:
        serve_fixture(args.serve, args.services, args.instances, args.workers)
        return 0
    if not DNSPERF or not DNSMASQ:
        print("needs dnsperf and dnsmasq: apt-get install -y dnsperf dnsmasq", file=sys.stderr)
        return 2
    seconds = args.seconds or (2.0 if args.quick else 8.0)
    rounds = args.rounds or (2 if args.quick else 3)
    use_catalog = catalog_available() and not args.no_catalog
    spec = services_spec(args.services, args.instances)

    with tempfile.TemporaryDirectory(prefix="waypost-bench-dns-") as tmpname:
        tmp = Path(tmpname)
        a_file, srv_file = tmp / "a.txt", tmp / "srv.txt"
        a_file.write_text("".join(f"{n}.service.consul A\n" for n in spec))
        srv_file.write_text("".join(f"{n}.service.consul SRV\n" for n in spec))
        catalog = waypost = dnsmasq = None
        try:
            catalog_url = None
            if use_catalog:
                catalog = Catalog(tmp)
                asyncio.run(catalog.register_all(spec))
                catalog_url = catalog.url
            wp_port, dm_port = free_port(), free_port()
            waypost = start_waypost(wp_port, args, catalog_url)
            dnsmasq = start_dnsmasq(dm_port, spec, tmp)
            results: dict[str, list[dict[str, float]]] = {"waypost A": [], "dnsmasq A": [], "waypost SRV": []}
            for r in range(rounds):
                order = [("waypost", wp_port), ("dnsmasq", dm_port)]
                if r % 2:
                    order.reverse()
                for who, port in order:
                    results[f"{who} A"].append(dnsperf(port, a_file, seconds, args.clients))
                results["waypost SRV"].append(dnsperf(wp_port, srv_file, seconds, args.clients))
            latency = None
            if catalog is not None:
                latency = asyncio.run(change_latency(catalog, wp_port, 15 if args.quick else 60))
        finally:
            stop(waypost)
            stop(dnsmasq)
            stop(catalog.proc if catalog else None)

    s = {k: summarise(v) for k, v in results.items()}
    base = s["dnsmasq A"]["qps"]
    feed = "embedded catalog" if use_catalog else "view.apply (no catalog)"
    print(f"\nDNS benchmark: {args.services} services x {args.instances} instances, dnsperf -c {args.clients} "
          f"-q 200, {rounds} rounds x {seconds:g}s alternating, waypost workers={args.workers}, fed by {feed}")
    print(f"{'run':<14}{'queries/s':>12}{'lost':>8}{'sent':>10}{'avg ms':>9}{'vs dnsmasq A':>15}  target")
    targets = {"waypost A": ">= 1.00x", "dnsmasq A": "", "waypost SRV": ">= 0.80x"}
    for name, v in s.items():
        print(f"{name:<14}{v['qps']:>12.0f}{v['lost']:>8.0f}{v['sent']:>10.0f}{v['latency_ms']:>9.3f}"
              f"{v['qps'] / base:>14.2f}x  {targets[name]}")
    if latency:
        print(f"\n{'catalog change -> DNS answer':<30}{'n':>5}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}  target p99 < 50 ms")
        for kind, vals in latency.items():
            ms = [v * 1000 for v in vals]
            if os.environ.get("BENCH_VERBOSE"):
                print(kind, [round(v, 1) for v in ms])
            print(f"{kind:<30}{len(ms):>5}{pct(ms, 50):>10.2f}{pct(ms, 99):>10.2f}{pct(ms, 100):>10.2f}")
    else:
        print("\ncatalog change latency: not measured (the embedded catalog, waypost.server.app, is not available)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
