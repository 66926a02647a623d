"""The container's hosts file: map each dialled name to its route's loopback address.

Waypost's lines end with a marker comment so they are found again after a restart (and reused,
never duplicated) and removed cleanly. The file is rewritten in place, not replaced: Docker
bind-mounts it into the container, and a rename would not be seen there.
"""

from __future__ import annotations

import ipaddress

MARKER = "# waypost"
BASE = ipaddress.IPv4Address("127.127.0.2")
RANGE = ipaddress.IPv4Network("127.127.0.0/16")


def read_waypost_lines(text: str) -> dict[str, str]:
    """Name → address of the lines Waypost wrote earlier.

    Only addresses in 127.127.0.0/16 count: the file lives in the container, and a line its
    processes rewrote (to 0.0.0.0, say) must not make us listen anywhere else; such a name gets a
    fresh address and its line is rewritten.
    """
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.rstrip().endswith(MARKER):
            continue
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and _ours(fields[0]):
            found[fields[1]] = fields[0]
    return found


def _ours(address: str) -> bool:
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return ip in RANGE and int(ip) >= int(BASE)


def allocate(names: list[str], existing: dict[str, str]) -> dict[str, str]:
    """An address in 127.127.0.0/16 per name: reuse what the file already has, else the next free."""
    taken = {address for name, address in existing.items() if name in names}
    result: dict[str, str] = {}
    candidate = int(BASE)
    for name in names:
        if name in existing:
            result[name] = existing[name]
            continue
        while str(ipaddress.IPv4Address(candidate)) in taken:
            candidate += 1
        address = str(ipaddress.IPv4Address(candidate))
        taken.add(address)
        result[name] = address
    return result


def render(text: str, wanted: dict[str, str]) -> str:
    """`text` with Waypost's lines replaced by one line per wanted name (others left as they were)."""
    kept = [line for line in text.splitlines() if not line.rstrip().endswith(MARKER)]
    ours = [f"{address}\t{name}\t{MARKER}"
            for name, address in sorted(wanted.items(), key=lambda kv: ipaddress.ip_address(kv[1]))]
    lines = kept + ours
    return "\n".join(lines) + ("\n" if lines else "")


def update_file(path: str, wanted: dict[str, str]) -> bool:
    """Rewrite `path` in place with `wanted`; returns False when nothing needed to change."""
    with open(path, "r+", encoding="utf-8", errors="surrogateescape") as fh:
        text = fh.read()
        new = render(text, wanted)
        if new == text:
            return False
        fh.seek(0)
        fh.write(new)
        fh.truncate()
    return True
