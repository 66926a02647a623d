"""The registrator's settings, one frozen value shared by the pure and the async parts."""

from __future__ import annotations

from dataclasses import dataclass

DEREGISTER_MODES = ("always", "on-success")


@dataclass(frozen=True, slots=True)
class RegistratorOptions:
    """What the registrator registers and how it behaves (the `waypost registrator` flags).

    ``node`` is this host's identity in service IDs and in the ``waypost-node`` Meta marker;
    empty means "ask the Docker engine for its host name" (see :mod:`waypost.registrator.runner`).
    ``host_ip`` is ``--ip``: forced address for published ports.
    """

    node: str = ""
    host_ip: str = ""
    internal: bool = False
    explicit: bool = False
    tags: tuple[str, ...] = ()
    resync: float = 0.0
    cleanup: bool = False
    deregister: str = "always"
    retry_attempts: int = -1
    retry_interval: float = 2.0
    use_ip_from_label: str = ""
    network: str = ""
    deregister_on_exit: bool = False
    docker_health: bool = True  # a Docker HEALTHCHECK's status becomes a check (--no-docker-health: not)

    def __post_init__(self) -> None:
        if self.deregister not in DEREGISTER_MODES:
            raise ValueError(f"--deregister {self.deregister!r}: use 'always' or 'on-success'")
        if self.resync < 0:
            raise ValueError(f"--resync {self.resync}: must be 0 (never) or a number of seconds")
        if self.retry_interval <= 0:
            raise ValueError(f"--retry-interval {self.retry_interval}: must be > 0")
