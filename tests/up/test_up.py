"""`waypost up`: one process runs the catalog, registrator, DNS and injected ambassadors together."""

from __future__ import annotations

import asyncio
import time
import uuid

import dns.message
import dns.query
import dns.rdatatype

from tests.dockerkit import run as docker_run
from tests.inject.test_inject_docker import BACKEND_CMD, fetch
from tests.polling import eventually
from tests.procinfo import threads
from tests.up.conftest import CONNECT_LABEL, start_up, stop_up


def dns_a(port: int, name: str) -> list[str]:
    answer = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=2)
    return sorted(rr.address for rrset in answer.answer for rr in rrset if rr.rdtype == dns.rdatatype.A)


async def test_up_registers_resolves_and_routes(waypost_up, busybox_image, docker_client) -> None:
    svc = f"web-{uuid.uuid4().hex[:8]}"
    backend = await asyncio.to_thread(docker_run, docker_client, busybox_image, BACKEND_CMD,
                                      environment={"SERVICE_NAME": svc}, ports={"8080/tcp": None})
    client = await asyncio.to_thread(docker_run, docker_client, busybox_image, ["sleep", "3600"],
                                     extra_labels={CONNECT_LABEL: f"web:8080@{svc}"})
    backend.reload()
    ip = backend.attrs["NetworkSettings"]["IPAddress"]

    # registrator → catalog → DNS
    await eventually(lambda: asyncio.to_thread(lambda: dns_a(waypost_up.dns_port, f"{svc}.service.consul") == [ip]),
                     what="the backend's A record")
    # registrator → catalog → injected ambassador
    assert await eventually(lambda: fetch(client), what="answer through the injected ambassador") == backend.id[:12]

    status = waypost_up.status()
    [service] = [s for s in status["services"] if s["name"] == svc]
    assert [(i["address"], i["port"], i["status"]) for i in service["instances"]] == [(ip, 8080, "passing")]
    [amb] = [a for a in status["ambassadors"] if a["container"] == client.id[:12]]
    [route] = amb["routes"]
    assert route["service"] == svc and route["backends"][0]["address"] == f"{ip}:8080"
    assert route["backends"][0]["total"] >= 1
    assert status["dns"]["queries"] >= 1 and status["dns"]["stale"] is False
    assert status["registrator"]["node"] == "uptest"
    # one event loop does all of it; the only other threads are the Docker event bridge and the
    # namespace thread (no --data-dir here, so no disk writer; no resolver or executor threads)
    assert threads(waypost_up.proc.pid) == 3


def test_metrics_health_and_page(waypost_up) -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> tuple[str, dict[str, float]]:
        with urllib.request.urlopen(waypost_up.http + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return text, {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}

    text, values = scrape()
    assert "waypost_dns_queries_total" in text and "waypost_ambassador_max_connections" in text
    # the registrator and the embedded catalog are on the same page: connected, synced, holding services
    deadline = time.monotonic() + 10
    while values["waypost_registrator_syncs_total"] < 1 and time.monotonic() < deadline:  # first sync ends
        time.sleep(0.1)
        text, values = scrape()
    assert values["waypost_registrator_docker_connected"] == 1
    assert values["waypost_registrator_syncs_total"] >= 1
    assert values["waypost_registrator_last_sync_timestamp_seconds"] > time.time() - 3600
    assert values["waypost_catalog_nodes"] >= 1 and "waypost_catalog_service_instances" in values
    with urllib.request.urlopen(waypost_up.http + "/healthz", timeout=5) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(waypost_up.http + "/", timeout=5) as resp:
        assert b"/v1/waypost/status" in resp.read()
    # the catalog API shares the port
    with urllib.request.urlopen(waypost_up.http + "/v1/agent/self", timeout=5) as resp:
        assert b'"NodeName": "uptest"' in resp.read().replace(b'":"', b'": "')


def test_summary_and_clean_stop(tmp_path, docker_cleanup) -> None:
    up = start_up(tmp_path, "--data-dir", str(tmp_path / "data"))
    summary = up.log()
    for word in ("catalog", "status page", "dns", "registrator", "ambassadors", str(up.dns_port)):
        assert word in summary
    time.sleep(0.5)
    assert stop_up(up) == 0
    assert "Traceback" not in up.log()


def test_port_in_use_names_the_flag(tmp_path, docker_cleanup) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "waypost", "up", "--http", f"127.0.0.1:{port}", "--dns", "off"],
                             capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "--http" in out.stderr and "Traceback" not in out.stderr
