"""The image's HEALTHCHECK: probe the HTTP endpoint of whichever `waypost` command the container runs.

``python3 -m waypost.healthcheck`` finds the running ``waypost`` command line (pid 1, or the first
process that is ``waypost`` when an init runs first) and probes what that command serves:

- ``up``: ``/healthz`` on ``--http`` (default 127.0.0.1:8500);
- ``catalog``: ``/v1/status/leader`` on ``--listen`` (default 127.0.0.1:8500);
- ``ambassador --admin ADDR``: ``/healthz`` there;
- ``registrator``, ``dns`` and an ambassador without ``--admin`` serve no HTTP: the check passes
  while the process runs (Docker already marks the container exited when it stops).

A flag set through the environment (``WAYPOST_HTTP``, ``WAYPOST_LISTEN``, ``WAYPOST_ADMIN``) counts
too. ``WAYPOST_HEALTH_ADDR=HOST:PORT`` overrides the address (a command whose flags come from a
wrapper script, a port mapped elsewhere). Exit status 0 is healthy, 1 unhealthy, as Docker expects.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

# command -> (flag holding its HTTP address, default address, path to probe)
_ENDPOINTS: dict[str, tuple[str, str | None, str]] = {
    "up": ("--http", "127.0.0.1:8500", "/healthz"),
    "catalog": ("--listen", "127.0.0.1:8500", "/v1/status/leader"),
    "ambassador": ("--admin", None, "/healthz"),
}
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1", "[::]": "[::1]"}


def waypost_args(argv: Sequence[str]) -> list[str] | None:
    """The arguments after ``waypost`` in a process's argv, or None when it is not waypost."""
    for i, arg in enumerate(argv):
        if Path(arg).name == "waypost":
            return list(argv[i + 1 :])
        if arg == "-m" and i + 1 < len(argv) and argv[i + 1] == "waypost":
            return list(argv[i + 2 :])
    return None


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    value = None
    for i, arg in enumerate(args):  # the last occurrence wins, as with argparse
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1 :]
    return value


def _loopback(address: str) -> str:
    """A listen address as something to dial: the wildcard becomes loopback."""
    host, sep, port = address.rpartition(":")
    if not sep:
        return address
    return f"{_ANY_ADDRESS.get(host, host)}:{port}"


def probe_url(args: Sequence[str], env: Mapping[str, str]) -> str | None:
    """The URL that tells whether `waypost ARGS` is healthy; None when it serves no HTTP."""
    command = next((a for a in args if not a.startswith("-")), "up")  # the image's CMD is `up`
    endpoint = _ENDPOINTS.get(command)
    override = env.get("WAYPOST_HEALTH_ADDR", "").strip()
    if endpoint is None:
        return f"http://{override}/healthz" if override else None
    flag, default, path = endpoint
    from_env = env.get("WAYPOST_" + flag.lstrip("-").replace("-", "_").upper(), "").strip()
    address = override or _flag_value(args, flag) or from_env or default
    if not address or address == "off":
        return None
    return f"http://{_loopback(address)}{path}"


def _running_waypost(proc: Path = Path("/proc")) -> list[str] | None:
    """The arguments of the running waypost command: pid 1's, else the lowest pid's that is waypost."""
    pids = sorted((int(p.name) for p in proc.iterdir() if p.name.isdigit()), key=lambda pid: (pid != 1, pid))
    for pid in pids:
        try:
            argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = waypost_args([a.decode(errors="replace") for a in argv if a])
        if args is not None:
            return args
    return None


def main() -> int:
    """Probe the running command's endpoint; 0 when it answers 2xx (or serves none), else 1."""
    args = _running_waypost()
    url = probe_url(args if args is not None else [], os.environ)
    if url is None:
        return 0
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - a loopback URL we built
            return 0 if 200 <= response.status < 300 else 1
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
