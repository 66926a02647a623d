"""`waypost up`: everything for one Docker host in one process and one event loop.

The embedded catalog (or ``--catalog URL`` for a real Consul), the registrator, DNS, the
ambassador injector, and one HTTP port serving the catalog API, ``/metrics`` and a status page.
This is the one module that wires the components together; each reads the catalog only through
:mod:`waypost.catalog`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from waypost.ambassador.admin import AmbassadorCollector
from waypost.ambassador.cli import add_balancer_flags
from waypost.ambassador.cli import options_from_args as ambassador_options_from_args
from waypost.ambassador.connect import LABEL
from waypost.ambassador.inject import Injector
from waypost.catalog import CatalogClient
from waypost.config import (
    CatalogConfig,
    ConfigError,
    add_catalog_arguments,
    catalog_config_from_args,
    is_loopback,
    parse_hostport,
)
from waypost.dns.cli import add_answer_flags
from waypost.dns.cli import config_from_args as dns_config_from_args
from waypost.dns.server import DnsServer
from waypost.dns.view import CatalogView
from waypost.docker_events import DockerAPI, EventBridge
from waypost.listen import listening_socket
from waypost.registrator import Registrator
from waypost.registrator.cli import add_registrator_flags
from waypost.registrator.cli import options_from_args as registrator_options_from_args
from waypost.registrator.metrics import registrator_registry
from waypost.registrator.runner import CatalogUnavailable
from waypost.server.app import CatalogServer
from waypost.server.metrics import catalog_registry
from waypost.status import add_status_routes

log = logging.getLogger("waypost.up")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `waypost up` flags: its own, plus the components' flags that matter on one host."""
    g = parser.add_argument_group("waypost up")
    g.add_argument("--http", default="127.0.0.1:8500", metavar="HOST:PORT",
                   help="the one HTTP port: catalog API (when embedded), status page /, /metrics, /healthz")
    g.add_argument("--dns", default="127.0.0.1:8600", metavar="HOST:PORT",
                   help="UDP+TCP address of the DNS server ('off' to run without DNS)")
    g.add_argument("--ip", default="", metavar="IP",
                   help="address to register for published ports (default: the host's routable IP)")
    g.add_argument("--node", default="", metavar="NAME",
                   help="this host's node name in the catalog and in service IDs (default: the host's name)")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="keep the embedded catalog's state here (survives restarts); in memory when unset")
    g.add_argument("--token", default=None, metavar="TOKEN",
                   help="embedded catalog: writes need this X-Consul-Token (also sent by our own clients)")
    g.add_argument("--no-inject", action="store_true",
                   help=f"do not inject ambassadors into containers labelled {LABEL}")
    g.add_argument("--inject-label", default=LABEL, metavar="KEY",
                   help="the container label that asks for ambassadors (another key lets two waypost "
                        "instances share a host without attaching to each other's containers)")
    add_catalog_arguments(parser)
    reg = parser.add_argument_group("registrator")
    add_registrator_flags(reg)
    add_answer_flags(parser.add_argument_group("dns"))
    add_balancer_flags(parser.add_argument_group("injected ambassadors"))


async def node_name(args: argparse.Namespace) -> str:
    """``--node``, else the Docker engine's host name (the host's, even when waypost runs in a
    container), else this machine's host name; the catalog node and the registrator share it."""
    if args.node:
        return args.node
    docker = DockerAPI(args.docker)
    try:
        name = str((await asyncio.wait_for(docker.info(), 5)).get("Name") or "")
    except Exception:  # no engine yet: the registrator keeps retrying it
        name = ""
    finally:
        await docker.close()
    return name or socket.gethostname().split(".")[0] or "waypost"


class Host:
    """All of waypost on one host: built from the flags, started and stopped in order."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.http_host, self.http_port = parse_hostport(args.http, flag="--http", example_port=8500)
        external = args.catalog or os.environ.get("CONSUL_HTTP_ADDR")
        self.embedded: CatalogServer | None = None
        if external:
            self.catalog_config = catalog_config_from_args(args)
        else:
            self.embedded = CatalogServer(host=self.http_host, port=self.http_port, data_dir=args.data_dir,
                                          token=args.token, node_name=args.node,
                                          node_address=args.ip or "127.0.0.1")
            self.catalog_config = None  # known once the server is bound
        self.registrator_options = registrator_options_from_args(args)
        self.dns_config = None
        if args.dns.lower() != "off":
            ns = argparse.Namespace(**vars(args))
            ns.listen, ns.workers = args.dns, 1
            self.dns_config = dns_config_from_args(ns)
        self.ambassador_options = ambassador_options_from_args(args)
        self.ambassador_options.strict_services = False
        self.client: CatalogClient | None = None
        self.registrator: Registrator | None = None
        self.view: CatalogView | None = None
        self.dns: DnsServer | None = None
        self.injector: Injector | None = None
        self.events: EventBridge | None = None  # one Docker event stream for registrator and injector
        self._runner: web.AppRunner | None = None
        self.registries: list[CollectorRegistry] = []

    @property
    def http_url(self) -> str:
        host = f"[{self.http_host}]" if ":" in self.http_host else self.http_host
        return f"http://{host}:{self.http_port}"

    async def start(self) -> None:
        """Start every component; raises ConfigError (naming the flag) for unusable settings."""
        app = self.embedded.app if self.embedded is not None else web.Application()
        add_status_routes(app, self.status, self.registries, self.healthy)
        if self.embedded is not None:
            try:
                await self.embedded.start()
            except OSError as exc:
                raise ConfigError(f"--http {self.args.http}: cannot listen ({exc.strerror or exc}); "
                                  "pick another address or stop what holds the port") from None
            self.http_port = self.embedded.port
            self.catalog_config = CatalogConfig.from_url(self.embedded.url, token=self.args.token)
        else:
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            try:
                await web.SockSite(self._runner, await listening_socket(self.http_host, self.http_port)).start()
            except OSError as exc:
                raise ConfigError(f"--http {self.args.http}: cannot listen ({exc.strerror or exc})") from None
        for flag, host in (("--http", self.http_host), ("--dns", self.dns_config.listen[0] if self.dns_config else "")):
            if host and not is_loopback(host):
                log.warning("%s binds %s, beyond loopback: reachable from other machines", flag, host)
        assert self.catalog_config is not None
        self.client = CatalogClient(self.catalog_config)

        self.events = EventBridge(None, asyncio.get_running_loop(), self.args.docker)
        self.events.start()
        self.registrator = Registrator(self.client, self.registrator_options, docker_url=self.args.docker,
                                       events=self.events)
        try:
            await self.registrator.start()
        except CatalogUnavailable as exc:
            raise ConfigError(f"--catalog {self.catalog_config.url}: {exc}") from None
        self.registries.append(registrator_registry(self.registrator.status))
        if self.embedded is not None:
            self.registries.append(catalog_registry(self.embedded.store))

        self.view = CatalogView(self.client, only_passing=self.args.only_passing)
        await self.view.start()
        if self.dns_config is not None:
            self.dns = DnsServer(self.dns_config, self.view)
            try:
                await self.dns.start()
            except OSError as exc:
                raise ConfigError(f"--dns {self.args.dns}: cannot listen ({exc.strerror or exc})") from None
            self.registries.append(self.dns.registry)

        if not self.args.no_inject:
            self.injector = Injector(self.client, self.ambassador_options, docker_url=self.args.docker,
                                    label=self.args.inject_label, events=self.events)
            if await self.injector.start():
                registry = CollectorRegistry(auto_describe=False)
                registry.register(AmbassadorCollector(self.injector))  # type: ignore[arg-type]
                self.registries.append(registry)
        self.print_summary()

    async def stop(self) -> None:
        """Stop in reverse order; registrations stay (containers keep running)."""
        for component in (self.injector, self.dns, self.view, self.registrator):
            if component is not None:
                try:
                    await component.stop()
                except Exception:  # keep stopping the rest
                    log.exception("stopping %s failed", type(component).__name__)
        if self.events is not None:
            await self.events.stop()
        if self.client is not None:
            await self.client.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.embedded is not None:
            await self.embedded.stop()

    def healthy(self) -> bool:
        reg = self.registrator.status() if self.registrator else {}
        return bool(reg.get("catalog_reachable", True)) and not (self.view is not None and self.view.stale)

    def status(self) -> dict[str, Any]:
        """What the status page shows: services, ambassadors, DNS counters, registrator state."""
        services = []
        if self.view is not None:
            for name in sorted(self.view.everything):
                services.append({"name": name, "instances": [
                    {"id": i.id, "address": i.address, "port": i.port, "node": i.node, "status": i.status,
                     "tags": list(i.tags)} for i in self.view.everything[name]]})
        dns = None
        if self.dns is not None and self.view is not None:
            rcodes: dict[str, int] = {}
            for (_qtype, rcode), count in self.dns.stats.by_type_rcode().items():
                rcodes[rcode] = rcodes.get(rcode, 0) + count
            host, _ = self.dns_config.listen  # type: ignore[union-attr]
            dns = {"listen": f"{host}:{self.dns.port}", "queries": self.dns.stats.total, "rcodes": rcodes,
                   "stale": self.view.stale}
        return {
            "node": self.registrator.status().get("node") if self.registrator else "",
            "catalog": self.catalog_config.url if self.catalog_config else "",
            "embedded_catalog": self.embedded is not None,
            "services": services,
            "ambassadors": self.injector.snapshot() if self.injector else [],
            "injection": (self.injector.unavailable or "on") if self.injector else "off",
            "dns": dns,
            "registrator": self.registrator.status() if self.registrator else None,
        }

    def print_summary(self) -> None:
        """One short summary of what listens where."""
        assert self.catalog_config is not None
        where = (f"embedded, data in {self.args.data_dir}" if self.args.data_dir else "embedded, in memory") \
            if self.embedded else "external"
        reg = self.registrator.status() if self.registrator else {}
        lines = [
            f"waypost up on node {reg.get('node') or '?'}",
            f"  catalog      {self.catalog_config.url} ({where})",
            f"  status page  {self.http_url}/   metrics {self.http_url}/metrics",
            f"  dns          {self.dns_config.listen[0]}:{self.dns.port} udp+tcp, *.service.{self.dns_config.domain}"
            if self.dns and self.dns_config else "  dns          off",
            f"  registrator  published ports registered at "
            f"{reg.get('address') or (self.registrator.default_ip if self.registrator else '') or 'the node address'}"
            + (" (container IPs: --internal)" if self.registrator_options.internal else ""),
        ]
        if self.injector is None:
            lines.append("  ambassadors  injection off (--no-inject)")
        elif self.injector.unavailable:
            lines.append(f"  ambassadors  injection OFF: {self.injector.unavailable}")
        else:
            lines.append(f"  ambassadors  injected into containers labelled {self.injector.label}=NAME[:PORT][@SERVICE],…")
        print("\n".join(lines), file=sys.stdout, flush=True)


async def run(args: argparse.Namespace) -> int:
    """Run everything until cancelled (Ctrl-C / SIGTERM stops it cleanly)."""
    args.node = await node_name(args)
    host = Host(args)
    try:
        await host.start()
        await asyncio.Event().wait()
        return 0
    finally:
        await host.stop()
