"""Registrator latency and sync time on a real Docker engine, against the embedded catalog.

Measures, with tiny local busybox containers (no registry pulls):

- single starts: from the container's ``start`` event (Docker's ``timeNano``) to the service being
  visible through a blocking query (``CatalogClient.watch``), one container at a time;
- a burst: N containers created first, then started together; per-container event→visible
  latency, and the time from the last ``start`` event until all N are visible;
- cold start: a fresh registrator facing M running containers and an empty catalog, until all M
  are registered (and the same with the catalog already in sync: the restart case, zero writes).

Targets (issue 3): p99 < 50 ms single, burst of 100 visible < 3 s, cold sync of 200 < 5 s.
Run: ``python bench/registrator.py [--quick]`` (quick: 10 singles, burst 20, cold 20).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import dockerkit as dk  # noqa: E402
from waypost.catalog import CatalogClient  # noqa: E402
from waypost.config import CatalogConfig  # noqa: E402
from waypost.registrator import Registrator, RegistratorOptions  # noqa: E402
from waypost.server.app import CatalogServer  # noqa: E402

SERVICE = "benchsvc"
NO_TARGET = float("nan")
NODE = "benchnode"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[k]


class Seen:
    """A blocking-query watch on the bench service recording when each instance first appears."""

    def __init__(self, client: CatalogClient) -> None:
        self.first_seen: dict[str, int] = {}
        self.changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(client))

    async def _run(self, client: CatalogClient) -> None:
        async for instances in client.watch(SERVICE, passing_only=True, wait="30s"):
            now = time.time_ns()
            for inst in instances:
                container = dict(inst.meta).get("waypost-container", "")
                self.first_seen.setdefault(container, now)
            self.changed.set()

    async def wait_for(self, container_ids: set[str], timeout: float) -> int:
        """Wait until every container is seen; returns the time the last one was seen."""
        deadline = time.monotonic() + timeout
        while not container_ids <= self.first_seen.keys():
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = len(container_ids - self.first_seen.keys())
                raise TimeoutError(f"{missing} container(s) not visible after {timeout}s")
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass
        return max(self.first_seen[c] for c in container_ids)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def start_times(docker_client: Any, container_ids: set[str], since: float) -> dict[str, int]:
    """Each container's ``start`` event timeNano, read back from the engine's event log."""
    until = time.time() + 1
    found: dict[str, int] = {}
    for event in docker_client.api.events(since=int(since) - 1, until=int(until) + 1, decode=True,
                                          filters={"type": "container", "event": "start"}):
        cid = (event.get("Actor") or {}).get("ID") or event.get("id")
        if cid in container_ids:
            found[cid] = int(event["timeNano"])  # the last start of each container
    return found


def create(docker_client: Any, image: str, count: int) -> list[str]:
    def one(_: int) -> str:
        created = docker_client.api.create_container(
            image, ["sleep", "3600"], name=dk.unique_name("wpbench"), labels=dk.labels({"SERVICE_NAME": SERVICE}),
            ports=[80], host_config=docker_client.api.create_host_config(port_bindings={80: None}),
            stop_signal="SIGKILL")
        return created["Id"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def start_all(docker_client: Any, ids: list[str], threads: int = 8) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(docker_client.api.start, ids))


async def bench(args: argparse.Namespace) -> list[tuple[str, float, float, str]]:
    docker_client = dk.client()
    image = await asyncio.to_thread(dk.build_image, docker_client)
    server = CatalogServer(host="127.0.0.1", port=0)
    await server.start()
    client = CatalogClient(CatalogConfig.from_url(server.url))
    rows: list[tuple[str, float, float, str]] = []
    registrator: Registrator | None = None
    try:
        registrator = Registrator(client, RegistratorOptions(node=NODE, host_ip="127.0.0.1"))
        await registrator.start()
        await registrator.first_sync.wait()
        seen = Seen(client)

        # -- single starts, one at a time
        singles = await asyncio.to_thread(create, docker_client, image, args.singles)
        since = time.time()
        for cid in singles:
            await asyncio.to_thread(docker_client.api.start, cid)
            await seen.wait_for({cid}, 10)
        starts = await asyncio.to_thread(start_times, docker_client, set(singles), since)
        lat = [(seen.first_seen[c] - starts[c]) / 1e6 for c in singles]
        rows.append((f"single start → visible p50 (n={len(lat)})", statistics.median(lat), 50.0, "ms"))
        rows.append((f"single start → visible p99 (n={len(lat)})", percentile(lat, 99), 50.0, "ms"))

        # -- burst: created first, then started together
        burst = await asyncio.to_thread(create, docker_client, image, args.burst)
        since = time.time()
        await asyncio.to_thread(start_all, docker_client, burst)
        last_seen = await seen.wait_for(set(burst), 60)
        starts = await asyncio.to_thread(start_times, docker_client, set(burst), since)
        lat = [(seen.first_seen[c] - starts[c]) / 1e6 for c in burst]
        first_start, last_start = min(starts.values()), max(starts.values())
        rows.append((f"burst {args.burst}: start → visible p50", statistics.median(lat), NO_TARGET, "ms"))
        rows.append((f"burst {args.burst}: start → visible p99", percentile(lat, 99), NO_TARGET, "ms"))
        rows.append((f"burst {args.burst}: last start event → all visible", (last_seen - last_start) / 1e9, 3.0, "s"))
        rows.append((f"burst {args.burst}: first start event → all visible", (last_seen - first_start) / 1e9,
                     NO_TARGET, "s (includes docker starting them)"))
        await seen.close()
        await registrator.stop()
        registrator = None

        # -- cold start: M running containers, fresh registrator, empty catalog
        running = len(singles) + len(burst)
        extra = max(0, args.cold - running)
        if extra:
            more = await asyncio.to_thread(create, docker_client, image, extra)
            await asyncio.to_thread(start_all, docker_client, more)
        total = running + extra
        await server.stop()
        server = CatalogServer(host="127.0.0.1", port=server.port)  # empty catalog, same address
        await server.start()
        for label, expect_writes in (("empty catalog", True), ("catalog already in sync", False)):
            fresh = Registrator(client, RegistratorOptions(node=NODE, host_ip="127.0.0.1"))
            t0 = time.monotonic()
            await fresh.start()
            await fresh.first_sync.wait()
            elapsed = time.monotonic() - t0
            writes = fresh.status()["writes"]
            await fresh.stop()
            registered = [s for s in (await client.local_services()).values()
                          if s.meta_dict.get("waypost-node") == NODE]
            if len(registered) < total:
                raise RuntimeError(f"cold sync registered {len(registered)} of {total}")
            rows.append((f"cold sync of {total} containers ({label}, {writes} writes)", elapsed, 5.0, "s"))
            if not expect_writes and writes:
                print(f"warning: in-sync restart wrote {writes} times", file=sys.stderr)
    finally:
        if registrator is not None:
            await registrator.stop()
        await client.close()
        await server.stop()
        await asyncio.to_thread(dk.cleanup, docker_client, True)
        docker_client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 singles, burst of 20, cold sync of 20")
    parser.add_argument("--singles", type=int, default=None)
    parser.add_argument("--burst", type=int, default=None)
    parser.add_argument("--cold", type=int, default=None)
    args = parser.parse_args()
    args.singles = args.singles or (10 if args.quick else 50)
    args.burst = args.burst or (20 if args.quick else 100)
    args.cold = args.cold or (20 if args.quick else 200)
    logging.basicConfig(level=logging.WARNING)
    from waypost.cli import install_uvloop

    install_uvloop()
    started = time.monotonic()
    rows = asyncio.run(bench(args))
    print(f"\nregistrator benchmark ({'quick' if args.quick else 'full'}, {time.monotonic() - started:.0f} s wall)")
    print(f"{'metric':<64} {'value':>9} {'target':>7} {'ratio':>6}  unit")
    for name, value, target, unit in rows:
        if target == target:  # has a target
            verdict = "" if value <= target else "  (over target)"
            print(f"{name:<64} {value:>9.2f} {target:>7.1f} {value / target:>6.2f}  {unit}{verdict}")
        else:
            print(f"{name:<64} {value:>9.2f} {'-':>7} {'-':>6}  {unit}")


if __name__ == "__main__":
    main()
