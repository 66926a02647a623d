"""Container inspect → service definitions, following gliderlabs/registrator's rules. Pure: no I/O.

Rules (compatible with gliderlabs/registrator, with the differences noted):

- Metadata comes from ``SERVICE_*`` environment variables and labels; a label wins over an env var
  of the same key (as in gliderlabs' ``serviceMetaData``). A port-specific key
  ``SERVICE_<port>_<KEY>`` wins over the generic ``SERVICE_<KEY>`` for that port; for the check, a
  port-specific check kind (``SERVICE_<port>_CHECK_TCP`` …) replaces every generic one.
- One service per port. Without ``internal``: published ports only, at ``--ip`` or the binding's
  host IP, where 0.0.0.0 / :: / empty means the host's routable IP (passed in by the caller).
  With ``internal``: exposed ports at the container's IP on ``--network`` (else its own network).
  Host-network containers register their exposed ports at the host IP.
- Name: ``SERVICE_NAME`` / ``SERVICE_<port>_NAME``, else the image basename without registry, tag
  or digest; a ``-<port>`` suffix when the container has several ports to register (counted before
  ``SERVICE_IGNORE`` or ``explicit`` drop any, as gliderlabs counts), unless the name came from the
  port-specific key. ``explicit`` skips ports without a name.
- With ``internal``, a port is skipped (with a warning) when the container has no IP to register
  (``--network none``, or the container whose network it shares is gone). A ``container:<id>``
  container without ``internal`` registers nothing: its ports are reachable only at the other
  container's address (a warning says so).
- ID: ``<node>:<container-name>:<port>[:udp]`` unless ``SERVICE_ID``; UDP ports get the ``udp`` tag.
  An ID given to several ports of one container is registered for the lowest port only (warning).
- Tags: ``SERVICE_TAGS`` then ``--tags`` (comma lists, ``\\,`` escapes a comma; ``{{.Path}}`` and
  ``{{index .Path "key"}}`` templates read the inspect document, e.g. ``{{.Config.Hostname}}``).
- Checks: ``CHECK_HTTP``/``_HTTPS`` (path), ``_TCP``, ``_TTL`` with ``_INTERVAL``, ``_TIMEOUT``,
  ``_INITIAL_STATUS``, ``_DEREGISTER_AFTER``, ``_TLS_SKIP_VERIFY``. Any other key becomes Meta
  (lower-cased); keys Consul rejects are skipped with a warning.
- Docker state check (Waypost's addition): a TTL check ``waypost:<service-id>:docker`` is attached
  when the container has a Docker HEALTHCHECK (unless ``--no-docker-health``) or is paused. Its status is passing when healthy,
  critical when starting, unhealthy or paused. The registrator flips it on ``health_status`` and
  pause/unpause events.
- Ownership (Waypost's addition): Meta ``waypost-node=<node>`` and ``waypost-container=<id>``.
- The container's own port (Waypost's addition): Meta ``waypost-container-port=<port>``, the port the
  service listens on inside its container (``6379`` for ``-p 32768:6379``). The registered port is the
  published one (or this one with ``--internal``); an injected ambassador for a ``waypost.connect``
  entry without a port listens on this one, the port the app dials.

Bad values never stop a registration: each produces one warning naming the container and the
variable, and the default is used. Container-provided strings are data, never commands, and are
checked before they reach the catalog (limits below): a ``SERVICE_ID`` must be URL-path safe (it
goes into ``/v1/agent/service/deregister/<id>``), names and tags must be printable and short, and
a name Consul's DNS cannot serve (anything but letters, digits and ``-``, or over 63 characters) is
registered with a warning, as Consul itself warns. Values shown in warnings are quoted and cut.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from waypost.catalog.model import CONTAINER_PORT_META, CRITICAL, PASSING, CheckDef, ServiceDef

from .options import RegistratorOptions

MARKER_NODE = "waypost-node"
MARKER_CONTAINER = "waypost-container"
MARKER_CONTAINER_PORT = CONTAINER_PORT_META
MARKERS = 3  # Meta pairs Waypost adds to every registration
DOCKER_CHECK_TTL = "8760h"  # refreshed by the registrator long before it could expire
DEFAULT_INTERVAL = "10s"
DEFAULT_TTL = "30s"
PREFIX = "SERVICE_"
FALSE_WORDS = {"", "0", "false", "no", "off"}
CHECK_STATUSES = {"passing", "warning", "critical"}
MAX_META = 64
MAX_NAME = 255  # service names and tags; DNS labels are at most 63
MAX_ID = 256
MAX_TAGS = 64
MAX_CHECK_PATH = 2048
MAX_WARNINGS = 20  # per container; the rest are counted in one last warning
MAX_DURATION = (2**63 - 1) / 1e9  # Go's time.Duration (int64 ns): Consul rejects anything longer

_DURATION_PART = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h)"
_DURATION = re.compile(rf"^(?:{_DURATION_PART})+$")
_DURATION_PARTS = re.compile(_DURATION_PART)
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DNS_NAME = re.compile(r"^[A-Za-z0-9-]{1,63}$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:@~+=-]+$")
_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_TEMPLATE = re.compile(r"\{\{(.*?)\}\}")
_TEMPLATE_PATH = re.compile(r"^\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
_TEMPLATE_INDEX = re.compile(r'^index\s+(\.[A-Za-z0-9_.]+)\s+"([^"]*)"$')
_HEX_ID = re.compile(r"^(sha256:)?[0-9a-f]{12,64}$")


def docker_check_id(service_id: str) -> str:
    """The ID of the TTL check that mirrors the container's Docker health and pause state."""
    return f"waypost:{service_id}:docker"


def metadata_check_id(service_id: str) -> str:
    """The ID of the check declared by ``SERVICE_CHECK_*`` metadata (Consul's default name)."""
    return f"service:{service_id}"


@dataclass(frozen=True, slots=True)
class ContainerServices:
    """What one container should have in the catalog, and what was wrong with its metadata."""

    container_id: str
    container_name: str
    services: tuple[ServiceDef, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Value:
    value: str
    source: str  # e.g. "label SERVICE_80_NAME", for warnings


@dataclass(frozen=True, slots=True)
class _Port:
    number: int
    proto: str
    address: str
    port: int


class TemplateError(ValueError):
    """A ``{{ }}`` template in a tag that cannot be rendered."""


# ---- small parsers ------------------------------------------------------------------------------


def is_duration(text: str) -> bool:
    """True for a positive Go/Consul duration such as ``10s``, ``1m30s`` or ``500ms`` (ASCII digits,
    at most Go's ~292 years)."""
    if not _DURATION.match(text) or not any(c in "123456789" for c in text):
        return False
    total = sum(float(n) * _UNITS[u] for n, u in _DURATION_PARTS.findall(text))
    return math.isfinite(total) and total <= MAX_DURATION


def show(value: str, limit: int = 64) -> str:
    """A container-provided value for a log line: quoted (control characters escaped) and cut."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"


def _show_key(key: str) -> str:
    return key if key.isprintable() and len(key) <= 256 else show(key)


def split_escaped(text: str) -> list[str]:
    """Split a comma list where ``\\,`` is a literal comma; blanks are dropped, items stripped."""
    items: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] == ",":
            current.append(",")
            i += 2
            continue
        if char == ",":
            items.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def image_basename(image: str) -> str:
    """``registry:5000/team/app:1.2@sha256:…`` → ``app``; empty for a bare image ID."""
    ref = image.split("@", 1)[0]
    if _HEX_ID.match(ref):
        return ""
    base = ref.rsplit("/", 1)[-1]
    return base.split(":", 1)[0]


def bracket(host: str) -> str:
    """Wrap an IPv6 address in brackets for use in a URL or ``host:port``."""
    return f"[{host}]" if ":" in host else host


def render_template(text: str, container: Mapping[str, Any]) -> str:
    """Replace ``{{.A.B}}`` and ``{{index .A.B "key"}}`` with values from the inspect document."""
    if "{{" not in text and "}}" not in text:
        return text

    def lookup(path: str) -> Any:
        node: Any = container
        for part in path.strip(".").split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise TemplateError(f"{{{{{path}}}}}: no field {part!r} in the container's inspect data")
            node = node[part]
        return node

    def replace(match: re.Match[str]) -> str:
        expr = match.group(1).strip()
        if _TEMPLATE_PATH.match(expr):
            value = lookup(expr)
        elif m := _TEMPLATE_INDEX.match(expr):
            mapping = lookup(m.group(1))
            if not isinstance(mapping, Mapping) or m.group(2) not in mapping:
                raise TemplateError(f"{{{{{expr}}}}}: no key {m.group(2)!r} in {m.group(1)}")
            value = mapping[m.group(2)]
        else:
            raise TemplateError(f"{{{{{expr}}}}}: only {{{{.Field.Path}}}} and {{{{index .Map \"key\"}}}} are supported")
        if isinstance(value, Mapping | list):
            raise TemplateError(f"{{{{{expr}}}}} is not a single value")
        return "" if value is None else str(value)

    rendered = _TEMPLATE.sub(replace, text)
    if "{{" in rendered or "}}" in rendered:
        raise TemplateError("unbalanced '{{' / '}}'")
    return rendered


# ---- metadata collection ------------------------------------------------------------------------


def _collect(config: Mapping[str, Any]) -> dict[str, _Value]:
    """Every ``SERVICE_*`` key from env then labels (a label wins over an env var)."""
    found: dict[str, _Value] = {}
    for item in config.get("Env") or ():
        key, sep, value = str(item).partition("=")
        if sep and key.startswith(PREFIX) and len(key) > len(PREFIX):
            found[key] = _Value(value, f"env {_show_key(key)}")
    for key, value in (config.get("Labels") or {}).items():
        key = str(key)
        if key.startswith(PREFIX) and len(key) > len(PREFIX):
            found[key] = _Value(str(value), f"label {_show_key(key)}")
    return found


def _split_key(key: str) -> tuple[int | None, str]:
    """``SERVICE_80_NAME`` → (80, "name"); ``SERVICE_NAME`` → (None, "name")."""
    rest = key[len(PREFIX) :]
    head, sep, tail = rest.partition("_")
    if sep and tail and head.isascii() and head.isdigit():
        return (int(head) if len(head) <= 9 else 10**9), tail.lower()  # 10**9: out of range, no huge int
    return None, rest.lower()


def _for_port(raw: dict[str, _Value], port: int) -> tuple[dict[str, _Value], set[str]]:
    """The metadata that applies to one port, and which keys came from the port-specific form."""
    generic: dict[str, _Value] = {}
    specific: dict[str, _Value] = {}
    for key, value in raw.items():
        key_port, name = _split_key(key)
        if key_port is None:
            generic[name] = value
        elif key_port == port:
            specific[name] = value
    return {**generic, **specific}, set(specific)


# ---- addresses and ports ------------------------------------------------------------------------


def _network_ip(net: Mapping[str, Any] | None) -> str:
    if not net:
        return ""
    return str(net.get("IPAddress") or net.get("GlobalIPv6Address") or "")


def container_ip(container: Mapping[str, Any], network: str, warn: list[str], who: str) -> str:
    """The container's IP on `network` if given, else on its own network mode, else any."""
    settings = container.get("NetworkSettings") or {}
    nets: Mapping[str, Any] = settings.get("Networks") or {}
    if network:
        if network in nets and _network_ip(nets[network]):
            return _network_ip(nets[network])
        attached = ", ".join(sorted(nets)) or "none"
        warn.append(f"{who}: not attached to --network {network!r} (attached: {attached}); "
                    "using its own network's IP")
    mode = str((container.get("HostConfig") or {}).get("NetworkMode") or "")
    if mode in nets and _network_ip(nets[mode]):
        return _network_ip(nets[mode])
    if settings.get("IPAddress"):
        return str(settings["IPAddress"])
    if settings.get("GlobalIPv6Address"):
        return str(settings["GlobalIPv6Address"])
    for name in sorted(nets):
        if _network_ip(nets[name]):
            return _network_ip(nets[name])
    return ""


def _parse_port_key(key: str) -> tuple[int, str] | None:
    number, _, proto = key.partition("/")
    if not (number.isascii() and number.isdigit()) or len(number) > 5 or not 0 < int(number) <= 65535:
        return None
    return int(number), (proto or "tcp").lower()


def _pick_binding(bindings: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    """Docker lists 0.0.0.0 and :: bindings of one port; prefer the IPv4 one."""
    for binding in bindings:
        host_ip = str(binding.get("HostIp") or "")
        if ":" not in host_ip:
            return binding
    return bindings[0]


def _ports(
    container: Mapping[str, Any], options: RegistratorOptions, host_ip: str, peer: Mapping[str, Any] | None,
    warn: list[str], who: str,
) -> tuple[list[_Port], set[int]]:
    """The ports to register (sorted), and every port number the container knows (for checks)."""
    config = container.get("Config") or {}
    settings = container.get("NetworkSettings") or {}
    host_config = container.get("HostConfig") or {}
    exposed: Mapping[str, Any] = config.get("ExposedPorts") or {}
    published: Mapping[str, Any] = settings.get("Ports") or {}
    mode = str(host_config.get("NetworkMode") or "default")
    keys: dict[tuple[int, str], str] = {}
    for key in list(exposed) + list(published):
        parsed = _parse_port_key(str(key))
        if parsed is None:
            warn.append(f"{who}: port {key!r} is not a valid port number; skipped")
            continue
        keys.setdefault(parsed, str(key))
    known = {number for number, _ in keys}
    forced = options.host_ip
    result: list[_Port] = []
    if mode == "host":
        address = forced or host_ip
        result = [_Port(n, p, address, n) for (n, p) in keys]
    elif options.internal:
        source = peer if (peer is not None and mode.startswith("container:")) else container
        address = container_ip(source, options.network, warn, who)
        if address or options.use_ip_from_label:  # a label's IP stands in for a missing one
            result = [_Port(n, p, address, n) for (n, p) in keys]
        elif keys:
            why = ("the container whose network it shares is gone" if mode.startswith("container:")
                   else f"network mode {mode!r} gives it none")
            warn.append(f"{who}: --internal, but the container has no IP address ({why}); its ports "
                        f"{', '.join(str(n) for n, _ in sorted(keys))} are not registered")
    elif mode.startswith("container:"):
        if keys:
            warn.append(f"{who}: shares the network of {mode[len('container:'):][:12]}, so it publishes no ports "
                        "of its own; its exposed ports are registered only with --internal (at that container's IP)")
    else:
        for (number, proto), key in keys.items():
            bindings = published.get(key) or []
            if not bindings:
                continue
            binding = _pick_binding(bindings)
            host_port = str(binding.get("HostPort") or "")
            if not (host_port.isascii() and host_port.isdigit()) or len(host_port) > 5 \
                    or not 0 < int(host_port) <= 65535:
                warn.append(f"{who}: port {key} is published on bad host port {show(host_port)}; skipped")
                continue
            bound = str(binding.get("HostIp") or "")
            if forced:
                address = forced
            elif bound in ("", "0.0.0.0", "::"):
                address = host_ip
            else:
                address = bound
            result.append(_Port(number, proto, address, int(host_port)))
    return sorted(result, key=lambda p: (p.number, p.proto)), known


def _ignored(raw: dict[str, _Value]) -> bool:
    """Whether the container-wide SERVICE_IGNORE is set."""
    ignore = _for_port(raw, 0)[0].get("ignore")
    return ignore is not None and ignore.value.strip().lower() not in FALSE_WORDS


def _publishing_mode(container: Mapping[str, Any], options: RegistratorOptions) -> bool:
    """Whether only published ports are registered for this container (no --internal, its own network)."""
    mode = str((container.get("HostConfig") or {}).get("NetworkMode") or "default")
    return not options.internal and mode != "host" and not mode.startswith("container:")


# ---- checks -------------------------------------------------------------------------------------


def _duration(meta: dict[str, _Value], key: str, default: str, warn: list[str], who: str) -> str:
    value = meta.get(key)
    if value is None or not value.value.strip():
        return default
    text = value.value.strip()
    if is_duration(text):
        return text
    shown = f"using {default}" if default else "ignored"
    warn.append(f"{who}: {value.source}={show(value.value)} is not a duration like 10s or 1m30s; {shown}")
    return default


CHECK_KINDS = ("check_http", "check_https", "check_ttl", "check_tcp", "check_script", "check_cmd", "check_docker")


def _check(meta: dict[str, _Value], from_port: set[str], sid: str, service_name: str, address: str, port: int,
           warn: list[str], who: str) -> CheckDef | None:
    """The check declared by ``SERVICE_CHECK_*`` metadata, if any (gliderlabs' precedence among kinds).

    A port-specific kind (``SERVICE_443_CHECK_TCP``) replaces every generic kind for that port, so a
    container-wide ``SERVICE_CHECK_HTTP`` does not override it.
    """
    if from_port.intersection(CHECK_KINDS):
        meta = {k: v for k, v in meta.items() if k not in CHECK_KINDS or k in from_port}

    def text(key: str) -> str:
        value = meta.get(key)
        return value.value.strip() if value else ""

    target = f"{bracket(address)}:{port}"
    kind = ""
    url = ""
    if text("check_http") or text("check_https"):
        key = "check_http" if text("check_http") else "check_https"
        path = text(key)
        if len(path) > MAX_CHECK_PATH or not path.isprintable() or " " in path:
            warn.append(f"{who}: {meta[key].source}={show(path)} is not a URL path (printable, no spaces, at "
                        f"most {MAX_CHECK_PATH} characters); no check registered")
            return None
        if not path.startswith("/"):
            path = "/" + path
        kind, url = "http", f"{'http' if key == 'check_http' else 'https'}://{target}{path}"
    elif text("check_ttl"):
        kind = "ttl"
    elif text("check_tcp") and text("check_tcp").lower() not in FALSE_WORDS:
        kind, url = "tcp", target
    else:
        for key in ("check_script", "check_cmd", "check_docker"):
            if text(key):
                warn.append(f"{who}: {meta[key].source} is not supported (script checks run arbitrary "
                            "commands); use SERVICE_CHECK_HTTP, _TCP or _TTL, or a Docker HEALTHCHECK")
        return None
    initial = text("check_initial_status").lower()
    if initial and initial not in CHECK_STATUSES:
        warn.append(f"{who}: {meta['check_initial_status'].source}={show(initial)} is not passing, warning or "
                    "critical; ignored")
        initial = ""
    skip_verify = text("check_tls_skip_verify").lower() not in FALSE_WORDS
    return CheckDef(
        kind=kind,
        target=url,
        interval=_duration(meta, "check_interval", DEFAULT_INTERVAL, warn, who) if kind != "ttl" else DEFAULT_INTERVAL,
        timeout=_duration(meta, "check_timeout", "", warn, who) if kind != "ttl" else "",
        ttl=_duration(meta, "check_ttl", DEFAULT_TTL, warn, who) if kind == "ttl" else "",
        deregister_after=_duration(meta, "check_deregister_after", "", warn, who),
        initial_status=initial,
        tls_skip_verify=skip_verify and url.startswith("https"),
        check_id=metadata_check_id(sid),
        name=f"Service '{service_name}' check",  # Consul's default name for a service's check
    )


def docker_state(container: Mapping[str, Any], use_health: bool = True) -> tuple[str, str] | None:
    """(status, output) of the Docker state check, or None when the container needs none.

    `use_health` False (``--no-docker-health``) leaves a HEALTHCHECK's status out; pause still counts.
    """
    state = container.get("State") or {}
    health = state.get("Health") or {}
    health_status = str(health.get("Status") or "") if use_health else ""
    if state.get("Paused"):
        return CRITICAL, "container is paused"
    if not health_status or health_status == "none":
        return None
    if health_status == "healthy":
        return PASSING, "docker health: healthy"
    return CRITICAL, f"docker health: {health_status}"


def docker_check(service_id: str, status: str) -> CheckDef:
    """The TTL check mirroring Docker's health/pause state for one service."""
    return CheckDef(
        kind="ttl",
        ttl=DOCKER_CHECK_TTL,
        check_id=docker_check_id(service_id),
        name="Docker health and pause state",
        initial_status=status,
    )


# ---- the whole container ------------------------------------------------------------------------


def _tags(items: list[str] | tuple[str, ...], source: str, container: Mapping[str, Any], warn: list[str],
          who: str) -> list[str]:
    """Render each tag's templates; a tag whose template is bad is skipped with a warning."""
    tags = []
    for tag in items:
        try:
            rendered = render_template(tag, container)
        except TemplateError as exc:
            warn.append(f"{who}: {source} tag {show(tag)}: bad template ({show(str(exc), 120)}); tag skipped")
            continue
        if len(rendered) > MAX_NAME or not rendered.isprintable():
            warn.append(f"{who}: {source} tag {show(rendered)} is not usable (control characters or longer "
                        f"than {MAX_NAME} characters); tag skipped")
            continue
        if rendered:
            tags.append(rendered)
    return tags


def _service_name(value: _Value | None, default: str, warn: list[str], who: str) -> str:
    """The ``SERVICE_NAME`` if usable, else `default`; a name DNS cannot serve is kept with a warning."""
    if value is None or not value.value.strip():
        return default
    name = value.value.strip()
    if len(name) > MAX_NAME or not name.isprintable():
        warn.append(f"{who}: {value.source}={show(name)} is not usable as a service name (control characters "
                    f"or longer than {MAX_NAME} characters); using {default!r}")
        return default
    return name


def _dns_warning(name: str, value: _Value | None, warn: list[str], who: str) -> None:
    if _DNS_NAME.match(name):
        return
    where = value.source if value is not None and value.value.strip() == name else "the default name"
    warn.append(f"{who}: service name {show(name)} ({where}) will not be discoverable via DNS: use letters, "
                "digits and '-', at most 63 characters (set SERVICE_NAME)")


def _service_id(value: _Value | None, default: str, warn: list[str], who: str) -> str:
    """The ``SERVICE_ID`` if it is safe in a URL path, else `default`."""
    if value is None or not value.value.strip():
        return default
    sid = value.value.strip()
    if len(sid) > MAX_ID or not _SAFE_ID.match(sid) or set(sid) == {"."}:
        warn.append(f"{who}: {value.source}={show(sid)} is not usable as a service ID (it goes into catalog URL "
                    f"paths: use letters, digits and _.:@~+=-, at most {MAX_ID} characters); using {default!r}")
        return default
    return sid


def _meta(meta: dict[str, _Value], warn: list[str], who: str) -> dict[str, str]:
    result: dict[str, str] = {}
    over: list[str] = []
    for key in sorted(meta):
        value = meta[key]
        if key in ("name", "id", "tags", "ignore") or key.startswith("check_"):
            continue
        if not _META_KEY.match(key) or key.startswith("consul-") or key.startswith("waypost-"):
            warn.append(f"{who}: {value.source}: Meta key {show(key)} is not allowed (letters, digits, '_' and "
                        "'-' only, at most 128, no consul-/waypost- prefix); skipped")
            continue
        if len(value.value) > 512:
            warn.append(f"{who}: {value.source}: value longer than 512 characters; skipped")
            continue
        if len(result) >= MAX_META - MARKERS:
            over.append(value.source)
            continue
        result[key] = value.value
    if over:
        warn.append(f"{who}: more than {MAX_META - MARKERS} SERVICE_ Meta keys (Consul allows {MAX_META} pairs); "
                    f"{len(over)} skipped: {', '.join(over[:5])}{', …' if len(over) > 5 else ''}")
    return result


def _capped(warn: list[str], who: str) -> tuple[str, ...]:
    unique = tuple(dict.fromkeys(warn))
    if len(unique) <= MAX_WARNINGS:
        return unique
    extra = len(unique) - MAX_WARNINGS + 1
    return unique[: MAX_WARNINGS - 1] + (f"{who}: … and {extra} more metadata warnings",)


def describe(
    container: Mapping[str, Any],
    options: RegistratorOptions,
    host_ip: str = "",
    peer: Mapping[str, Any] | None = None,
) -> ContainerServices:
    """The services a running container should register.

    `container` is Docker's inspect document; `host_ip` is this host's routable IP used for
    ports published on 0.0.0.0 (and host-network containers) when ``--ip`` is not set; `peer`
    is the inspect document of the container whose network a ``container:<id>`` container shares.
    """
    cid = str(container.get("Id") or "")
    name = str(container.get("Name") or "").lstrip("/") or cid[:12]
    who = f"container {name} ({cid[:12]})"
    warn: list[str] = []
    config = container.get("Config") or {}
    raw = _collect(config)
    ports, known = _ports(container, options, host_ip, peer, warn, who)
    if not ports and known and raw and not _ignored(raw) and _publishing_mode(container, options):
        shown = ", ".join(str(n) for n in sorted(known))
        warn.append(f"{who}: has SERVICE_ settings but publishes none of its ports ({shown}), so nothing is "
                    f"registered: publish them (docker run -p {min(known)}) or run the registrator with "
                    "--internal to register the container's own address")

    for key, value in raw.items():
        key_port, _ = _split_key(key)
        if key_port is None:
            continue
        if not 0 < key_port <= 65535:
            shown = key_port if key_port < 10**9 else "number"
            warn.append(f"{who}: {value.source}: port {shown} is out of range 1-65535; ignored")
        elif key_port not in known:
            warn.append(f"{who}: {value.source}: the container neither exposes nor publishes port {key_port}; "
                        "ignored")

    default_name = image_basename(str(config.get("Image") or "")) or name
    label_ip = ""
    if options.use_ip_from_label:
        raw_ip = str((config.get("Labels") or {}).get(options.use_ip_from_label) or "")
        if raw_ip:
            candidate = raw_ip.rsplit("/", 1)[0] if "/" in raw_ip else raw_ip
            try:
                parsed = ipaddress.ip_address(candidate)
                if parsed.is_unspecified:
                    raise ValueError("unspecified")  # Consul rejects 0.0.0.0 / :: as a service address
                label_ip = str(parsed)
            except ValueError:
                warn.append(f"{who}: label {options.use_ip_from_label}={show(raw_ip)} is not a usable IP address; "
                            "using the default address")

    chosen: list[tuple[_Port, dict[str, _Value], set[str]]] = []
    for port in ports:
        meta, from_port = _for_port(raw, port.number)
        ignore = meta.get("ignore")
        if ignore is not None and ignore.value.strip().lower() not in FALSE_WORDS:
            continue
        if options.explicit and not (meta.get("name") and meta["name"].value.strip()):
            continue
        chosen.append((port, meta, from_port))

    group = len(ports) > 1  # before SERVICE_IGNORE / --explicit dropped any: gliderlabs' naming
    services: list[ServiceDef] = []
    id_ports: dict[str, int] = {}
    state = docker_state(container, options.docker_health)
    for port, meta, from_port in chosen:
        service_name = _service_name(meta.get("name"), default_name, warn, who)
        if group and "name" not in from_port:
            service_name = f"{service_name}-{port.number}"
        _dns_warning(service_name, meta.get("name"), warn, who)
        suffix = "" if port.proto == "tcp" else f":{port.proto}"
        sid = _service_id(meta.get("id"), f"{options.node}:{name}:{port.number}{suffix}", warn, who)
        if sid in id_ports:
            source = meta["id"].source if "id" in meta else "the service ID"
            warn.append(f"{who}: {source}={show(sid)} names port {id_ports[sid]} already; port "
                        f"{port.number} is not registered (give each port its own SERVICE_<port>_ID)")
            continue
        id_ports[sid] = port.number
        tags = _tags(split_escaped(meta["tags"].value), meta["tags"].source, container, warn, who) if "tags" in meta else []
        tags += _tags(options.tags, "--tags", container, warn, who)
        if port.proto != "tcp":
            tags.append(port.proto)
        tags = list(dict.fromkeys(tags))
        if len(tags) > MAX_TAGS:
            warn.append(f"{who}: {len(tags)} tags (SERVICE_TAGS and --tags); only the first {MAX_TAGS} are registered")
            tags = tags[:MAX_TAGS]
        address = label_ip or port.address
        checks: list[CheckDef] = []
        declared = _check(meta, from_port, sid, service_name, address, port.port, warn, who)
        if declared is not None:
            checks.append(declared)
        if state is not None:
            checks.append(docker_check(sid, state[0]))
        service_meta = _meta(meta, warn, who)
        service_meta[MARKER_NODE] = options.node
        service_meta[MARKER_CONTAINER] = cid
        service_meta[MARKER_CONTAINER_PORT] = str(port.number)
        services.append(
            ServiceDef(
                id=sid,
                name=service_name,
                address=address,
                port=port.port,
                tags=tuple(dict.fromkeys(tags)),
                meta=tuple(sorted(service_meta.items())),
                checks=tuple(checks),
            )
        )
    return ContainerServices(cid, name, tuple(services), _capped(warn, who))
