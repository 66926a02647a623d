"""Sidecar ambassador: forward local TCP ports to a service's healthy instances (or static backends).

`waypost ambassador --route LISTEN=SERVICE[#TAG] … [--catalog URL]` follows the catalog live;
`--route LISTEN=HOST:PORT,HOST:PORT` needs no catalog at all.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
from typing import Any

from waypost.ambassador.balancer import POLICIES
from waypost.ambassador.connect import LABEL
from waypost.ambassador.routes import Ambassador, Options, parse_route
from waypost.config import ConfigError, add_catalog_arguments, catalog_config_from_args, parse_hostport
from waypost.workers import (
    Workers,
    allowed_cpus,
    bind_process,
    check_workers,
    cpu_shares,
    format_cpus,
    worker_argv,
)

log = logging.getLogger("waypost.ambassador")


def _nonneg_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `waypost ambassador` flags."""
    parser.add_argument(
        "--route", action="append", default=[], metavar="LISTEN=TARGET",
        help="repeatable: LISTEN=SERVICE[#TAG] follows the catalog, LISTEN=HOST:PORT[,HOST:PORT…] is static; "
        "LISTEN is PORT (on 127.0.0.1), HOST:PORT or [V6]:PORT, e.g. 127.127.0.2:6379=redis")
    add_balancer_flags(parser)
    parser.add_argument("--admin", default=None, metavar="ADDR",
                        help="serve /metrics, /healthz and /v1/routes on HOST:PORT (default: off)")
    parser.add_argument("--admin-token", default=None, metavar="TOKEN",
                        help="require 'Authorization: Bearer TOKEN' for /metrics and /v1/routes")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="processes sharing the route ports with SO_REUSEPORT, each with its own balancer "
                        "and --max-conns (admin metrics cover the first process only)")
    parser.add_argument("--cpu-affinity", choices=("auto", "off"), default="auto",
                        help="auto: with --workers N > 1, bind each worker to its own share of the CPUs this "
                        "process may use (as HAProxy's cpu-map, nginx's worker_cpu_affinity auto), which spares "
                        "the scheduler moving busy workers between CPUs; off: leave placement to the scheduler")
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    inject = parser.add_argument_group("host mode")
    inject.add_argument("--inject", action="store_true",
                        help=f"serve ambassadors inside every running container labelled {LABEL}=NAME[:PORT][@SERVICE],… "
                        "(needs CAP_SYS_ADMIN, the host PID namespace and the Docker socket)")
    inject.add_argument("--inject-label", default=LABEL, metavar="KEY", help="the label key --inject follows")
    inject.add_argument("--docker", default=None, metavar="URL",
                        help="Docker engine URL for --inject (default: $DOCKER_HOST, else the local socket)")
    add_catalog_arguments(parser)


def add_balancer_flags(group: argparse._ActionsContainer) -> None:
    """Load-balancing and connection flags, shared by the sidecar and `waypost up`'s injector."""
    group.add_argument("--lb", choices=POLICIES, default="p2c",
                       help="load balancing: power of two choices on open connections (p2c), round-robin, "
                       "least-conn or random")
    group.add_argument("--connect-timeout", type=_nonneg_float, default=2.0, metavar="S",
                       help="seconds to wait for a backend connect before trying the next (0: no limit of "
                            "ours; the kernel gives up after about 2 minutes)")
    group.add_argument("--retries", type=int, default=2, metavar="N",
                       help="other instances to try after a failed connect (never once bytes flowed)")
    group.add_argument("--eject-after", type=int, default=3, metavar="N",
                       help="eject a backend after N consecutive failed connects, for a cool-down that "
                       "doubles while it keeps failing (0: never)")
    group.add_argument("--wait-for-backends", type=_nonneg_float, default=5.0, metavar="S",
                       help="hold a client this long for a backend to appear, then close it")
    group.add_argument("--drain-timeout", type=_nonneg_float, default=None, metavar="S",
                       help="reset connections to a removed backend after S seconds (default: never)")
    group.add_argument("--idle-timeout", type=_nonneg_float, default=None, metavar="S",
                       help="close a connection after S seconds with no byte either way (default: never); "
                       "frees connections whose backend hung after the client gave up")
    group.add_argument("--max-conns", type=int, default=0, metavar="N",
                       help="refuse client connections beyond N open ones (0: as many as file descriptors allow)")


def options_from_args(args: argparse.Namespace) -> Options:
    """Options from the parsed flags (ConfigError names the flag)."""
    return Options(
        lb=args.lb,
        connect_timeout=args.connect_timeout,
        retries=args.retries,
        eject_after=args.eject_after,
        wait_for_backends=args.wait_for_backends,
        drain_timeout=args.drain_timeout,
        idle_timeout=args.idle_timeout,
        max_conns=args.max_conns,
        reuse_port=getattr(args, "reuse_port", False) or getattr(args, "workers", 1) > 1,
    )


def worker_cpus(args: argparse.Namespace) -> list[set[int]]:
    """Each worker's CPUs under --cpu-affinity auto (first: this process); [] when not binding."""
    if getattr(args, "cpu_affinity", "auto") != "auto" or args.workers <= 1:
        return []
    cpus = allowed_cpus()
    if len(cpus) <= 1:
        return []
    return cpu_shares(cpus, args.workers)


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """One extra sidecar worker: the same routes and balancer flags, no admin, shared ports."""
    return worker_argv("ambassador", args,
                       values=("lb", "connect_timeout", "retries", "eject_after", "wait_for_backends",
                               "drain_timeout", "idle_timeout", "max_conns"),
                       lists=("route",))


async def run(args: argparse.Namespace) -> int:
    """Start the routes (and admin), then serve until cancelled."""
    if args.inject:
        return await run_injector(args)
    if not args.route:
        raise ConfigError("--route: at least one route is needed, e.g. --route 127.0.0.1:6379=redis "
                          "or --route 6379=10.0.0.5:6379,10.0.0.6:6379 (or --inject for host mode)")
    specs = [parse_route(text) for text in args.route]
    check_workers(args.workers)
    if args.workers > 1:
        for spec in specs:
            if spec.listen_port == 0:
                raise ConfigError(f"--route {spec.text!r}: --workers needs fixed LISTEN ports "
                                  "(port 0 picks a different one per process)")
    options = options_from_args(args)
    admin_addr = parse_hostport(args.admin, flag="--admin", example_port=9901) if args.admin else None
    catalog = None
    if any(s.service for s in specs):
        # read-only client on h11: aiohttp + py-consul would add ~20 MB to every sidecar
        from waypost.catalog.reader import CatalogReader

        catalog = CatalogReader(catalog_config_from_args(args))
    ambassador = Ambassador(specs, catalog, options)
    admin: Any = None
    workers = Workers()
    try:
        await ambassador.start()
        if args.workers > 1:
            shares = worker_cpus(args)
            await workers.start(_worker_argv(args), args.workers - 1, shares[1:])
            if shares and bind_process(shares[0]):
                log.info("%d worker processes share the route ports, bound to CPUs %s", args.workers,
                         " | ".join(format_cpus(s) for s in shares))
            else:
                log.info("%d worker processes share the route ports", args.workers)
        if admin_addr is not None:
            from waypost.ambassador.admin import AdminServer  # aiohttp costs ~15 MB: only when asked

            admin = AdminServer(ambassador, admin_addr[0], admin_addr[1], token=args.admin_token)
            try:
                await admin.start()
            except OSError as exc:
                in_use = " (in use)" if exc.errno == errno.EADDRINUSE else ""
                raise ConfigError(f"--admin {args.admin!r}: cannot listen: {exc.strerror or exc}{in_use}") from None
            log.info("admin on %s (/metrics, /healthz, /v1/routes)", admin.url)
        log.info("ambassador ready: %d route(s), --lb %s, up to %d connections", len(ambassador.routes),
                 options.lb, ambassador.limiter.limit)
        await asyncio.Event().wait()
    finally:
        await workers.stop()
        if admin is not None:
            await admin.stop()
        await ambassador.stop()
        if catalog is not None:
            await catalog.close()
    return 0


async def run_injector(args: argparse.Namespace) -> int:
    """Host mode: attach ambassadors to labelled containers until cancelled; 2 when not permitted."""
    from waypost.ambassador.inject import Injector
    from waypost.catalog import CatalogClient

    if args.route:
        raise ConfigError("--route and --inject don't mix: run the sidecar routes in their own process")
    if getattr(args, "workers", 1) != 1:
        raise ConfigError("--workers is for sidecar routes; --inject serves every container from one process")
    options = options_from_args(args)
    options.strict_services = False
    catalog = CatalogClient(catalog_config_from_args(args))
    injector = Injector(catalog, options, docker_url=args.docker, label=args.inject_label)
    try:
        if not await injector.start():
            return 2  # the reason was logged once, clearly, by start()
        log.info("injecting ambassadors into containers labelled %s (catalog %s)", args.inject_label, catalog.url)
        await asyncio.Event().wait()
        return 0
    finally:
        await injector.stop()
        await catalog.close()
