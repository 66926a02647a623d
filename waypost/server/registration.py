"""Turn Consul registration bodies (agent service/check register, catalog register) into records.

Validation follows Consul's rules and wording; what Consul accepts but this catalog cannot do
(script, gRPC, Docker, alias… checks; TLSServerName; Connect proxies and sidecars) is a 400 that says so.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from waypost.server.http_util import Fields, bad_request, format_duration
from waypost.server.store import CRITICAL, SERF_CHECK_ID, VALID_STATUSES

OUTPUT_MAX = 4096  # Consul's default check output size (checks.DefaultBufSize)

UNSUPPORTED_CHECK_FIELDS = {
    "args": "script", "scriptargs": "script", "script": "script", "dockercontainerid": "Docker",
    "grpc": "gRPC", "h2ping": "H2PING", "udp": "UDP", "aliasnode": "alias", "aliasservice": "alias",
    "osservice": "OS service",
}
# check options Consul accepts that this catalog cannot honour: a 400 naming the field, never ignored
UNSUPPORTED_CHECK_OPTIONS = ("TLSServerName",)
META_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
META_MAX_PAIRS = 64
META_KEY_MAX = 128
META_VALUE_MAX = 512
STATUS_MESSAGE = "Status for checks must 'passing', 'warning', 'critical'"


def validate_meta(meta: dict[str, str]) -> None:
    """Consul's ValidateServiceMetadata (same limits and messages)."""
    if len(meta) > META_MAX_PAIRS:
        raise bad_request(f"Invalid Service Meta: Node metadata cannot contain more than {META_MAX_PAIRS} "
                          "key/value pairs")
    for key, value in meta.items():
        if key == "":
            raise bad_request("Invalid Service Meta: Key cannot be blank")
        if not META_KEY.match(key):
            raise bad_request(f"Invalid Service Meta: Key contains invalid characters: {key!r} "
                              "(use letters, digits, '_' and '-')")
        if len(key) > META_KEY_MAX:
            raise bad_request(f"Invalid Service Meta: Key is too long (limit: {META_KEY_MAX} characters)")
        if key.startswith("consul-"):
            raise bad_request("Invalid Service Meta: Key prefix 'consul-' is reserved for internal use")
        if len(value) > META_VALUE_MAX:
            raise bad_request(f"Invalid Service Meta: Value is too long (limit: {META_VALUE_MAX} characters)")


def _is_any_address(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def _empty_check(f: Fields) -> bool:
    return not any(f.has(name) for name in ("HTTP", "TCP", "TTL", "Interval", "CheckID", "ID", "Name",
                                            "Args", "ScriptArgs", "Script", "GRPC", "DockerContainerID",
                                            "H2PING", "UDP", "AliasService", "AliasNode", "OSService"))


def build_check(f: Fields, node: str, default_id: str, default_name: str, service: dict[str, Any] | None,
                status_message: str = STATUS_MESSAGE) -> tuple[dict[str, Any], dict[str, Any]]:
    """One agent check definition → (HealthCheck record, runner definition)."""
    for field_name, kind in UNSUPPORTED_CHECK_FIELDS.items():
        if f.has(field_name) and f.raw(field_name) not in ("", [], False):
            raise bad_request(f"Invalid check: {kind} checks are not supported by the waypost catalog "
                              "(use HTTP, TCP or TTL checks)")
    for option in UNSUPPORTED_CHECK_OPTIONS:
        if f.has(option) and f.raw(option) not in ("", [], False):
            raise bad_request(f"Invalid check: {option} is not supported by the waypost catalog")
    http = f.str("HTTP")
    tcp = f.str("TCP")
    interval = f.duration("Interval")
    timeout = f.duration("Timeout")
    ttl = f.duration("TTL")
    deregister_after = f.duration("DeregisterCriticalServiceAfter")
    status = f.str("Status")
    if status and status not in VALID_STATUSES:
        raise bad_request(status_message)
    if http and tcp:
        raise bad_request("Invalid check: a check takes one of HTTP or TCP, not both")
    if interval > 0 and ttl > 0:
        raise bad_request("Invalid check: Interval and TTL cannot both be specified")
    if (http or tcp) and interval <= 0:
        raise bad_request("Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP or UDP checks")
    if not (http or tcp) and ttl <= 0:
        raise bad_request("Invalid check: TTL must be > 0 for TTL checks")
    kind = "http" if http else "tcp" if tcp else "ttl"
    header: dict[str, list[str]] = {}
    raw_header = f.raw("Header")
    if raw_header is not None:
        if not isinstance(raw_header, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in raw_header.values()):
            raise bad_request(f"Request decode failed: {f.where}.Header: expected an object of string "
                              'lists, e.g. {"X-Token": ["abc"]}')
        header = raw_header
    definition = {
        "Type": kind,
        "HTTP": http,
        "Method": f.str("Method"),
        "Header": header,
        "Body": f.str("Body"),
        "TLSSkipVerify": f.bool("TLSSkipVerify"),
        "TCP": tcp,
        "Interval": interval,
        "Timeout": timeout,
        "TTL": ttl,
        "DeregisterCriticalServiceAfter": deregister_after,
        "DisableRedirects": f.bool("DisableRedirects"),
        "OutputMaxSize": _output_max_size(f),
        **_thresholds(f),
    }
    check_id = f.str("CheckID") or f.str("ID") or default_id
    if check_id == SERF_CHECK_ID:
        raise bad_request(f'Invalid check: CheckID "{SERF_CHECK_ID}" is the node\'s liveness check, which the '
                          "catalog manages; give the check another ID")
    record = {
        "Node": node,
        "CheckID": check_id,
        "Name": f.str("Name") or default_name,
        "Status": status or CRITICAL,
        "Notes": f.str("Notes"),
        "Output": "",
        "ServiceID": service["ID"] if service else "",
        "ServiceName": service["Service"] if service else "",
        "ServiceTags": list(service["Tags"]) if service else [],
        "Type": kind,
        "Interval": format_duration(interval) if interval else "",
        "Timeout": format_duration(timeout) if timeout else "",
        "ExposedPort": 0,
        "Definition": {
            "Interval": format_duration(interval),
            "Timeout": format_duration(timeout),
            "DeregisterCriticalServiceAfter": format_duration(deregister_after),
            "HTTP": http,
            "Header": header or None,
            "Method": definition["Method"],
            "Body": definition["Body"],
            "TLSServerName": "",
            "TLSSkipVerify": definition["TLSSkipVerify"],
            "TCP": tcp,
        },
        "_explicit_status": bool(status),
    }
    return record, definition


def _output_max_size(f: Fields) -> int:
    """Consul's OutputMaxSize: 0 means its default (4096 bytes); negative is refused."""
    size = f.int("OutputMaxSize")
    if size < 0:
        raise bad_request("Invalid check: OutputMaxSize must be positive")
    return size or OUTPUT_MAX


def _thresholds(f: Fields) -> dict[str, int]:
    """The StatusHandler counters; FailuresBeforeWarning defaults to FailuresBeforeCritical."""
    out = {name: f.int(name) for name in ("SuccessBeforePassing", "FailuresBeforeCritical",
                                          "FailuresBeforeWarning")}
    for name, value in out.items():
        if value < 0:
            raise bad_request(f"Invalid check: {name} must be >= 0")
    if not out["FailuresBeforeWarning"]:
        out["FailuresBeforeWarning"] = out["FailuresBeforeCritical"]
    return out


def _reject_connect(f: Fields) -> None:
    connect = f.raw("Connect")
    if connect in (None, {}):
        return
    what = "Connect.SidecarService" if isinstance(connect, dict) and any(
        k.lower().replace("_", "") == "sidecarservice" for k in connect) else "Connect"
    raise bad_request(f"Invalid service: {what} is not supported by the waypost catalog (no Connect service mesh)")


def build_service(f: Fields) -> dict[str, Any]:
    """The service part of a registration (agent body or catalog ``Service``)."""
    name = f.str("Name") or f.str("Service")
    if f.str("Kind"):
        raise bad_request(f"Invalid service Kind {f.str('Kind')!r}: the waypost catalog supports only "
                          "typical services (no Connect proxies or gateways)")
    _reject_connect(f)
    address = f.str("Address")
    if _is_any_address(address):
        raise bad_request("Invalid service address")
    port = f.int("Port")
    if not 0 <= port <= 65535:
        raise bad_request(f"Invalid service port {port}: use 0-65535")
    meta = f.str_map("Meta")
    validate_meta(meta)
    tagged = {key: {"Address": entry.str("Address"), "Port": entry.int("Port")}
              for key, entry in f.obj_map("TaggedAddresses").items()}
    weights = {"Passing": 1, "Warning": 1}
    raw_weights = f.obj("Weights")
    if raw_weights is not None:
        weights = {"Passing": raw_weights.int("Passing"), "Warning": raw_weights.int("Warning")}
        if weights["Passing"] <= 0:
            raise bad_request("Invalid Weights: Passing must be greater than 0")
        if weights["Warning"] < 0:
            raise bad_request("Invalid Weights: Warning must be greater or equal than 0")
    return {
        "Kind": "",
        "ID": f.str("ID") or name,
        "Service": name,
        "Tags": f.str_list("Tags"),
        "Address": address,
        "Meta": meta,
        "Port": port,
        "TaggedAddresses": tagged,
        "Weights": weights,
        "EnableTagOverride": f.bool("EnableTagOverride"),
    }


def _ip_family(address: str) -> str | None:
    """``"ipv4"``/``"ipv6"`` for an IP address as Go's net.ParseIP reads it, else None."""
    if "%" in address:  # ParseIP takes no IPv6 zone
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return "ipv6"
    return "ipv4"  # Go's To4() also accepts IPv4-mapped IPv6


def add_default_tagged_addresses(svc: dict[str, Any]) -> None:
    """Consul's addServiceInternal: an IP ``Address`` is also the service's lan_/wan_ tagged
    address of its family, unless the registration gives those keys itself."""
    family = _ip_family(svc["Address"])
    if family is None:
        return
    for key in (f"lan_{family}", f"wan_{family}"):
        svc["TaggedAddresses"].setdefault(key, {"Address": svc["Address"], "Port": svc["Port"]})


def agent_service_registration(body: Any, node: str) -> tuple[dict[str, Any],
                                                              list[tuple[dict[str, Any], dict[str, Any]]]]:
    """``PUT /v1/agent/service/register`` body → (service record, [(check, definition)…])."""
    if not isinstance(body, dict):
        raise bad_request("Request decode failed: the body must be a JSON object (a service definition)")
    f = Fields(body, "ServiceDefinition")
    if not (f.str("Name")):
        raise bad_request("Missing service name")
    svc = build_service(f)
    add_default_tagged_addresses(svc)
    check_fields = []
    single = f.obj("Check")
    if single is not None and not _empty_check(single):
        check_fields.append(single)
    check_fields.extend(c for c in f.obj_list("Checks") if not _empty_check(c))
    checks = []
    for n, cf in enumerate(check_fields, start=1):
        default_id = f"service:{svc['ID']}" + (f":{n}" if len(check_fields) > 1 else "")
        checks.append(build_check(cf, node, default_id, f"Service '{svc['Service']}' check", svc))
    if len({c["CheckID"] for c, _ in checks}) != len(checks):
        raise bad_request("Invalid check: two checks of this service have the same CheckID")
    return svc, checks


def catalog_check(f: Fields, node: str, services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A ``Check``/``Checks`` element of ``/v1/catalog/register`` (recorded, not run)."""
    check_id = f.str("CheckID") or f.str("Name")
    if not check_id:
        raise bad_request("Missing check ID: give the check a CheckID or Name")
    check_node = f.str("Node")
    if check_node and check_node.lower() != node.lower():
        raise bad_request(f"Node '{check_node}' for check '{check_id}' doesn't match register request node "
                          f"'{node}'")
    status = f.str("Status") or CRITICAL
    if status not in VALID_STATUSES:
        raise bad_request(STATUS_MESSAGE)
    service_id = f.str("ServiceID")
    svc = services.get(service_id) if service_id else None
    if service_id and svc is None:
        raise bad_request(f"Unknown service ID {service_id!r} for check {check_id!r}: register the service "
                          "first or in the same request")
    definition = f.raw("Definition") if isinstance(f.raw("Definition"), dict) else {}
    return {
        "Node": node,
        "CheckID": check_id,
        "Name": f.str("Name") or check_id,
        "Status": status,
        "Notes": f.str("Notes"),
        "Output": f.str("Output"),
        "ServiceID": service_id,
        "ServiceName": svc["Service"] if svc else "",
        "ServiceTags": list(svc["Tags"]) if svc else [],
        "Type": f.str("Type"),
        "Interval": f.str("Interval"),
        "Timeout": f.str("Timeout"),
        "ExposedPort": 0,
        "Definition": definition,
    }
