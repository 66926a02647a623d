"""The `waypost.connect` label: which services a container dials, and under which names.

``waypost.connect=redis,api:8080,db:5432@pg`` means: the app dials ``redis`` (on the port the
service listens on in its container, e.g. 6379 for ``-p 32768:6379``; the registered port for
services registered by something else than Waypost), ``api`` on 8080, and ``db`` on 5432 which is the catalog service ``pg``.
A route may also carry a tag: ``web#v2`` (only instances tagged v2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LABEL = "waypost.connect"
MAX_ROUTES = 64  # per container: each route costs a listener (and a descriptor) in this process
# A hosts-file name: DNS labels of letters, digits, '-', '_' separated by dots.
_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*$")
_SERVICE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class ConnectLabelError(ValueError):
    """One entry of the label cannot be used; the message names it and shows the right form."""


@dataclass(frozen=True, slots=True)
class ConnectSpec:
    """One route a labelled container wants: the name it dials and the service behind it."""

    name: str
    port: int | None
    service: str
    tag: str | None = None


def parse_connect_label(value: str) -> tuple[list[ConnectSpec], list[str]]:
    """Parse the label into specs plus one warning per unusable entry (the rest still work)."""
    specs: list[ConnectSpec] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            spec = parse_connect_entry(entry)
        except ConnectLabelError as exc:
            warnings.append(str(exc))
            continue
        if spec.name.lower() in seen:
            warnings.append(f"{LABEL}: {spec.name!r} is listed twice; the first one is used")
            continue
        if len(specs) == MAX_ROUTES:
            warnings.append(f"{LABEL}: more than {MAX_ROUTES} routes; only the first {MAX_ROUTES} are served")
            break
        seen.add(spec.name.lower())
        specs.append(spec)
    return specs, warnings


def parse_connect_entry(entry: str) -> ConnectSpec:
    """Parse ``NAME[:PORT][@SERVICE][#TAG]``."""
    hint = "write NAME[:PORT][@SERVICE][#TAG], e.g. redis or db:5432@pg"
    text = entry
    tag = None
    if "#" in text:
        text, tag = text.split("#", 1)
        if not tag or not _SERVICE.fullmatch(tag):
            raise ConnectLabelError(f"{LABEL} entry {entry!r}: bad tag {tag!r}; {hint}")
    service = None
    if "@" in text:
        text, service = text.split("@", 1)
        if not _SERVICE.fullmatch(service):
            raise ConnectLabelError(f"{LABEL} entry {entry!r}: bad service name {service!r}; {hint}")
    port = None
    if ":" in text:
        text, port_text = text.split(":", 1)
        if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
            raise ConnectLabelError(f"{LABEL} entry {entry!r}: port {port_text!r} is not 1-65535; {hint}")
        port = int(port_text)
    if not _NAME.fullmatch(text):
        raise ConnectLabelError(f"{LABEL} entry {entry!r}: {text!r} is not a valid host name; {hint}")
    if service is None:
        if not _SERVICE.fullmatch(text):
            raise ConnectLabelError(f"{LABEL} entry {entry!r}: {text!r} is not a valid service name; {hint}")
        service = text
    return ConnectSpec(name=text, port=port, service=service, tag=tag)
