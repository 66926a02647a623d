"""`waypost dns`: Consul-style service names answered over UDP and TCP from an in-memory catalog view.

In a container, point the resolver at it and search the service domain, e.g. in compose::

    services:
      app:
        dns: [172.17.0.1]            # the host address waypost dns listens on
        dns_search: [service.consul]  # so plain `redis` resolves to redis.service.consul

(`waypost dns --listen 172.17.0.1:53 --recurse` keeps other names working for those containers.)
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from waypost.catalog.reader import CatalogReader
from waypost.config import ConfigError, add_catalog_arguments, catalog_config_from_args, parse_hostport
from waypost.dns.config import (
    DEFAULT_LISTEN,
    DEFAULT_RECURSION_FROM,
    DnsConfig,
    parse_cidrs,
    parse_domain,
    parse_recursors,
    parse_service_ttls,
    parse_ttl,
    resolv_conf_nameservers,
)
from waypost.dns.server import DnsServer
from waypost.dns.view import CatalogView
from waypost.listen import listening_socket
from waypost.workers import Workers, check_workers, worker_argv

log = logging.getLogger("waypost.dns")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `waypost dns` flags."""
    add_catalog_arguments(parser)
    g = parser.add_argument_group("dns")
    g.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT", help="UDP and TCP address to serve")
    add_answer_flags(g)
    g.add_argument("--workers", type=int, default=1, metavar="N",
                   help="processes sharing the port with SO_REUSEPORT (each follows the catalog)")
    g.add_argument("--metrics-listen", default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics")
    g.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)


def add_answer_flags(group: argparse._ActionsContainer) -> None:
    """What DNS answers and recursion flags, shared with `waypost up` (which owns the listen address)."""
    group.add_argument("--domain", default="consul", help="the domain answered from the catalog")
    group.add_argument("--datacenter", default="dc1", metavar="DC",
                       help="datacenter name accepted in <service>.service.<dc>[.dc].<domain>")
    group.add_argument("--recursor", action="append", metavar="HOST:PORT", default=[],
                       help="upstream for names outside the domain (repeatable, tried in order; "
                       "a SERVFAIL or REFUSED moves on to the next)")
    group.add_argument("--recurse", action="store_true",
                       help="forward names outside the domain to resolv.conf's nameservers when no --recursor")
    group.add_argument("--recursor-timeout", type=float, default=2.0, metavar="SECONDS",
                       help="time to wait for each upstream before trying the next")
    group.add_argument("--allow-recursion-from", action="append", metavar="CIDR", default=[],
                       help="clients allowed to recurse (repeatable; default: "
                       + ", ".join(DEFAULT_RECURSION_FROM) + ")")
    group.add_argument("--only-passing", action="store_true", help="drop instances in warning state too")
    group.add_argument("--service-ttl", action="append", metavar="TTL|NAME=TTL", default=[],
                       help="TTL of service records: '30' sets the default (0), 'web=5' or 'web*=5' one service")
    group.add_argument("--node-ttl", default="0", metavar="SECONDS", help="TTL of node and PTR records")
    group.add_argument("--soa-min-ttl", default="0", metavar="SECONDS", help="negative-caching TTL (SOA minimum)")
    group.add_argument("--a-record-limit", default="0", metavar="N", help="at most N A/AAAA records per answer (0: all)")


def config_from_args(args: argparse.Namespace) -> DnsConfig:
    """A :class:`DnsConfig` from the flags; bad values raise ConfigError naming the flag."""
    listen = parse_hostport(args.listen, flag="--listen")
    ttl, overrides = parse_service_ttls(args.service_ttl)
    recursors = parse_recursors(args.recursor)
    if not recursors and args.recurse:
        recursors = tuple(r for r in resolv_conf_nameservers() if r != listen)
        if not recursors:
            raise ConfigError("--recurse: /etc/resolv.conf lists no usable nameserver; give --recursor HOST:PORT")
    try:
        limit = int(args.a_record_limit)
    except ValueError:
        raise ConfigError(f"--a-record-limit {args.a_record_limit!r}: not a number; write e.g. 3 (0 = all)") from None
    if limit < 0:
        raise ConfigError(f"--a-record-limit {limit}: must be 0 (all) or more")
    check_workers(args.workers)
    if args.workers > 1 and listen[1] == 0:
        raise ConfigError("--workers needs a fixed --listen port (port 0 picks a different one per process)")
    if args.recursor_timeout <= 0:
        raise ConfigError(f"--recursor-timeout {args.recursor_timeout}: must be more than 0 seconds")
    allow = parse_cidrs(args.allow_recursion_from) if args.allow_recursion_from else None
    kwargs = {"allow_recursion_from": allow} if allow is not None else {}
    return DnsConfig(
        listen=listen,
        domain=parse_domain(args.domain),
        datacenter=parse_domain(args.datacenter, "--datacenter"),
        only_passing=args.only_passing,
        service_ttl=ttl,
        service_ttls=overrides,
        node_ttl=parse_ttl(args.node_ttl, "--node-ttl"),
        soa_min_ttl=parse_ttl(args.soa_min_ttl, "--soa-min-ttl"),
        a_record_limit=limit,
        recursors=recursors,
        recursor_timeout=args.recursor_timeout,
        workers=args.workers,
        **kwargs,
    )


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The command line of one extra worker: the same settings, one process, shared port."""
    return worker_argv("dns", args,
                       values=("listen", "domain", "datacenter", "recursor_timeout", "node_ttl", "soa_min_ttl",
                               "a_record_limit"),
                       lists=("recursor", "allow_recursion_from", "service_ttl"),
                       switches=("recurse", "only_passing"))


async def _serve_metrics(server: DnsServer, listen: str):  # type: ignore[no-untyped-def]
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    host, port = parse_hostport(listen, flag="--metrics-listen")

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(server.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, await listening_socket(host, port)).start()
    log.info("dns: metrics on http://%s:%d/metrics", host, port)
    return runner


async def run(args: argparse.Namespace) -> int:
    """Serve until cancelled."""
    config = config_from_args(args)
    client = CatalogReader(catalog_config_from_args(args))  # read-only: no aiohttp/py-consul
    view = CatalogView(client, only_passing=config.only_passing)
    server = DnsServer(config, view, reuse_port=args.reuse_port or config.workers > 1)
    workers = Workers()
    runner = None
    try:
        await view.start()
        await server.start()
        if args.metrics_listen:
            runner = await _serve_metrics(server, args.metrics_listen)
        if config.workers > 1:
            await workers.start(_worker_argv(args), config.workers - 1)
            log.info("dns: %d worker processes share port %d", config.workers, server.port)
        await asyncio.Event().wait()
        return 0
    finally:
        await workers.stop()
        if runner is not None:
            await runner.cleanup()
        await server.stop()
        await view.stop()
        await client.close()
