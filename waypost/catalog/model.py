"""The types every component passes around: what a service instance is, and how to register one.

The data path is docker event → :class:`ServiceDef` → catalog → watch → :class:`Instance` sets
that DNS answers and ambassador backends are made from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"
MAINTENANCE = "maintenance"
STATUS_ORDER = {PASSING: 0, WARNING: 1, CRITICAL: 2, MAINTENANCE: 3}
DEFAULT_WEIGHTS = (1, 1)  # Consul's Service.Weights when a registration has none: Passing 1, Warning 1
# Meta Waypost's registrator adds: the port the service listens on inside its container (the
# registered port is the published one unless --internal)
CONTAINER_PORT_META = "waypost-container-port"


def worst_status(statuses: list[str]) -> str:
    """Aggregate check statuses the way Consul does: the worst one wins, passing when none."""
    worst = PASSING
    for status in statuses:
        if STATUS_ORDER.get(status, 2) > STATUS_ORDER[worst]:
            worst = status
    return worst


@dataclass(frozen=True, slots=True)
class Instance:
    """One healthy (or not) endpoint of a service, as read from the catalog."""

    id: str
    service: str
    address: str
    port: int
    node: str = ""
    node_address: str = ""
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()
    status: str = PASSING
    weights: tuple[int, int] = DEFAULT_WEIGHTS  # (Passing, Warning) from the service's Weights

    @property
    def endpoint(self) -> tuple[str, int]:
        """The (host, port) a client connects to."""
        return (self.address or self.node_address, self.port)

    @property
    def dial_port(self) -> int:
        """The port an app dials for this service when it names none: the container's own port
        (``waypost-container-port`` Meta, so ``-p 32768:6379`` gives 6379), else the registered port."""
        for key, value in self.meta:
            if key == CONTAINER_PORT_META:
                if value.isascii() and value.isdigit() and 0 < int(value) <= 65535:
                    return int(value)
                break
        return self.port

    @property
    def weight(self) -> int:
        """The SRV weight Consul gives this instance: Weights.Passing when passing, Weights.Warning when
        warning, 0 when critical or in maintenance."""
        if self.status == PASSING:
            return self.weights[0]
        if self.status == WARNING:
            return self.weights[1]
        return 0 if self.status in (CRITICAL, MAINTENANCE) else 1

    @classmethod
    def from_health_entry(cls, entry: dict[str, Any]) -> Instance:
        """Build from one element of Consul's `/v1/health/service/:name` answer."""
        node = entry.get("Node") or {}
        svc = entry.get("Service") or {}
        checks = entry.get("Checks") or []
        status = worst_status([c.get("Status", CRITICAL) for c in checks])
        return cls(
            id=svc.get("ID", ""),
            service=svc.get("Service", ""),
            address=svc.get("Address") or node.get("Address", ""),
            port=int(svc.get("Port") or 0),
            node=node.get("Node", ""),
            node_address=node.get("Address", ""),
            tags=tuple(svc.get("Tags") or ()),
            meta=tuple(sorted((svc.get("Meta") or {}).items())),
            status=status,
            weights=parse_weights(svc.get("Weights")),
        )


def parse_weights(raw: Any) -> tuple[int, int]:
    """(Passing, Warning) from a service's ``Weights`` object; a missing one (or field) is Consul's 1."""
    if not isinstance(raw, dict):
        return DEFAULT_WEIGHTS
    return _weight(raw.get("Passing"), DEFAULT_WEIGHTS[0]), _weight(raw.get("Warning"), DEFAULT_WEIGHTS[1])


def _weight(value: Any, default: int) -> int:
    """One weight as an SRV record can carry it (0-65535); anything not a number is the default."""
    if value is None or isinstance(value, bool):
        return default
    try:
        return min(max(int(value), 0), 0xFFFF)
    except (TypeError, ValueError, OverflowError):
        return default


@dataclass(frozen=True, slots=True)
class CheckDef:
    """A health check attached to a service registration.

    ``kind`` is ``http``, ``tcp`` or ``ttl``; ``target`` is the URL (http), ``host:port`` (tcp)
    or empty (ttl). Durations are Consul duration strings such as ``"10s"``.
    """

    kind: str
    target: str = ""
    interval: str = "10s"
    timeout: str = ""
    ttl: str = ""
    deregister_after: str = ""
    initial_status: str = ""
    tls_skip_verify: bool = False
    check_id: str = ""
    name: str = ""

    def to_consul(self) -> dict[str, Any]:
        """The check as Consul's agent/service/register `Checks` element."""
        body: dict[str, Any] = {}
        if self.check_id:
            body["CheckID"] = self.check_id
        if self.name:
            body["Name"] = self.name
        if self.kind == "http":
            body["HTTP"] = self.target
            body["Interval"] = self.interval
            if self.tls_skip_verify:
                body["TLSSkipVerify"] = True
        elif self.kind == "tcp":
            body["TCP"] = self.target
            body["Interval"] = self.interval
        elif self.kind == "ttl":
            body["TTL"] = self.ttl or self.interval
        else:
            raise ValueError(f"unknown check kind {self.kind!r}: use http, tcp or ttl")
        if self.timeout and self.kind != "ttl":
            body["Timeout"] = self.timeout
        if self.deregister_after:
            body["DeregisterCriticalServiceAfter"] = self.deregister_after
        if self.initial_status:
            body["Status"] = self.initial_status
        return body


@dataclass(frozen=True, slots=True)
class ServiceDef:
    """What a component wants registered in the catalog for one endpoint."""

    id: str
    name: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()
    checks: tuple[CheckDef, ...] = field(default=())

    @property
    def meta_dict(self) -> dict[str, str]:
        return dict(self.meta)

    def to_consul(self) -> dict[str, Any]:
        """The body of `PUT /v1/agent/service/register`."""
        body: dict[str, Any] = {
            "ID": self.id,
            "Name": self.name,
            "Address": self.address,
            "Port": self.port,
            "Tags": list(self.tags),
            "Meta": dict(self.meta),
        }
        if self.checks:
            body["Checks"] = [c.to_consul() for c in self.checks]
        return body

    @classmethod
    def from_agent_service(cls, svc: dict[str, Any]) -> ServiceDef:
        """Build from one value of `/v1/agent/services` (checks are not included there)."""
        return cls(
            id=svc.get("ID", ""),
            name=svc.get("Service", ""),
            address=svc.get("Address", ""),
            port=int(svc.get("Port") or 0),
            tags=tuple(svc.get("Tags") or ()),
            meta=tuple(sorted((svc.get("Meta") or {}).items())),
        )

    def same_registration(self, other: ServiceDef) -> bool:
        """True when `other` (read back from the catalog) matches this definition, checks aside."""
        return (
            self.id == other.id
            and self.name == other.name
            and self.address == other.address
            and self.port == other.port
            and tuple(self.tags) == tuple(other.tags)
            and dict(self.meta) == dict(other.meta)
        )


def path_segment(identifier: str) -> str:
    """An ID safe to put in a URL path (py-consul quotes it but keeps '/', so '../' could escape)."""
    if not identifier or "/" in identifier or identifier in (".", ".."):
        raise ValueError(f"ID {identifier!r} can't be used in a catalog URL: it must be non-empty, "
                         "without '/', and not '.' or '..'")
    return identifier


def instances_from_health(entries: list[dict[str, Any]]) -> list[Instance]:
    """Turn a health/service answer into instances, sorted by ID so equal sets compare equal."""
    return sorted((Instance.from_health_entry(e) for e in entries), key=lambda i: i.id)
