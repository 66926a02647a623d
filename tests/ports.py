"""Free loopback ports for tests and benchmarks (importable from both: no pytest here)."""

from __future__ import annotations

import socket

_handed_out: set[tuple[str, int]] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now on `host` for both TCP and UDP, never one this process got before.

    The kernel may hand the same ephemeral port to two back-to-back probes (each probe closes its
    socket at once), so two `free_port()` calls for one command line (HTTP and DNS, say) could
    collide; remembering what was handed out rules that out. Both protocols are checked because a
    DNS listener binds the port for UDP and TCP."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            if (host, port) in _handed_out:
                continue
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind((host, port))
            except OSError:
                continue
        _handed_out.add((host, port))
        return port
    raise RuntimeError(f"no free TCP+UDP port on {host} after 200 tries")
