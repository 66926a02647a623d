"""The Consul HTTP endpoints of the embedded catalog: agent, catalog, health, KV and status."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from waypost.server import render
from waypost.server.http_util import (
    Fields,
    HTTPError,
    bad_request,
    decode_json_body,
    not_found,
    parse_uint,
    query_flag,
    text_response,
)
from waypost.server.metrics import catalog_registry
from waypost.server.registration import (
    agent_service_registration,
    build_check,
    build_service,
    catalog_check,
)
from waypost.server.store import CRITICAL, PASSING, SERF_CHECK_ID, VALID_STATUSES, WARNING

try:
    from waypost.server.filter import FilterError, compile_filter
except ImportError:  # pragma: no cover - filter support ships separately
    compile_filter = None  # type: ignore[assignment]
    FilterError = ValueError  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from waypost.server.app import CatalogServer

KV_MAX_VALUE = 512 * 1024
ENCODED_CACHE_SIZE = 512
SERVICE_MAINT_PREFIX = "_service_maintenance:"
NODE_MAINT_ID = "_node_maintenance"
DEFAULT_SERVICE_MAINT_REASON = ("Maintenance mode is enabled for this service, but no reason was provided. "
                                "This is a default message.")
DEFAULT_NODE_MAINT_REASON = ("Maintenance mode is enabled for this node, but no reason was provided. "
                             "This is a default message.")
MAINTENANCE = "maintenance"

Predicate = Callable[[Any], bool]


def _filter(request: web.Request) -> Predicate | None:
    expr = request.query.get("filter", "")
    if not expr:
        return None
    if compile_filter is None:
        raise bad_request("filter not supported")
    try:
        return compile_filter(expr)
    except FilterError as exc:
        raise bad_request(str(exc)) from None


def _apply(pred: Predicate | None, items: list[Any]) -> list[Any]:
    if pred is None:
        return items
    try:
        return [item for item in items if pred(item)]
    except (FilterError, ValueError, TypeError) as exc:
        raise bad_request(f"Failed to evaluate filter: {exc}") from None


def _node_meta(request: web.Request) -> list[tuple[str, str]]:
    out = []
    for raw in request.query.getall("node-meta", []):
        key, sep, value = raw.partition(":")
        if not sep:
            raise bad_request(f"Invalid node-meta {raw!r}: write key:value")
        out.append((key, value))
    return out


def _meta_ok(node: dict[str, Any], wanted: list[tuple[str, str]]) -> bool:
    meta = node["Meta"] or {}
    return all(meta.get(k) == v for k, v in wanted)


def aggregated_status(checks: list[dict[str, Any]]) -> str:
    """Consul's ``api.HealthChecks.AggregatedStatus``: maintenance > critical > warning > passing."""
    statuses = set()
    for chk in checks:
        cid = chk["CheckID"]
        if cid == NODE_MAINT_ID or cid.startswith(SERVICE_MAINT_PREFIX):
            return MAINTENANCE
        statuses.add(chk["Status"])
    return CRITICAL if CRITICAL in statuses else WARNING if WARNING in statuses else PASSING


def _has_tags(svc: dict[str, Any], tags: list[str]) -> bool:
    have = {t.lower() for t in svc["Tags"]}
    return all(t.lower() in have for t in tags)


def _tags_by_name(instances: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Consul's servicesTagsByName: service instances (``ServiceNode``s) → {name: sorted unique tags}."""
    out: dict[str, set[str]] = {}
    names: dict[str, str] = {}
    for inst in instances:
        lname = inst["ServiceName"].lower()
        names.setdefault(lname, inst["ServiceName"])
        out.setdefault(lname, set()).update(inst["ServiceTags"])
    return {names[k]: sorted(v) for k, v in sorted(out.items())}


async def _json_body(request: web.Request, allow_empty: bool = False) -> Any:
    return decode_json_body(await request.read(), request.path, allow_empty=allow_empty)


class Api:
    """Request handlers bound to one :class:`CatalogServer`."""

    def __init__(self, server: CatalogServer) -> None:
        self.server = server
        self.store = server.store
        self.metrics = catalog_registry(server.store)
        # encoded health/service answers by query, valid while the service's index and health
        # generation stay put: many watchers of one service (DNS, ambassadors) share one encoding
        self._encoded: OrderedDict[str, tuple[tuple[int, int], bytes]] = OrderedDict()

    def _cached(self, request: web.Request, token: tuple[int, int], build: Callable[[], Any]) -> bytes:
        key = request.path + "?" + "&".join(f"{k}={v}" for k, v in sorted(request.query.items())
                                             if k not in ("index", "wait", "token", "pretty"))
        hit = self._encoded.get(key)
        if hit is not None and hit[0] == token:
            self._encoded.move_to_end(key)
            return hit[1]
        body = json.dumps(build(), separators=(",", ":")).encode()
        self._encoded[key] = (token, body)
        self._encoded.move_to_end(key)
        while len(self._encoded) > ENCODED_CACHE_SIZE:
            self._encoded.popitem(last=False)
        return body

    # ---- helpers ------------------------------------------------------------------------------

    async def _agent_write(self, *changes: Any) -> web.Response:
        self.server.checks.sync()
        await self.server.commit(*changes)
        return web.Response(status=200, text="", content_type="text/plain")

    def _local_node_changes(self) -> list[Any]:
        if self.store.node_key not in self.store.nodes:
            return self.server.ensure_local_node()
        return []

    def _entries_for(self, name: str, tags: list[str], passing: bool, node_meta: list[tuple[str, str]]
                     ) -> list[dict[str, Any]]:
        store = self.store
        out = []
        for (nkey, sid), svc in store.instances(name):
            if tags and not _has_tags(svc, tags):
                continue
            node = store.nodes[nkey]
            if node_meta and not _meta_ok(node, node_meta):
                continue
            checks = store.health_entry_checks(nkey, sid)
            if passing and any(c["Status"] != PASSING for c in checks):
                continue
            out.append({"Node": render.node_json(node), "Service": render.node_service_json(svc),
                        "Checks": checks})
        return out

    # ---- agent --------------------------------------------------------------------------------

    def _member(self) -> dict[str, Any]:
        s = self.server
        return {
            "Name": s.node_name, "Addr": s.node_address, "Port": 8301,
            "Tags": {"acls": "0", "build": f"{CONSUL_VERSION}:waypost", "dc": s.datacenter,
                     "id": self.store.node_id, "port": "8300", "role": "consul", "segment": "",
                     "vsn": "2", "vsn_max": "3", "vsn_min": "2", "wan_join_port": "8302"},
            "Status": 1, "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
            "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
        }

    async def agent_self(self, request: web.Request) -> web.Response:
        s = self.server
        data = {
            "Config": {"Datacenter": s.datacenter, "PrimaryDatacenter": s.datacenter, "NodeName": s.node_name,
                       "NodeID": self.store.node_id, "Revision": "waypost", "Server": True,
                       "Version": CONSUL_VERSION, "BuildDate": "1970-01-01T00:00:00Z"},
            "DebugConfig": {"Datacenter": s.datacenter, "NodeName": s.node_name, "DataDir": s.data_dir or "",
                            "DevMode": s.data_dir is None, "ACLsEnabled": s.token is not None,
                            "ClientAddrs": [s.host], "HTTPPort": s.port},
            "Coord": None,
            "Member": self._member(),
            "Stats": {"waypost": {"index": str(self.store.index), "services": str(len(self.store.services)),
                                  "blocked_queries": str(self.store.waiter_count())}},
            "Meta": {"consul-network-segment": ""},
        }
        return s.reply(request, data)

    async def agent_members(self, request: web.Request) -> web.Response:
        return self.server.reply(request, [self._member()])

    async def agent_services(self, request: web.Request) -> web.Response:
        pred = _filter(request)
        dc = self.server.datacenter

        def compute() -> tuple[int, Any]:
            services = self.store.local_services()
            items = [render.agent_service_json(svc, dc) for _, svc in sorted(services.items())]
            return self.store.table_index("services"), {s["ID"]: s for s in _apply(pred, items)}

        idx, data = await self.server.blocking(request, ["t:services"], compute)
        return self.server.reply(request, data, idx)

    async def agent_service(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        dc = self.server.datacenter
        self.server.wait_params(request)  # validate ?index / ?wait

        def compute() -> tuple[str, Any]:
            svc = self.store.services.get((self.store.node_key, sid))
            if svc is None:
                raise not_found(f"unknown service ID: {sid}")
            data = render.agent_service_json(svc, dc)
            digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
            data["ContentHash"] = digest
            return digest, data

        digest, data = await self.server.blocking_hash(request, ["t:services"], compute)
        return self.server.reply(request, data, self.store.table_index("services"),
                                 headers={"X-Consul-ContentHash": digest})

    async def agent_checks(self, request: web.Request) -> web.Response:
        pred = _filter(request)

        def compute() -> tuple[int, Any]:
            items = [c for _, c in sorted(self.store.local_checks().items())]
            return self.store.table_index("checks"), {c["CheckID"]: c for c in _apply(pred, items)}

        idx, data = await self.server.blocking(request, ["t:checks"], compute)
        return self.server.reply(request, data, idx)

    async def agent_service_register(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        svc, checks = agent_service_registration(body, self.server.node_name)
        replace = request.query.get("replace-existing-checks", None)
        replace_checks = replace is not None and replace in ("", "true")
        changes = self._local_node_changes()
        changes.append(self.store.register_service(self.server.node_name, svc, checks, replace_checks))
        return await self._agent_write(*changes)

    async def agent_service_deregister(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        if (self.store.node_key, sid) not in self.store.services:
            raise not_found(f'Unknown service ID "{sid}". Ensure that the service ID is passed, not the service name.')
        return await self._agent_write(self.store.deregister_service(self.server.node_name, sid))

    async def agent_service_maintenance(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        enable = self._enable_param(request)
        svc = self.store.services.get((self.store.node_key, sid))
        if svc is None:
            raise not_found(f'No service registered with ID "{sid}"')
        check_id = SERVICE_MAINT_PREFIX + sid
        if enable:
            if (self.store.node_key, check_id) in self.store.checks:
                return await self._agent_write()
            chk = {
                "Node": self.server.node_name, "CheckID": check_id, "Name": "Service Maintenance Mode",
                "Status": CRITICAL, "Notes": request.query.get("reason") or DEFAULT_SERVICE_MAINT_REASON,
                "Output": "", "ServiceID": sid, "ServiceName": svc["Service"], "ServiceTags": list(svc["Tags"]),
                "Type": "maintenance", "Interval": "", "Timeout": "", "ExposedPort": 0, "Definition": {},
            }
            return await self._agent_write(self.store.register_check(self.server.node_name, chk, None))
        return await self._agent_write(self.store.deregister_check(self.server.node_name, check_id))

    async def agent_maintenance(self, request: web.Request) -> web.Response:
        enable = self._enable_param(request)
        changes = self._local_node_changes()
        if enable:
            if (self.store.node_key, NODE_MAINT_ID) not in self.store.checks:
                chk = {
                    "Node": self.server.node_name, "CheckID": NODE_MAINT_ID, "Name": "Node Maintenance Mode",
                    "Status": CRITICAL, "Notes": request.query.get("reason") or DEFAULT_NODE_MAINT_REASON,
                    "Output": "", "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "maintenance",
                    "Interval": "", "Timeout": "", "ExposedPort": 0, "Definition": {},
                }
                changes.append(self.store.register_check(self.server.node_name, chk, None))
        else:
            changes.append(self.store.deregister_check(self.server.node_name, NODE_MAINT_ID))
        return await self._agent_write(*changes)

    @staticmethod
    def _enable_param(request: web.Request) -> bool:
        if "enable" not in request.query:
            raise bad_request("Missing value for enable")
        raw = request.query["enable"]
        value = {"1": True, "t": True, "T": True, "true": True, "TRUE": True, "True": True,
                 "0": False, "f": False, "F": False, "false": False, "FALSE": False, "False": False}.get(raw)
        if value is None:
            raise bad_request(f'Invalid value for enable: "{raw}"')
        return value

    async def agent_check_register(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise bad_request("Request decode failed: the body must be a JSON object (a check definition)")
        f = Fields(body, "CheckDefinition")
        name = f.str("Name")
        if not name:
            raise bad_request("Missing check name")
        status = f.str("Status")
        if status and status not in VALID_STATUSES:
            raise bad_request("Bad check status")
        service_id = f.str("ServiceID")
        svc = None
        if service_id:
            svc = self.store.services.get((self.store.node_key, service_id))
            if svc is None:
                raise not_found(f'ServiceID "{service_id}" does not exist')
        record, definition = build_check(f, self.server.node_name, f.str("CheckID") or f.str("ID") or name,
                                         name, svc, status_message="Bad check status")
        changes = self._local_node_changes()
        changes.append(self.store.register_check(self.server.node_name, record, definition))
        return await self._agent_write(*changes)

    def _known_check(self, cid: str) -> None:
        if not self.store.is_local_check(cid):
            raise not_found(f'Unknown check ID "{cid}". Ensure that the check ID is passed, not the check name.')

    async def agent_check_deregister(self, request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        self._known_check(cid)
        return await self._agent_write(self.store.deregister_check(self.server.node_name, cid))

    async def _ttl_update(self, cid: str, status: str, output: str) -> web.Response:
        self._known_check(cid)
        if not self.server.checks.is_ttl(cid):
            raise HTTPError(500, f'CheckID "{cid}" does not have associated TTL')
        change = self.server.checks.update_ttl(cid, status, output)
        await self.server.commit(change)
        return web.Response(status=200, text="", content_type="text/plain")

    async def agent_check_pass(self, request: web.Request) -> web.Response:
        return await self._ttl_update(request.match_info["id"], PASSING, request.query.get("note", ""))

    async def agent_check_warn(self, request: web.Request) -> web.Response:
        return await self._ttl_update(request.match_info["id"], WARNING, request.query.get("note", ""))

    async def agent_check_fail(self, request: web.Request) -> web.Response:
        return await self._ttl_update(request.match_info["id"], CRITICAL, request.query.get("note", ""))

    async def agent_check_update(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise bad_request('Request decode failed: the body must be a JSON object like {"Status": "passing"}')
        f = Fields(body, "checkUpdate")
        status = f.str("Status")
        if status not in VALID_STATUSES:
            raise bad_request(f"Invalid check status: '{status}'")
        return await self._ttl_update(request.match_info["id"], status, f.str("Output"))

    def _agent_health(self, svc: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
        """Consul's agentHealthService: the agent's own checks of the service and its node."""
        checks = [c for c in self.store.health_entry_checks(self.store.node_key, svc["ID"])
                  if c["CheckID"] != SERF_CHECK_ID]
        status = aggregated_status(checks)
        code = {PASSING: 200, WARNING: 429}.get(status, 503)
        info = {"AggregatedStatus": status, "Service": render.agent_service_json(svc, self.server.datacenter),
                "Checks": checks}
        return code, status, info

    @staticmethod
    def _wants_text(request: web.Request) -> bool:
        if request.headers.get("Accept", "").startswith("text/plain"):
            return True
        return request.query.get("format", "") == "text"

    async def agent_health_id(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        svc = self.store.services.get((self.store.node_key, sid))
        if svc is None:
            reason = f"ServiceId {sid} not found"
            if self._wants_text(request):
                return text_response(404, reason)
            return self.server_json(request, {"AggregatedStatus": CRITICAL, "Service": None, "Checks": None}, 404)
        code, status, info = self._agent_health(svc)
        if self._wants_text(request):
            return text_response(code, status)
        return self.server_json(request, info, code)

    async def agent_health_name(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        code, status, results = 404, f"ServiceName {name} Not Found", []
        for _, svc in sorted(self.store.local_services().items()):
            if svc["Service"] != name:
                continue
            scode, sstatus, info = self._agent_health(svc)
            results.append(info)
            if code == 404 or scode > code:
                code, status = scode, sstatus
        if self._wants_text(request):
            return text_response(code, status)
        return self.server_json(request, results, code)

    def server_json(self, request: web.Request, data: Any, status: int) -> web.Response:
        resp = self.server.reply(request, data)
        resp.set_status(status)
        return resp

    # ---- catalog ------------------------------------------------------------------------------

    async def _catalog_body(self, request: web.Request, kind: str) -> tuple[Fields, str]:
        """The JSON object of a catalog/(de)register request, its datacenter checked, and its node."""
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise bad_request(f"Request decode failed: the body must be a JSON object (a {kind})")
        f = Fields(body, kind)
        dc = f.str("Datacenter")
        if dc and dc != self.server.datacenter:
            raise HTTPError(500, "No path to datacenter")
        node = f.str("Node")
        if not node:
            raise bad_request("Must provide node")
        return f, node

    async def catalog_register(self, request: web.Request) -> web.Response:
        f, node = await self._catalog_body(request, "RegisterRequest")
        if "\x00" in node:  # the data dir keys rows by node + NUL + ID
            raise bad_request("Invalid node name: it contains a NUL character")
        skip = f.bool("SkipNodeUpdate")
        address = f.str("Address")
        existing = self.store.node(node)
        if not address and not (skip and existing):
            raise bad_request("Must provide address if SkipNodeUpdate is not set")
        tagged = f.str_map("TaggedAddresses") if f.has("TaggedAddresses") else None
        node_meta = f.str_map("NodeMeta") if f.has("NodeMeta") else None
        svc = None
        sf = f.obj("Service")
        if sf is not None:
            if not (sf.str("Service") or sf.str("Name")):
                raise bad_request("Must provide service name (Service.Service)")
            svc = build_service(sf)
        nkey = node.lower()
        services = self.store.node_services(nkey)
        if svc is not None:
            services[svc["ID"]] = svc
        checks = []
        cf = f.obj("Check")
        if cf is not None:
            checks.append(catalog_check(cf, node, services))
        checks.extend(catalog_check(c, node, services) for c in f.obj_list("Checks"))
        change = self.store.catalog_register(node, address or (existing or {}).get("Address", ""),
                                             f.str("ID"), tagged, node_meta, skip, svc, checks)
        self.server.checks.sync()
        await self.server.commit(change)
        return self.server.reply(request, True)

    async def catalog_deregister(self, request: web.Request) -> web.Response:
        f, node = await self._catalog_body(request, "DeregisterRequest")
        if f.str("ServiceID"):
            change = self.store.deregister_service(node, f.str("ServiceID"))
        elif f.str("CheckID"):
            change = self.store.deregister_check(node, f.str("CheckID"))
        else:
            change = self.store.deregister_node(node)
        self.server.checks.sync()
        await self.server.commit(change)
        return self.server.reply(request, True)

    async def catalog_datacenters(self, request: web.Request) -> web.Response:
        return self.server.reply(request, [self.server.datacenter])

    async def catalog_nodes(self, request: web.Request) -> web.Response:
        pred = _filter(request)
        meta = _node_meta(request)

        def compute() -> tuple[int, Any]:
            nodes = [render.node_json(n) for _, n in sorted(self.store.nodes.items()) if _meta_ok(n, meta)]
            return self.store.table_index("nodes"), _apply(pred, nodes)

        idx, data = await self.server.blocking(request, ["t:nodes"], compute)
        return self.server.reply(request, data, idx)

    async def catalog_services(self, request: web.Request) -> web.Response:
        meta = _node_meta(request)
        pred = _filter(request)

        def compute() -> tuple[int, Any]:
            instances = [render.catalog_service_json(self.store.nodes[nkey], svc)
                         for (nkey, _), svc in self.store.services.items()
                         if not meta or _meta_ok(self.store.nodes[nkey], meta)]
            return self.store.table_index("nodes", "services"), _tags_by_name(_apply(pred, instances))

        idx, data = await self.server.blocking(request, ["t:nodes", "t:services"], compute)
        return self.server.reply(request, data, idx)

    async def catalog_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        tags = request.query.getall("tag", [])
        meta = _node_meta(request)
        pred = _filter(request)

        def compute() -> tuple[int, Any]:
            items = []
            for (nkey, _), svc in self.store.instances(name):
                node = self.store.nodes[nkey]
                if (tags and not _has_tags(svc, tags)) or (meta and not _meta_ok(node, meta)):
                    continue
                items.append(render.catalog_service_json(node, svc))
            return self.store.service_name_index(name, with_checks=False), _apply(pred, items)

        idx, data = await self.server.blocking(request, ["s:" + name.lower()], compute)
        return self.server.reply(request, data, idx)

    async def catalog_node(self, request: web.Request) -> web.Response:
        name = request.match_info["node"]
        pred = _filter(request)

        def compute() -> tuple[int, Any]:
            node = self.store.node(name)
            idx = self.store.table_index("nodes", "services")
            if node is None:
                return idx, None
            nkey = name.lower()
            services = [render.node_service_json(s) for _, s in sorted(self.store.node_services(nkey).items())]
            services = _apply(pred, services)
            return idx, {"Node": render.node_json(node), "Services": {s["ID"]: s for s in services}}

        idx, data = await self.server.blocking(request, ["t:nodes", "t:services"], compute)
        return self.server.reply(request, data, idx)

    # ---- health -------------------------------------------------------------------------------

    async def health_node(self, request: web.Request) -> web.Response:
        nkey = request.match_info["node"].lower()
        pred = _filter(request)

        def compute() -> tuple[int, Any]:
            checks = [c for _, c in sorted(self.store.all_node_checks(nkey).items())]
            return self.store.table_index("checks"), _apply(pred, checks)

        idx, data = await self.server.blocking(request, ["t:checks"], compute)
        return self.server.reply(request, data, idx)

    def _checks(self, keep: Callable[[dict[str, Any]], bool], meta: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Checks in (node, check ID) order that `keep` accepts, on nodes matching ``node-meta``."""
        return [c for (n, _), c in sorted(self.store.checks.items())
                if keep(c) and (not meta or _meta_ok(self.store.nodes[n], meta))]

    async def health_checks(self, request: web.Request) -> web.Response:
        name = request.match_info["service"].lower()
        meta = _node_meta(request)
        pred = _filter(request)

        def compute() -> tuple[int, Any]:
            checks = self._checks(lambda c: c["ServiceName"].lower() == name and bool(c["ServiceID"]), meta)
            return self.store.table_index("checks"), _apply(pred, checks)

        idx, data = await self.server.blocking(request, ["t:checks"], compute)
        return self.server.reply(request, data, idx)

    async def health_service(self, request: web.Request) -> web.Response:
        name = request.match_info["service"]
        tags = request.query.getall("tag", [])
        passing = query_flag(request.query, "passing")
        meta = _node_meta(request)
        pred = _filter(request)

        pretty = "pretty" in request.query

        def compute() -> tuple[int, Any]:
            idx = self.store.service_name_index(name, with_checks=True)

            def build() -> Any:
                return _apply(pred, self._entries_for(name, tags, passing, meta))

            if pretty:
                return idx, build()
            return idx, self._cached(request, (idx, self.store.health_generation(name)), build)

        idx, data = await self.server.blocking(request, ["s:" + name.lower()], compute)
        if pretty:
            return self.server.reply(request, data, idx)
        return self.server.reply_raw(request, data, idx)

    async def health_state(self, request: web.Request) -> web.Response:
        state = request.match_info["state"]
        if state not in ("any", PASSING, WARNING, CRITICAL):
            raise bad_request(f"Invalid state {state!r}: use any, passing, warning or critical")
        meta = _node_meta(request)
        pred = _filter(request)

        def compute() -> tuple[int, Any]:
            checks = self._checks(lambda c: state == "any" or c["Status"] == state, meta)
            return self.store.table_index("checks"), _apply(pred, checks)

        idx, data = await self.server.blocking(request, ["t:checks"], compute)
        return self.server.reply(request, data, idx)

    # ---- KV -----------------------------------------------------------------------------------

    async def kv_get(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        q = request.query
        store = self.store
        if "keys" in q:
            sep = q.get("separator", q.get("seperator", ""))

            def compute_keys() -> tuple[int, Any]:
                out: list[str] = []
                for entry in store.kv_prefix(key):
                    k = entry["Key"]
                    if sep:
                        cut = k.find(sep, len(key))
                        if cut >= 0:
                            k = k[: cut + len(sep)]
                    if not out or out[-1] != k:
                        out.append(k)
                return store.kv_prefix_index(key), out

            idx, keys = await self.server.blocking(request, ["t:kvs"], compute_keys)
            if not keys and key:
                return self._not_found(request, idx)
            return self.server.reply(request, keys, idx)
        if query_flag(q, "recurse"):
            idx, entries = await self.server.blocking(
                request, ["t:kvs"], lambda: (store.kv_prefix_index(key), list(store.kv_prefix(key))))
            if not entries:
                return self._not_found(request, idx)
            return self.server.reply(request, entries, idx)
        if not key:
            raise bad_request("Missing key name")

        def compute_one() -> tuple[int, Any]:
            entry = store.kv.get(key)
            return (entry["ModifyIndex"] if entry else store.tables["kvs"]), entry

        idx, entry = await self.server.blocking(request, ["t:kvs"], compute_one)
        if entry is None:
            return self._not_found(request, idx)
        if "raw" in q:
            value = base64.b64decode(entry["Value"]) if entry["Value"] else b""
            headers = {"X-Consul-Index": str(max(idx, 1)), "X-Content-Type-Options": "nosniff",
                       "Content-Security-Policy": "sandbox", "X-Consul-KnownLeader": "true",
                       "X-Consul-LastContact": "0"}
            return web.Response(body=value, content_type="text/plain", headers=headers)
        return self.server.reply(request, [entry], idx)

    def _not_found(self, request: web.Request, idx: int) -> web.Response:
        resp = self.server.reply(request, None, idx)
        return web.Response(status=404, headers={k: v for k, v in resp.headers.items()
                                                 if k.startswith("X-Consul")})

    @staticmethod
    def _conflicting(request: web.Request, *flags: str) -> None:
        if sum(1 for f in flags if f in request.query) > 1:
            raise bad_request("Conflicting flags: " + request.query_string)

    async def kv_put(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if not key:
            raise bad_request("Missing key name")
        self._conflicting(request, "cas", "acquire", "release")
        if "acquire" in request.query or "release" in request.query:
            raise bad_request("?acquire and ?release need Consul sessions, which the waypost catalog does not "
                              "support; use ?cas=<ModifyIndex> for check-and-set instead")
        flags = parse_uint(request.query, "flags", "flags") or 0
        cas = parse_uint(request.query, "cas", "cas")
        length = request.content_length
        if length is not None and length > KV_MAX_VALUE:
            raise HTTPError(413, f"Request body({length} bytes) too large, max size: {KV_MAX_VALUE} bytes. See "
                                 "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.")
        value = await request.read()
        if len(value) > KV_MAX_VALUE:
            raise HTTPError(413, f"Request body({len(value)} bytes) too large, max size: {KV_MAX_VALUE} bytes.")
        ok, change = self.store.kv_put(key, value, flags, cas)
        await self.server.commit(change)
        return self.server.reply(request, ok)

    async def kv_delete(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        self._conflicting(request, "recurse", "cas")
        recurse = query_flag(request.query, "recurse")
        if not key and not recurse:
            raise bad_request("Missing key name")
        cas = parse_uint(request.query, "cas", "cas")
        ok, change = self.store.kv_delete(key, recurse, cas)
        await self.server.commit(change)
        return self.server.reply(request, ok if cas is not None else True)

    # ---- status -------------------------------------------------------------------------------

    async def status_leader(self, request: web.Request) -> web.Response:
        return self.server.reply(request, f"{self.server.node_address}:8300")

    async def status_peers(self, request: web.Request) -> web.Response:
        return self.server.reply(request, [f"{self.server.node_address}:8300"])

    # ---- metrics ------------------------------------------------------------------------------

    async def agent_metrics(self, request: web.Request) -> web.Response:
        """Consul's ``/v1/agent/metrics``: Prometheus text with ``?format=prometheus``, else its JSON shape."""
        if request.query.get("format") == "prometheus":
            return web.Response(body=generate_latest(self.metrics), headers={"Content-Type": CONTENT_TYPE_LATEST})
        gauges = [{"Name": sample.name, "Value": sample.value, "Labels": dict(sample.labels)}
                  for family in self.metrics.collect() for sample in family.samples]
        return self.server.reply(request, {"Timestamp": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime()),
                                           "Gauges": gauges, "Points": [], "Counters": [], "Samples": []})


CONSUL_VERSION = "1.17.0"


async def _put_only(request: web.Request) -> web.Response:
    raise web.HTTPMethodNotAllowed(request.method, ["PUT"])


def put_only(router: web.UrlDispatcher, path: str, handler: Callable[[web.Request], Any]) -> None:
    """Route PUT on `path` to `handler` and every other method to Consul's 405 ``method X not allowed``."""
    router.add_put(path, handler)
    router.add_route("*", path, _put_only)


def add_routes(server: CatalogServer) -> None:
    """Register every endpoint on ``server.app`` (more specific paths first)."""
    api = Api(server)
    r = server.app.router
    get, put = r.add_get, r.add_put
    get("/v1/agent/self", api.agent_self, allow_head=False)
    get("/v1/agent/members", api.agent_members, allow_head=False)
    get("/v1/agent/metrics", api.agent_metrics, allow_head=False)
    get("/v1/agent/services", api.agent_services, allow_head=False)
    get("/v1/agent/checks", api.agent_checks, allow_head=False)
    # the GET /v1/agent/service/{id} route below would swallow other methods on these: 405 instead
    put_only(r, "/v1/agent/service/register", api.agent_service_register)
    put_only(r, "/v1/agent/service/deregister/{id:.+}", api.agent_service_deregister)
    put_only(r, "/v1/agent/service/maintenance/{id:.+}", api.agent_service_maintenance)
    get("/v1/agent/service/{id:.+}", api.agent_service, allow_head=False)
    put("/v1/agent/maintenance", api.agent_maintenance)
    put("/v1/agent/check/register", api.agent_check_register)
    put("/v1/agent/check/deregister/{id:.+}", api.agent_check_deregister)
    put("/v1/agent/check/pass/{id:.+}", api.agent_check_pass)
    put("/v1/agent/check/warn/{id:.+}", api.agent_check_warn)
    put("/v1/agent/check/fail/{id:.+}", api.agent_check_fail)
    put("/v1/agent/check/update/{id:.+}", api.agent_check_update)
    get("/v1/agent/health/service/id/{id:.+}", api.agent_health_id, allow_head=False)
    get("/v1/agent/health/service/name/{name:.+}", api.agent_health_name, allow_head=False)
    put("/v1/catalog/register", api.catalog_register)
    put("/v1/catalog/deregister", api.catalog_deregister)
    get("/v1/catalog/datacenters", api.catalog_datacenters, allow_head=False)
    get("/v1/catalog/nodes", api.catalog_nodes, allow_head=False)
    get("/v1/catalog/services", api.catalog_services, allow_head=False)
    get("/v1/catalog/service/{name:.+}", api.catalog_service, allow_head=False)
    get("/v1/catalog/node/{node:.+}", api.catalog_node, allow_head=False)
    get("/v1/health/node/{node:.+}", api.health_node, allow_head=False)
    get("/v1/health/checks/{service:.+}", api.health_checks, allow_head=False)
    get("/v1/health/service/{service:.+}", api.health_service, allow_head=False)
    get("/v1/health/state/{state:.+}", api.health_state, allow_head=False)
    get("/v1/kv/{key:.*}", api.kv_get, allow_head=False)
    put("/v1/kv/{key:.*}", api.kv_put)
    r.add_delete("/v1/kv/{key:.*}", api.kv_delete)
    get("/v1/status/leader", api.status_leader, allow_head=False)
    get("/v1/status/peers", api.status_peers, allow_head=False)
