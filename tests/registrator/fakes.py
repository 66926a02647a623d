"""In-memory stand-ins for the catalog client and the Docker engine, for reconciler unit tests."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from consul.exceptions import BadRequest

from waypost.catalog.model import ServiceDef


class FakeCatalog:
    """The CatalogClient methods the registrator uses, backed by dicts, recording every write."""

    def __init__(self) -> None:
        self.services: dict[str, ServiceDef] = {}
        self.checks: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self.down = False
        self.fail_next = 0
        self.reject: set[str] = set()  # service IDs the catalog answers 400 for, as Consul would
        self.url = "fake://catalog"
        self.server_delay = 0.0  # seconds a register takes to land (it lands even if the caller is cancelled)
        self.in_flight: set[asyncio.Future[None]] = set()

    def _maybe_fail(self) -> None:
        if self.down:
            raise ConnectionRefusedError("catalog down")
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionResetError("catalog hiccup")

    async def register(self, service: ServiceDef, replace_existing_checks: bool = True) -> None:
        self._maybe_fail()
        if service.id in self.reject:
            self.writes.append(("rejected", service.id))
            raise BadRequest(f"400 Invalid service {service.id!r}")
        if self.server_delay:
            # a real catalog goes on with a request whose client gave up: the write lands anyway
            landing = asyncio.ensure_future(asyncio.sleep(self.server_delay))
            landing.add_done_callback(lambda _: self._store(service))
            self.in_flight.add(landing)
            landing.add_done_callback(self.in_flight.discard)
            await asyncio.shield(landing)
            return
        self._store(service)

    def _store(self, service: ServiceDef) -> None:
        self.writes.append(("register", service.id))
        self.services[service.id] = service
        for cid in [c for c, v in self.checks.items() if v["ServiceID"] == service.id]:
            del self.checks[cid]
        for check in service.checks:
            self.checks[check.check_id] = {"CheckID": check.check_id, "ServiceID": service.id,
                                           "Status": check.initial_status or "critical", "Output": ""}

    async def deregister(self, service_id: str) -> None:
        self._maybe_fail()
        self.writes.append(("deregister", service_id))
        self.services.pop(service_id, None)
        for cid in [c for c, v in self.checks.items() if v["ServiceID"] == service_id]:
            del self.checks[cid]

    async def update_ttl(self, check_id: str, status: str, output: str = "") -> bool:
        self._maybe_fail()
        self.writes.append(("update_ttl", f"{check_id}={status}"))
        if check_id not in self.checks:
            return False  # the agent's 404, as py-consul reports it
        self.checks[check_id]["Status"] = status
        self.checks[check_id]["Output"] = output
        return True

    async def local_services(self, filter_expr: str | None = None) -> dict[str, ServiceDef]:
        self._maybe_fail()
        # what /v1/agent/services gives back: no checks
        return {sid: ServiceDef(s.id, s.name, s.address, s.port, s.tags, s.meta) for sid, s in self.services.items()}

    async def local_checks(self) -> dict[str, dict[str, Any]]:
        self._maybe_fail()
        return copy.deepcopy(self.checks)

    def status(self, check_id: str) -> str:
        return self.checks[check_id]["Status"]

    def wipe(self) -> None:
        """What a restarted catalog without a data dir looks like."""
        self.services.clear()
        self.checks.clear()


class FakeDocker:
    """Containers as inspect documents; `delay` makes inspect slow to expose ordering bugs."""

    def __init__(self) -> None:
        self.containers: dict[str, dict[str, Any]] = {}
        self.delay = 0.0
        self.inspects = 0
        self.down = False

    def add(self, doc: dict[str, Any]) -> str:
        self.containers[doc["Id"]] = doc
        return doc["Id"]

    def set_running(self, cid: str, running: bool, exit_code: int = 0) -> None:
        state = self.containers[cid]["State"]
        state["Running"] = running
        state["ExitCode"] = 0 if running else exit_code

    async def inspect(self, container_id: str) -> dict[str, Any] | None:
        if self.down:
            raise ConnectionRefusedError("docker down")
        self.inspects += 1
        doc = copy.deepcopy(self.containers.get(container_id))
        if self.delay:
            await asyncio.sleep(self.delay)
        return doc

    async def running(self) -> list[tuple[str, str]]:
        if self.down:
            raise ConnectionRefusedError("docker down")
        return [(cid, d["Name"].lstrip("/")) for cid, d in self.containers.items() if d["State"]["Running"]]


def inspect_doc(
    name: str = "web.1",
    cid: str = "c0ffee" * 10 + "abcd",
    image: str = "example/web:1.0",
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    exposed: list[str] | None = None,
    published: dict[str, list[tuple[str, str]] | None] | None = None,
    mode: str = "default",
    ip: str = "172.17.0.5",
    networks: dict[str, dict[str, str]] | None = None,
    health: str | None = None,
    paused: bool = False,
) -> dict[str, Any]:
    """A Docker 20.10-shaped inspect document with only the fields the registrator reads."""
    ports: dict[str, Any] = {}
    for key in exposed or []:
        ports[key] = None
    for key, bindings in (published or {}).items():
        ports[key] = None if bindings is None else [{"HostIp": h, "HostPort": p} for h, p in bindings]
    state: dict[str, Any] = {"Running": True, "Paused": paused, "ExitCode": 0}
    if health:
        state["Health"] = {"Status": health, "FailingStreak": 0, "Log": []}
    return {
        "Id": cid,
        "Name": "/" + name,
        "State": state,
        "Config": {
            "Hostname": "abc123",
            "Image": image,
            "Env": [f"{k}={v}" for k, v in (env or {}).items()] + ["PATH=/bin"],
            "Labels": labels or {},
            "ExposedPorts": {k: {} for k in ports},
        },
        "HostConfig": {"NetworkMode": mode},
        "NetworkSettings": {
            "IPAddress": ip if mode in ("default", "bridge") else "",
            "Ports": {} if mode == "host" else ports,
            "Networks": networks if networks is not None else ({"bridge": {"IPAddress": ip}} if mode != "host" else {"host": {"IPAddress": ""}}),
        },
    }
