"""DNS settings: one frozen object built from flags (or directly by `waypost up` and tests)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from waypost.config import ConfigError, parse_hostport

DEFAULT_LISTEN = "127.0.0.1:8600"
# Loopback plus the private range Docker's bridge networks are carved from (172.17.0.0/16 ...).
DEFAULT_RECURSION_FROM = ("127.0.0.0/8", "::1/128", "172.16.0.0/12")
LABEL_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """Everything the DNS server needs to know besides the catalog view.

    ``service_ttls`` maps a service name (or a ``prefix*`` pattern) to its TTL; ``service_ttl`` is
    the default. ``recursors`` are ``(host, port)`` upstreams tried in order for names outside
    ``domain``; recursion is only done for clients in ``allow_recursion_from``.
    """

    listen: tuple[str, int] = ("127.0.0.1", 8600)
    domain: str = "consul"
    datacenter: str = "dc1"
    only_passing: bool = False
    service_ttl: int = 0
    service_ttls: tuple[tuple[str, int], ...] = ()
    node_ttl: int = 0
    soa_min_ttl: int = 0
    a_record_limit: int = 0
    recursors: tuple[tuple[str, int], ...] = ()
    recursor_timeout: float = 2.0
    allow_recursion_from: tuple[Network, ...] = field(
        default_factory=lambda: tuple(ipaddress.ip_network(n) for n in DEFAULT_RECURSION_FROM)
    )
    workers: int = 1
    orderings: int = 8

    def ttl_for(self, service: str) -> int:
        """The TTL of a service's records: exact override, then longest ``prefix*``, then default."""
        name = service.lower()
        best: tuple[int, int] | None = None
        for pattern, ttl in self.service_ttls:
            if pattern == name:
                return ttl
            if pattern.endswith("*") and name.startswith(pattern[:-1]):
                if best is None or len(pattern) > best[0]:
                    best = (len(pattern), ttl)
        return best[1] if best else self.service_ttl


def parse_domain(value: str, flag: str = "--domain") -> str:
    """A lower-case domain without the trailing dot; every label must be a valid DNS label."""
    text = value.strip().strip(".").lower()
    if not text:
        raise ConfigError(f"{flag} {value!r}: empty; write e.g. consul")
    for label in text.split("."):
        if not LABEL_RE.match(label):
            raise ConfigError(f"{flag} {value!r}: {label!r} is not a valid DNS label (letters, digits, '-')")
    return text


def parse_ttl(value: str | int, flag: str) -> int:
    """A TTL in seconds (0 … 2^31-1)."""
    try:
        ttl = int(str(value).strip().removesuffix("s"))
    except ValueError:
        raise ConfigError(f"{flag} {value!r}: not a number of seconds; write e.g. {flag} 30") from None
    if not 0 <= ttl <= 2**31 - 1:
        raise ConfigError(f"{flag} {value!r}: out of range 0-2147483647")
    return ttl


def parse_service_ttls(values: list[str] | None) -> tuple[int, tuple[tuple[str, int], ...]]:
    """``--service-ttl 30`` sets the default; ``--service-ttl web=5`` / ``web*=5`` override it."""
    default = 0
    overrides: list[tuple[str, int]] = []
    for raw in values or []:
        if "=" in raw:
            name, _, ttl = raw.partition("=")
            name = name.strip().lower()
            if not name or not LABEL_RE.match(name.removesuffix("*") or "x"):
                raise ConfigError(f"--service-ttl {raw!r}: {name!r} is not a service name; write web=5")
            overrides.append((name, parse_ttl(ttl, "--service-ttl")))
        else:
            default = parse_ttl(raw, "--service-ttl")
    return default, tuple(overrides)


def parse_cidrs(values: list[str] | None, flag: str = "--allow-recursion-from") -> tuple[Network, ...]:
    """CIDRs (or single addresses) a client address is matched against."""
    nets: list[Network] = []
    for raw in values or []:
        try:
            nets.append(ipaddress.ip_network(raw.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"{flag} {raw!r}: not a CIDR; write e.g. 172.16.0.0/12 or 10.0.0.5") from None
    return tuple(nets)


def parse_recursors(values: list[str] | None) -> tuple[tuple[str, int], ...]:
    """``HOST[:PORT]`` upstreams (port 53 by default); hosts must be IP addresses."""
    out: list[tuple[str, int]] = []
    for raw in values or []:
        host, port = parse_hostport(raw, default_port=53, flag="--recursor")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"--recursor {raw!r}: {host!r} is not an IP address; write e.g. 1.1.1.1:53") from None
        if port == 0:
            raise ConfigError(f"--recursor {raw!r}: port 0 cannot be queried; write e.g. {host}:53")
        out.append((host, port))
    return tuple(out)


def resolv_conf_nameservers(path: str = "/etc/resolv.conf") -> tuple[tuple[str, int], ...]:
    """The ``nameserver`` lines of the host's resolv.conf, as ``(ip, 53)``."""
    servers: list[tuple[str, int]] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    try:
                        ipaddress.ip_address(parts[1].split("%")[0])
                    except ValueError:
                        continue
                    servers.append((parts[1].split("%")[0], 53))
    except OSError:
        return ()
    return tuple(servers)
