"""Benchmark the embedded catalog: registrations per second and register→watch wake-up latency.

Runs `waypost catalog` as a subprocess on a free loopback port (in memory, and durable with
--data-dir), drives it with waypost.catalog.CatalogClient, and prints a table. The peer a real
deployment would compare with is a Consul agent, which cannot be installed here; the table
compares the durable catalog against the in-memory one and the wake-up latency against the
20 ms p99 target.

    python bench/catalog.py            # full run
    python bench/catalog.py --quick    # under ~30 s
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.ports import free_port  # noqa: E402
from waypost.catalog import CatalogClient, ServiceDef  # noqa: E402
from waypost.config import CatalogConfig  # noqa: E402

TARGET_P99_MS = 20.0


async def start_server(data_dir: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "waypost", "catalog", "--listen", f"127.0.0.1:{port}", "--node", "bench",
           "--log-level", "warning"]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    client = CatalogClient(CatalogConfig.from_url(url))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                await client.agent_self()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the catalog did not start") from None
                await asyncio.sleep(0.05)
    finally:
        await client.close()
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def service(prefix: str, n: int) -> ServiceDef:
    return ServiceDef(id=f"{prefix}-{n}", name=prefix, address="127.0.0.1", port=10000 + n % 50000,
                      tags=("bench",))


async def sequential(url: str, count: int) -> float:
    async with CatalogClient(CatalogConfig.from_url(url)) as client:
        start = time.perf_counter()
        for n in range(count):
            await client.register(service("seq", n))
        return count / (time.perf_counter() - start)


async def concurrent(url: str, count: int, clients: int) -> float:
    per = max(1, count // clients)
    conns = [CatalogClient(CatalogConfig.from_url(url)) for _ in range(clients)]

    async def worker(i: int, client: CatalogClient) -> None:
        for n in range(per):
            await client.register(service(f"conc{i % 10}", i * per + n))

    try:
        start = time.perf_counter()
        await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
        return per * clients / (time.perf_counter() - start)
    finally:
        await asyncio.gather(*(c.close() for c in conns))


INSTANCES = 20


async def wakeups(url: str, rounds: int) -> list[float]:
    """Milliseconds from issuing a registration to the watch yielding the new instance set.

    The watched service keeps at most INSTANCES instances (each round adds one or moves one to a
    new port), like a real service, so the answer size stays constant across rounds."""
    writer = CatalogClient(CatalogConfig.from_url(url))
    reader = CatalogClient(CatalogConfig.from_url(url))
    try:
        it = reader.watch("latency", passing_only=False, wait="60s").__aiter__()
        await asyncio.wait_for(it.__anext__(), 10)
        out = []
        for n in range(rounds):
            nxt = asyncio.ensure_future(it.__anext__())
            await asyncio.sleep(0.002)  # let the blocking query reach the server
            start = time.perf_counter()
            await writer.register(ServiceDef(id=f"latency-{n % INSTANCES}", name="latency", address="127.0.0.1",
                                             port=20000 + n, tags=("bench",)))
            got = await asyncio.wait_for(nxt, 10)
            out.append((time.perf_counter() - start) * 1000)
            assert any(i.port == 20000 + n for i in got), "watch missed an update"
        return out
    finally:
        await writer.close()
        await reader.close()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def run_mode(label: str, data_dir: str | None, count: int, clients: int, rounds: int) -> dict[str, float]:
    proc, url = await start_server(data_dir)
    try:
        seq = await sequential(url, count)
        conc = await concurrent(url, count, clients)
        lat = await wakeups(url, rounds)
    finally:
        stop_server(proc)
    return {"seq": seq, "conc": conc, "p50": statistics.median(lat), "p99": pct(lat, 99), "max": max(lat)}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts; finishes in under ~30 s")
    args = parser.parse_args()
    count, clients, rounds = (400, 50, 100) if args.quick else (3000, 50, 500)
    results = {}
    results["in-memory"] = await run_mode("in-memory", None, count, clients, rounds)
    with tempfile.TemporaryDirectory(prefix="waypost-bench-") as tmp:
        results["durable"] = await run_mode("durable", os.path.join(tmp, "data"), count, clients, rounds)

    mem, dur = results["in-memory"], results["durable"]
    print(f"\nwaypost catalog benchmark ({count} registrations, {clients} concurrent clients, "
          f"{rounds} wake-ups on a {INSTANCES}-instance service; Consul itself is not installable here, so ratios compare the durable "
          f"catalog with the in-memory one and latency with the {TARGET_P99_MS:.0f} ms target)\n")
    rows = [
        ("registrations/s, sequential", f"{mem['seq']:.0f}", f"{dur['seq']:.0f}", f"{dur['seq'] / mem['seq']:.2f}x"),
        (f"registrations/s, {clients} clients", f"{mem['conc']:.0f}", f"{dur['conc']:.0f}",
         f"{dur['conc'] / mem['conc']:.2f}x"),
        ("register→watch wake p50 (ms)", f"{mem['p50']:.2f}", f"{dur['p50']:.2f}",
         f"{dur['p50'] / TARGET_P99_MS:.2f}x of target"),
        ("register→watch wake p99 (ms)", f"{mem['p99']:.2f}", f"{dur['p99']:.2f}",
         f"{dur['p99'] / TARGET_P99_MS:.2f}x of target"),
        ("register→watch wake max (ms)", f"{mem['max']:.2f}", f"{dur['max']:.2f}", ""),
    ]
    widths = [max(len(r[i]) for r in rows + [("metric", "in-memory", "durable", "durable ratio")])
              for i in range(4)]
    header = ("metric", "in-memory", "durable", "durable ratio")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    ok = max(mem["p99"], dur["p99"]) < TARGET_P99_MS
    print(f"\np99 wake-up target < {TARGET_P99_MS:.0f} ms: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
