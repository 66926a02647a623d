"""`waypost registrator`: register this Docker host's containers in the catalog (gliderlabs-compatible).

Flags follow gliderlabs/registrator's (``-ip`` → ``--ip`` …); every flag also reads
``WAYPOST_<FLAG>`` (e.g. ``WAYPOST_RESYNC=60``). A gliderlabs-style registry URI
(``consul://HOST:PORT``) may be given as the positional argument instead of ``--catalog``, and
its boolean flags take Go's ``-internal=false`` form too.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys
from collections.abc import Callable, Sequence

from waypost.catalog import CatalogClient
from waypost.config import ConfigError, add_catalog_arguments, catalog_config_from_args

from .metadata import split_escaped
from .options import DEREGISTER_MODES, RegistratorOptions
from .runner import CatalogUnavailable, Registrator

log = logging.getLogger("waypost.registrator")


# gliderlabs/registrator's Go-style spellings, accepted by `waypost registrator` so an old command
# line keeps working (Go's flag package takes -flag and --flag alike)
GLIDERLABS_SPELLINGS = {
    "--ip": "-ip", "--internal": "-internal", "--explicit": "-explicit", "--tags": "-tags",
    "--resync": "-resync", "--cleanup": "-cleanup", "--deregister": "-deregister",
    "--retry-attempts": "-retry-attempts", "--retry-interval": "-retry-interval",
    "--use-ip-from-label": "-useIpFromLabel",
}
# gliderlabs flags with no job here: accepted, and a warning says why
UNNEEDED_GLIDERLABS_FLAGS = ("-ttl", "-ttl-refresh")
# gliderlabs' boolean flags: Go's flag package also takes -internal=false, -cleanup=1 …
GLIDERLABS_BOOL_FLAGS = ("--internal", "--explicit", "--cleanup")
# the words Go's strconv.ParseBool accepts
GO_BOOL_WORDS = {word: True for word in ("1", "t", "T", "TRUE", "true", "True")} | {
    word: False for word in ("0", "f", "F", "FALSE", "false", "False")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `waypost registrator` flags (gliderlabs' single-dash spellings accepted too)."""
    parser.add_argument("registry", nargs="?", metavar="REGISTRY_URI", default=None,
                        help="gliderlabs-style registry URI, e.g. consul://127.0.0.1:8500 (same as --catalog)")
    group = parser.add_argument_group("registrator")
    group.add_argument("--ip", GLIDERLABS_SPELLINGS["--ip"], default="", metavar="IP",
                       help="address to register for published ports (default: this host's routable IP)")
    group.add_argument("--node", default="", metavar="NAME",
                       help="this host's identity in service IDs and the waypost-node Meta marker "
                            "(default: the Docker engine's host name)")
    accept_go_bool_values(parser, add_registrator_flags(group, gliderlabs_spellings=True))
    for flag in UNNEEDED_GLIDERLABS_FLAGS:
        group.add_argument(flag, dest=f"gliderlabs_{flag.strip('-').replace('-', '_')}", default=None,
                           metavar="N", help=argparse.SUPPRESS)
    add_catalog_arguments(parser)


def add_registrator_flags(group: argparse._ActionsContainer, gliderlabs_spellings: bool = False) -> dict[str, str]:
    """The registrator's own flags, shared with `waypost up` (which owns --ip, --node, --catalog).

    With `gliderlabs_spellings`, returns each spelling of gliderlabs' boolean flags → its dest, for
    :func:`accept_go_bool_values` (else nothing: `waypost up` keeps plain on/off flags).
    """

    def names(flag: str) -> tuple[str, ...]:
        alias = GLIDERLABS_SPELLINGS.get(flag) if gliderlabs_spellings else None
        return (flag, alias) if alias else (flag,)

    group.add_argument(*names("--internal"), action="store_true",
                       help="register exposed ports at the container's own IP instead of published ports")
    group.add_argument("--network", default="", metavar="NAME",
                       help="with --internal: the Docker network whose IP to register")
    group.add_argument(*names("--explicit"), action="store_true",
                       help="only register ports that have SERVICE_NAME or SERVICE_<port>_NAME")
    group.add_argument(*names("--tags"), default="", metavar="LIST",
                       help="comma list of tags added to every service (\\, escapes a comma; {{.Config.X}} templates)")
    group.add_argument(*names("--resync"), type=float, default=0.0, metavar="SECONDS",
                       help="also compare everything every SECONDS (0: only on start and reconnect)")
    group.add_argument(*names("--cleanup"), action="store_true",
                       help="also remove this node's dangling gliderlabs-style registrations, and "
                            "on-success-kept ones once the container stopped")
    group.add_argument(*names("--deregister"), default="always", choices=DEREGISTER_MODES,
                       help="when a container exits: always deregister, or only on-success (exit 0 or a signal)")
    group.add_argument(*names("--retry-attempts"), type=int, default=-1, metavar="N",
                       help="at start, how many times to retry reaching the catalog (-1: forever)")
    group.add_argument(*names("--retry-interval"), type=int, default=2000, metavar="MS",
                       help="milliseconds between those retries; also the cap of runtime retry backoff")
    group.add_argument(*names("--use-ip-from-label"), default="", metavar="LABEL",
                       help="register the IP found in this container label (e.g. an IPAM-assigned address)")
    group.add_argument("--deregister-on-exit", action="store_true",
                       help="on shutdown, remove this node's registrations (default: leave them)")
    group.add_argument("--no-docker-health", dest="docker_health", action="store_false",
                       help="don't turn a container's Docker HEALTHCHECK status into a check (by default an "
                            "instance is critical, so not routed, until Docker calls it healthy)")
    group.add_argument("--docker", default=None, metavar="URL",
                       help="Docker engine URL (default: $DOCKER_HOST, else the local socket)")
    if not gliderlabs_spellings:
        return {}
    return {spelling: flag[2:].replace("-", "_") for flag in GLIDERLABS_BOOL_FLAGS for spelling in names(flag)}


def parse_go_bool(spelling: str, value: str) -> bool:
    """`value` of a Go-style ``-flag=value`` as Go's strconv.ParseBool reads it (ValueError if not)."""
    try:
        return GO_BOOL_WORDS[value]
    except KeyError:
        accepted = ", ".join(GO_BOOL_WORDS)
        raise ValueError(f"argument {spelling}: invalid boolean value {value!r} (write {spelling} alone "
                         f"for true, or {spelling}=VALUE with VALUE one of {accepted})") from None


def split_go_bool_values(argv: Sequence[str], spellings: dict[str, str]) -> tuple[list[str], dict[str, bool]]:
    """Take the ``-flag=value`` words of boolean `spellings` (spelling → dest) out of `argv`.

    Returns the other words, and each such flag's dest → its value, as its last occurrence says (a
    bare ``-flag`` after ``-flag=false`` means true again, as in Go). Words after ``--`` are left alone.
    """
    rest: list[str] = []
    values: dict[str, bool] = {}
    for index, word in enumerate(argv):
        if word == "--":
            rest.extend(argv[index:])
            break
        spelling, sep, value = word.partition("=")
        if spelling not in spellings:
            rest.append(word)
        elif sep:
            values[spellings[spelling]] = parse_go_bool(spelling, value)
        else:
            rest.append(word)
            if spellings[spelling] in values:
                values[spellings[spelling]] = True
    return rest, values


def accept_go_bool_values(parser: argparse.ArgumentParser, spellings: dict[str, str]) -> None:
    """Let `parser` take ``-flag=true|false`` … for the on/off `spellings` (spelling → dest).

    argparse cannot give one option both a bare form and an ``=value`` form without also letting
    it swallow the next word (``-internal consul://…`` must stay a flag and the registry URI), so
    those words are taken out before parsing and their values set after it; a bad value is an
    argparse error naming the flag and the accepted values.
    """
    if not spellings:
        return
    parse_known_args: Callable[..., tuple[argparse.Namespace, list[str]]] = parser.parse_known_args

    def parse_with_go_bools(args: Sequence[str] | None = None,
                            namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        try:
            rest, values = split_go_bool_values(sys.argv[1:] if args is None else list(args), spellings)
        except ValueError as exc:
            parser.error(str(exc))
        parsed, extras = parse_known_args(rest, namespace)
        for dest, value in values.items():
            setattr(parsed, dest, value)
        return parsed, extras

    parser.parse_known_args = parse_with_go_bools  # type: ignore[method-assign]


def options_from_args(args: argparse.Namespace) -> RegistratorOptions:
    """Validate the flags into :class:`RegistratorOptions` (raises :class:`ConfigError`)."""
    if args.retry_interval <= 0:
        raise ConfigError(f"--retry-interval {args.retry_interval}: must be a positive number of milliseconds")
    if args.retry_attempts < -1:
        raise ConfigError(f"--retry-attempts {args.retry_attempts}: use -1 (forever), 0 or a positive count")
    if args.resync < 0:
        raise ConfigError(f"--resync {args.resync}: use 0 (never) or a number of seconds")
    if args.ip:
        try:
            ipaddress.ip_address(args.ip)
        except ValueError:
            raise ConfigError(f"--ip {args.ip!r}: not an IP address; write e.g. --ip 192.0.2.10") from None
    for flag in UNNEEDED_GLIDERLABS_FLAGS:
        if getattr(args, f"gliderlabs_{flag.strip('-').replace('-', '_')}", None) is not None:
            log.warning("%s is gliderlabs' registration TTL; not needed here (Waypost reconciles with Docker on "
                        "start, reconnect and --resync, and --cleanup removes its orphans); ignored", flag)
    if args.network and not args.internal:
        log.warning("--network %s only matters with --internal; ignored", args.network)
    return RegistratorOptions(
        node=args.node,
        host_ip=args.ip,
        internal=args.internal,
        explicit=args.explicit,
        tags=tuple(split_escaped(args.tags or "")),
        resync=args.resync,
        cleanup=args.cleanup,
        deregister=args.deregister,
        retry_attempts=args.retry_attempts,
        retry_interval=args.retry_interval / 1000.0,
        use_ip_from_label=args.use_ip_from_label,
        network=args.network,
        deregister_on_exit=args.deregister_on_exit,
        docker_health=args.docker_health,
    )


async def run(args: argparse.Namespace) -> int:
    """Run until cancelled (SIGINT/SIGTERM); returns 1 when the catalog never answered."""
    if args.registry and not args.catalog:
        args.catalog = args.registry
    options = options_from_args(args)
    client = CatalogClient(catalog_config_from_args(args))
    registrator = Registrator(client, options, docker_url=args.docker)
    try:
        try:
            await registrator.start()
        except CatalogUnavailable as exc:
            log.error("%s", exc)
            return 1
        await asyncio.Event().wait()
        return 0
    finally:
        await registrator.stop()
        await client.close()
