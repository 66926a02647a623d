"""`waypost catalog`: run the embedded Consul-compatible catalog on its own.

Serves the Consul HTTP API subset Waypost and registrator use (agent, catalog, health, KV, status)
with blocking queries, HTTP/TCP/TTL checks and, with --data-dir, durable state.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import ssl

from waypost.config import ConfigError, is_loopback, parse_hostport

log = logging.getLogger("waypost.catalog")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `waypost catalog` flags."""
    parser.add_argument("--listen", metavar="ADDR", default="127.0.0.1:8500",
                        help="HOST:PORT to serve the HTTP API on; binding beyond loopback is logged as a warning")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="directory for the durable state (SQLite); without it the state is in memory only")
    parser.add_argument("--token", metavar="TOKEN", default=None,
                        help="require this token (X-Consul-Token, ?token= or Authorization: Bearer) for writes")
    parser.add_argument("--token-reads", action="store_true",
                        help="with --token, require the token for reads as well")
    parser.add_argument("--node", metavar="NAME", default=None,
                        help="this agent's node name; the host's name when unset")
    parser.add_argument("--datacenter", metavar="DC", default="dc1", help="datacenter name")
    parser.add_argument("--tls-cert", metavar="FILE", default=None,
                        help="serve HTTPS with this certificate chain (PEM); needs --tls-key")
    parser.add_argument("--tls-key", metavar="FILE", default=None, help="the private key of --tls-cert (PEM)")
    parser.add_argument("--advertise", metavar="IP", default=None,
                        help="this node's address in the catalog; the listen host (127.0.0.1 for a wildcard) when unset")


def _advertise_default(host: str) -> str:
    if host in ("", "0.0.0.0", "::", "localhost"):
        return "127.0.0.1"
    return host


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server TLS context from --tls-cert/--tls-key (None for plain HTTP)."""
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigError("--tls-cert and --tls-key go together: give both PEM files, or neither for plain HTTP")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--tls-cert {cert!r} / --tls-key {key!r}: cannot load them ({exc})") from None
    return context


async def run(args: argparse.Namespace) -> int:
    """Start the catalog, log where it listens, serve until cancelled, then stop cleanly."""
    from waypost.server.app import CatalogServer

    host, port = parse_hostport(args.listen, 8500, flag="--listen", example_port=8500)
    if args.token is not None and not args.token.strip():
        raise ConfigError("--token is empty (is the variable that should hold it unset?): give the token, "
                          "or leave --token out to run without one")
    if args.token_reads and not args.token:
        raise ConfigError("--token-reads needs --token TOKEN (the token readers must send)")
    if args.datacenter.strip() == "" or any(c.isspace() for c in args.datacenter):
        raise ConfigError(f"--datacenter {args.datacenter!r}: use a name without spaces, e.g. dc1")
    node = args.node or socket.gethostname() or "waypost"
    ssl_context = tls_context(args.tls_cert, args.tls_key)
    server = CatalogServer(host=host, port=port, data_dir=args.data_dir, token=args.token, node_name=node,
                           datacenter=args.datacenter, node_address=args.advertise or _advertise_default(host), ssl_context=ssl_context)
    server.token_reads = bool(args.token_reads)
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(str(exc.strerror or exc)) from None
    except Exception as exc:
        raise ConfigError(f"cannot start the catalog: {exc}") from None
    where = f"{server.url} (node {node}, datacenter {args.datacenter}, " + (
        f"data dir {args.data_dir}" if args.data_dir else "in memory: state is lost on exit") + (
        ", token required for writes" + (" and reads" if args.token_reads else "") if args.token else "") + ")"
    if is_loopback(host):
        log.info("catalog listening on %s", where)
    else:
        log.warning("catalog listening on %s — reachable beyond this host because --listen %s is not "
                    "loopback%s", where, args.listen, "" if args.token else "; consider --token")
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.shield(server.stop())
    return 0
