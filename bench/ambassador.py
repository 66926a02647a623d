"""Ambassador vs HAProxy vs a direct connection: redis-benchmark (PING, 1 and 50 connections) and iperf3.

Runs, in one go and alternating the order each round: redis-benchmark straight to redis-server,
through HAProxy (mode tcp, one backend; its default configuration, and for reference a second one with
`cpu-map` binding each thread to a CPU) and through `waypost ambassador` (static route), then the
same for iperf3 bulk throughput. Prints medians and ratios, and the idle ambassador's RSS.

    python bench/ambassador.py            # 3 rounds
    python bench/ambassador.py --quick    # 1 short round (< 30 s)

Needs redis-server, redis-benchmark, iperf3 and haproxy (apt-get install -y redis-server iperf3 haproxy).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from tests.ports import free_port  # noqa: E402 - needs the repository root on sys.path
from tests.procinfo import context_switches, rss_kb  # noqa: E402

TARGETS = ("direct", "haproxy", "haproxy-cpumap", "waypost")


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
    if not path:
        sys.exit(f"{name} is not installed; fix: apt-get install -y redis-server redis-tools iperf3 haproxy")
    return path


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port} within {timeout:g}s")


def children(pid: int) -> list[int]:
    """Direct child processes (the ambassador's --workers)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_usage(pid: int) -> tuple[float, float, int, int]:
    """User and system CPU seconds, voluntary and involuntary context switches of a process and its
    direct children so far."""
    user = system = 0.0
    voluntary = involuntary = 0
    for p in (pid, *children(pid)):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            v, i = context_switches(p)
        except OSError:  # exited meanwhile
            continue
        user += int(fields[11]) / os.sysconf("SC_CLK_TCK")
        system += int(fields[12]) / os.sysconf("SC_CLK_TCK")
        voluntary += v
        involuntary += i
    return user, system, voluntary, involuntary


def waypost_command() -> list[str]:
    """The `waypost ambassador` command line."""
    return [sys.executable, "-m", "waypost", "ambassador"]


def catalog_route_rss(spawn, redis_port: int, env: dict[str, str]) -> int:  # type: ignore[no-untyped-def]
    """RSS (KB) of an idle `waypost ambassador --route PORT=redis --catalog …` whose watch is open."""
    import urllib.request

    cport, aport = free_port(), free_port()
    catalog = spawn([sys.executable, "-m", "waypost", "catalog", "--listen", f"127.0.0.1:{cport}",
                     "--log-level", "warning"], "catalog.log", env=env)
    wait_port(cport, catalog, "waypost catalog")
    body = json.dumps({"ID": "redis-1", "Name": "redis", "Address": "127.0.0.1", "Port": redis_port}).encode()
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{cport}/v1/agent/service/register",
                                                  data=body, method="PUT"), timeout=5).close()
    amb = spawn([*waypost_command(), "--route", f"127.0.0.1:{aport}=redis", "--catalog",
                 f"http://127.0.0.1:{cport}", "--log-level", "warning"], "ambassador-catalog.log", env=env)
    wait_port(aport, amb, "waypost ambassador (catalog route)")
    with socket.create_connection(("127.0.0.1", aport), timeout=5) as conn:  # one request: backend known
        conn.sendall(b"PING\r\n")
        conn.recv(16)
    time.sleep(0.5)
    return rss_kb(amb.pid)


def spread(values: list[float]) -> float:
    """(max - min) / median of repeated measurements of one target."""
    return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else 0.0


def round_ratios(results: dict[tuple[str, str], list[float]], metric: str, peer: str) -> list[float]:
    """waypost / `peer` for `metric`, one ratio per round."""
    return [w / p for w, p in zip(results[(metric, "waypost")], results[(metric, peer)], strict=True) if p]


def paired_ratio(results: dict[tuple[str, str], list[float]], metric: str, peer: str) -> float:
    """The median of the per-round ratios waypost / `peer` (nan without data)."""
    ratios = round_ratios(results, metric, peer)
    return statistics.median(ratios) if ratios else float("nan")


def redis_bench(port: int, conns: int, requests: int, test: str) -> tuple[float, float]:
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(conns), "-n", str(requests),
         "-t", test, "--csv"], capture_output=True, text=True, timeout=120)
    rows = [r for r in csv.reader(io.StringIO(out.stdout)) if r and r[0] != "test"]
    if not rows:
        raise RuntimeError(f"redis-benchmark gave no result: {out.stderr.strip() or out.stdout.strip()}")
    row = rows[0]
    return float(row[1]), float(row[4])  # rps, p50 ms


def iperf(port: int, seconds: float) -> float:
    out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", f"{seconds:g}", "-J"],
                         capture_output=True, text=True, timeout=seconds + 30)
    data = json.loads(out.stdout)
    if "error" in data:
        raise RuntimeError(f"iperf3: {data['error']}")
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


def haproxy_config(listen: tuple[int, int], redis_port: int, iperf_port: int, global_extra: str = "") -> str:
    """HAProxy in mode tcp: `listen` (redis, iperf3 ports) to the one redis-server and iperf3 server."""
    return f"""global
    maxconn 9000
{global_extra}defaults
    mode tcp
    timeout connect 5s
    timeout client 1m
    timeout server 1m
listen redis
    bind 127.0.0.1:{listen[0]}
    server r1 127.0.0.1:{redis_port}
listen iperf
    bind 127.0.0.1:{listen[1]}
    server i1 127.0.0.1:{iperf_port}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (< 30 s)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="waypost ambassador --workers (default: the CPU count, as HAProxy's default nbthread)")
    parser.add_argument("--cpu-affinity", choices=("auto", "off"), default="auto",
                        help="waypost ambassador --cpu-affinity (default: auto, its default)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    n1, n50 = (10_000, 50_000) if args.quick else (30_000, 200_000)
    iperf_s = 1.5 if args.quick else 3.0
    for name in ("redis-server", "redis-benchmark", "iperf3", "haproxy"):
        tool(name)

    tmp = Path(tempfile.mkdtemp(prefix="waypost-bench-amb-"))
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(cmd: list[str], log_name: str, **kw) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
        log = open(tmp / log_name, "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **kw)
        procs.append(proc)
        return proc

    try:
        redis_port, iperf_port = free_port(), free_port()
        ports = {"direct": (redis_port, iperf_port)}
        redis = spawn([tool("redis-server"), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                       "--appendonly", "no"], "redis.log")
        iperf_srv = spawn([tool("iperf3"), "-s", "-B", "127.0.0.1", "-p", str(iperf_port)], "iperf3.log")
        wait_port(redis_port, redis, "redis-server")
        wait_port(iperf_port, iperf_srv, "iperf3 -s")

        ncpu = len(os.sched_getaffinity(0))
        haproxies = {}
        for target, pinning in (("haproxy", ""),
                                ("haproxy-cpumap", f"    nbthread {ncpu}\n    cpu-map auto:1/1-{ncpu} 0-{ncpu - 1}\n")):
            ports[target] = free_port(), free_port()
            cfg = tmp / f"{target}.cfg"
            cfg.write_text(haproxy_config(ports[target], redis_port, iperf_port, pinning))
            haproxies[target] = spawn([tool("haproxy"), "-db", "-f", str(cfg)], f"{target}.log")
        haproxy, haproxy_pinned = haproxies["haproxy"], haproxies["haproxy-cpumap"]
        wr, wi = free_port(), free_port()
        ports["waypost"] = (wr, wi)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        amb = spawn([*waypost_command(), "--route", f"127.0.0.1:{wr}=127.0.0.1:{redis_port}",
                     "--route", f"127.0.0.1:{wi}=127.0.0.1:{iperf_port}", "--log-level", "warning",
                     "--workers", str(args.workers), "--cpu-affinity", args.cpu_affinity],
                    "ambassador.log", env=env)
        for target, proc in haproxies.items():
            wait_port(ports[target][0], proc, target)
        wait_port(wr, amb, "waypost ambassador")
        wait_port(wi, amb, "waypost ambassador")
        time.sleep(0.5)
        idle_rss = rss_kb(amb.pid)
        idle_rss_all = sum(rss_kb(p) for p in (amb.pid, *children(amb.pid)))
        catalog_rss = catalog_route_rss(spawn, redis_port, env)
        haproxy_rss = rss_kb(haproxy.pid)

        results: dict[tuple[str, str], list[float]] = {}
        proxies = {"haproxy": haproxy, "haproxy-cpumap": haproxy_pinned, "waypost": amb}
        # CPU seconds (user, system) and context switches (voluntary, involuntary) each proxy
        # spent on the redis runs
        cpu_per_req: dict[str, list[float]] = {}
        cpu_reqs: dict[str, int] = {}

        def record(metric: str, target: str, value: float) -> None:
            results.setdefault((metric, target), []).append(value)

        for rnd in range(rounds):
            order = TARGETS[rnd % len(TARGETS):] + TARGETS[: rnd % len(TARGETS)]
            for test in ("PING_INLINE", "PING_MBULK"):
                for conns, n in ((1, n1), (50, n50)):
                    for target in order:
                        cpu0 = {t: cpu_usage(p.pid) for t, p in proxies.items()}
                        rps, p50 = redis_bench(ports[target][0], conns, n, test)
                        record(f"{test} c={conns} req/s", target, rps)
                        record(f"{test} c={conns} p50 ms", target, p50)
                        if target in proxies:
                            after = cpu_usage(proxies[target].pid)
                            total = cpu_per_req.setdefault(target, [0.0] * 4)
                            for k, (before, now) in enumerate(zip(cpu0[target], after, strict=True)):
                                total[k] += now - before
                            cpu_reqs[target] = cpu_reqs.get(target, 0) + n
            for target in order:
                record("iperf3 Gbit/s", target, iperf(ports[target][1], iperf_s))
            print(f"round {rnd + 1}/{rounds} done", file=sys.stderr)
        busy_rss = rss_kb(amb.pid)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    metrics = list(dict.fromkeys(m for m, _ in results))
    header = (f"{'metric':<24}{'direct':>12}{'haproxy':>12}{'hap cpumap':>12}{'waypost':>12}{'wp/haproxy':>12}"
              f"{'wp/cpumap':>11}{'wp/direct':>11}")
    print(f"\nambassador benchmark: {rounds} round(s), medians (higher is better except p50); "
          f"waypost --workers {args.workers} --cpu-affinity {args.cpu_affinity}, haproxy default nbthread "
          f"({os.cpu_count()} CPUs); 'hap cpumap': the same HAProxy with cpu-map binding its threads to CPUs, "
          "for reference (the target compares with HAProxy as installed)\n"
          "ratios are the median of the per-round ratios: each round runs every target side by side, so a "
          "ratio compares runs seconds apart, not the machine's slow rounds with its fast ones\n")
    print(header)
    print("-" * len(header))
    for metric in metrics:
        med = {t: statistics.median(results[(metric, t)]) for t in TARGETS}
        fmt = "{:>12.3f}" if "ms" in metric else ("{:>12.2f}" if "Gbit" in metric else "{:>12.0f}")
        cells = "".join(fmt.format(med[t]) for t in TARGETS)
        r_h, r_p, r_d = (paired_ratio(results, metric, peer) for peer in ("haproxy", "haproxy-cpumap", "direct"))
        print(f"{metric:<24}{cells}{r_h:>11.2f}x{r_p:>10.2f}x{r_d:>10.2f}x")
    for metric in (m for m in metrics if m.endswith("req/s")):
        ratios = round_ratios(results, metric, "haproxy")
        noise = (f" (the machine's noise: same-target rounds vary {spread(results[(metric, 'haproxy')]):.0%} "
                 f"for haproxy, {spread(results[(metric, 'waypost')]):.0%} for waypost)") if rounds > 1 else ""
        print(f"{metric} waypost/haproxy per round: " + " ".join(f"{r:.2f}" for r in ratios) + noise)
    us = {t: 1e6 * (c[0] + c[1]) / cpu_reqs[t] for t, c in cpu_per_req.items()}
    print(f"\nproxy CPU per redis request (all redis runs; less noisy than req/s on a busy machine): "
          f"haproxy {us['haproxy']:.1f} µs, haproxy with cpu-map {us['haproxy-cpumap']:.1f} µs, "
          f"waypost {us['waypost']:.1f} µs ({us['waypost'] / us['haproxy']:.2f}x haproxy)")
    for t, c in cpu_per_req.items():
        k = 1e3 / cpu_reqs[t]
        print(f"  {t:<15} per 1000 requests: user {c[0] * k * 1e3:.1f} ms, system {c[1] * k * 1e3:.1f} ms, "
              f"context switches {c[2] * k:.0f} voluntary + {c[3] * k:.0f} involuntary")
    print(f"RSS: one waypost ambassador process idle {idle_rss / 1024:.1f} MB ({args.workers} workers: "
          f"{idle_rss_all / 1024:.1f} MB in all), after the run {busy_rss / 1024:.1f} MB; "
          f"haproxy idle {haproxy_rss / 1024:.1f} MB")
    print(f"RSS of an idle ambassador following the catalog (one service route, watch open): "
          f"{catalog_rss / 1024:.1f} MB")
    print("targets: req/s c=50 >= 1.0x haproxy, iperf3 >= 1.2x haproxy, p50 c=1 <= 1.2x haproxy, idle RSS < 30 MB")


if __name__ == "__main__":
    main()
