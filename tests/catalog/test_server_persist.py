"""Durability of `waypost catalog --data-dir`: acknowledged writes survive SIGKILL mid-burst."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import aiohttp
import pytest

from tests.ports import free_port
from waypost.server.app import CatalogServer


def start_catalog(port: int, data_dir: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "waypost", "catalog", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir,
         "--node", "persist-node", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


async def wait_ready(http: aiohttp.ClientSession, url: str, proc: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"catalog exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            async with http.get(url + "/v1/status/leader") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("catalog did not start")


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.mark.slow
async def test_acknowledged_registrations_survive_sigkill(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = str(tmp_path / "data")
    proc = start_catalog(port, data_dir)
    acked: set[str] = set()
    max_index = 0
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, url, proc)
            async with http.put(url + "/v1/kv/before/crash?flags=7", data=b"kept") as resp:
                assert await resp.json() is True
            stop = asyncio.Event()

            async def client(n: int) -> None:
                nonlocal max_index
                i = 0
                while not stop.is_set() and i < 400:
                    sid = f"svc-{n}-{i}"
                    body = {"Name": f"burst{n % 3}", "ID": sid, "Port": 1000 + i,
                            "Check": {"TTL": "60s", "Status": "passing"}}
                    try:
                        async with http.put(url + "/v1/agent/service/register", data=json.dumps(body)) as resp:
                            if resp.status == 200:
                                acked.add(sid)
                    except (TimeoutError, aiohttp.ClientError):
                        return
                    if i % 10 == 0:
                        try:
                            async with http.get(url + "/v1/agent/services") as resp:
                                max_index = max(max_index, int(resp.headers.get("X-Consul-Index", 0)))
                        except aiohttp.ClientError:
                            return
                    i += 1

            tasks = [asyncio.create_task(client(n)) for n in range(16)]
            deadline = time.monotonic() + 30
            while len(acked) < 150 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            kill(proc)  # mid-burst: requests are in flight
            stop.set()
            await asyncio.gather(*tasks)
            assert len(acked) >= 150

            proc = start_catalog(port, data_dir)
            await wait_ready(http, url, proc)
            async with http.get(url + "/v1/agent/services") as resp:
                services = await resp.json()
                restarted_index = int(resp.headers["X-Consul-Index"])
            missing = acked - set(services)
            assert not missing, f"{len(missing)} acknowledged registrations lost, e.g. {sorted(missing)[:5]}"
            assert restarted_index >= 1
            async with http.get(url + "/v1/catalog/services") as resp:
                assert int(resp.headers["X-Consul-Index"]) >= 1
            async with http.get(url + "/v1/agent/checks") as resp:
                checks = await resp.json()
            some = sorted(acked)[0]
            assert checks[f"service:{some}"]["Status"] == "passing"
            async with http.get(url + "/v1/kv/before/crash") as resp:
                entry = (await resp.json())[0]
                assert entry["Flags"] == 7
            # the raft-ish index never goes backwards across a restart
            async with http.put(url + "/v1/kv/after/restart", data=b"x") as resp:
                assert resp.status == 200
            async with http.get(url + "/v1/kv/after/restart") as resp:
                assert int(resp.headers["X-Consul-Index"]) > max_index
            async with http.get(url + "/v1/agent/self") as resp:
                assert (await resp.json())["Config"]["NodeName"] == "persist-node"
    finally:
        kill(proc)


async def test_in_process_restart_keeps_state_and_node_id(tmp_path):
    data_dir = str(tmp_path / "d")
    srv = await _start(data_dir)
    async with aiohttp.ClientSession() as http:
        async with http.put(srv.url + "/v1/agent/service/register",
                            data=json.dumps({"Name": "keep", "Port": 7, "Tags": ["t"]})) as resp:
            assert resp.status == 200
        async with http.put(srv.url + "/v1/agent/service/register",
                            data=json.dumps({"Name": "gone", "Port": 8})) as resp:
            assert resp.status == 200
        async with http.put(srv.url + "/v1/agent/service/deregister/gone") as resp:
            assert resp.status == 200
    node_id = srv.store.node_id
    index = srv.store.index
    await srv.stop()

    srv2 = CatalogServer(port=0, data_dir=data_dir, node_name="n1")
    await srv2.start()
    try:
        assert srv2.store.node_id == node_id
        assert srv2.store.index >= index
        assert set(srv2.store.local_services()) == {"keep"}
        assert srv2.store.local_services()["keep"]["Tags"] == ["t"]
    finally:
        await srv2.stop()


async def test_without_data_dir_the_index_starts_fresh():
    srv = CatalogServer(port=0, node_name="m")
    await srv.start()
    try:
        assert srv.store.index <= 3  # node + serfHealth only
        assert srv.persister is None
    finally:
        await srv.stop()


async def test_unwritable_data_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    srv = CatalogServer(port=0, data_dir=str(blocker / "sub"), node_name="x")
    with pytest.raises(Exception) as info:
        await srv.start()
    assert "data-dir" in str(info.value)


async def test_cli_rejects_bad_listen(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "waypost", "catalog", "--listen", "127.0.0.1:notaport",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode != 0
    assert b"--listen" in err and b"Traceback" not in err


async def test_cli_logs_listen_address_and_stops_on_sigterm(tmp_path):
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "waypost", "catalog", "--listen", f"127.0.0.1:{port}", "--data-dir",
        str(tmp_path / "c"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = b""
        deadline = time.monotonic() + 30
        while b"listening" not in line and time.monotonic() < deadline:
            line = await asyncio.wait_for(proc.stderr.readline(), 20)
        assert f"127.0.0.1:{port}".encode() in line
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 10)
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _start(data_dir: str) -> CatalogServer:
    """A started single-node catalog keeping its data in `data_dir`."""
    srv = CatalogServer(port=0, data_dir=data_dir, node_name="n1")
    await srv.start()
    return srv


async def _agent_check(http: aiohttp.ClientSession, url: str, cid: str) -> dict:
    async with http.get(url + "/v1/agent/checks") as resp:
        return (await resp.json())[cid]


async def _ttl_service(http: aiohttp.ClientSession, url: str, ttl: str, *notes: str) -> None:
    body = {"Name": "beat", "ID": "beat-1", "Port": 1, "Check": {"TTL": ttl}}
    async with http.put(url + "/v1/agent/service/register", data=json.dumps(body)) as resp:
        assert resp.status == 200
    for note in notes:
        async with http.put(url + "/v1/agent/check/pass/service:beat-1", params={"note": note}) as resp:
            assert resp.status == 200


async def test_ttl_that_expired_while_down_is_critical_after_restart(tmp_path):
    """Consul's loadCheckState: a TTL whose deadline passed while the agent was down starts critical."""
    data_dir = str(tmp_path / "d")
    srv = await _start(data_dir)
    async with aiohttp.ClientSession() as http:
        await _ttl_service(http, srv.url, "1s", "first", "last words")
        await srv.stop()
        await asyncio.sleep(1.3)
        srv = await _start(data_dir)
        try:
            chk = await _agent_check(http, srv.url, "service:beat-1")
            assert chk["Status"] == "critical"
            assert chk["Output"] == "TTL expired (last output before timeout follows): last words"
        finally:
            await srv.stop()


async def test_ttl_running_across_restart_keeps_output_and_remaining_time(tmp_path):
    data_dir = str(tmp_path / "d")
    srv = await _start(data_dir)
    async with aiohttp.ClientSession() as http:
        # the second pass changes only the output: it must reach the disk too
        await _ttl_service(http, srv.url, "4s", "first", "second")
        await srv.stop()
        await asyncio.sleep(1.5)
        srv = await _start(data_dir)
        started = time.monotonic()
        try:
            chk = await _agent_check(http, srv.url, "service:beat-1")
            assert (chk["Status"], chk["Output"]) == ("passing", "second")
            while chk["Status"] == "passing" and time.monotonic() - started < 6:
                await asyncio.sleep(0.05)
                chk = await _agent_check(http, srv.url, "service:beat-1")
            # about 2.5 s were left of the 4 s TTL; a full TTL would run to 4 s after the restart
            assert chk["Status"] == "critical" and time.monotonic() - started < 3.5
            assert chk["Output"] == "TTL expired (last output before timeout follows): second"
        finally:
            await srv.stop()


async def test_ttl_state_without_deadline_gets_a_full_ttl(tmp_path):
    """Data dirs written before deadlines were persisted still load: the clock restarts at once."""
    import sqlite3

    data_dir = str(tmp_path / "d")
    srv = await _start(data_dir)
    async with aiohttp.ClientSession() as http:
        await _ttl_service(http, srv.url, "1s", "ok")
        await srv.stop()
        with sqlite3.connect(os.path.join(data_dir, "catalog.db")) as db:
            db.execute("DELETE FROM rows WHERE kind = 'ttl'")
        await asyncio.sleep(1.2)
        srv = await _start(data_dir)
        try:
            chk = await _agent_check(http, srv.url, "service:beat-1")
            assert (chk["Status"], chk["Output"]) == ("passing", "ok")
            await asyncio.sleep(1.3)
            assert (await _agent_check(http, srv.url, "service:beat-1"))["Status"] == "critical"
        finally:
            await srv.stop()


async def test_deregistered_ttl_check_leaves_no_ttl_row(tmp_path):
    import sqlite3

    data_dir = str(tmp_path / "d")
    srv = await _start(data_dir)
    async with aiohttp.ClientSession() as http:
        await _ttl_service(http, srv.url, "30s", "ok")
        async with http.put(srv.url + "/v1/agent/service/deregister/beat-1") as resp:
            assert resp.status == 200
    await srv.stop()
    with sqlite3.connect(os.path.join(data_dir, "catalog.db")) as db:
        assert db.execute("SELECT count(*) FROM rows WHERE kind = 'ttl'").fetchone()[0] == 0


async def test_ttl_expired_during_sigkill_downtime_is_critical(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = str(tmp_path / "data")
    proc = start_catalog(port, data_dir)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, url, proc)
            await _ttl_service(http, url, "1s", "alive")
            kill(proc)
            await asyncio.sleep(1.2)
            proc = start_catalog(port, data_dir)
            await wait_ready(http, url, proc)
            chk = await _agent_check(http, url, "service:beat-1")
            assert chk["Status"] == "critical"
            assert chk["Output"] == "TTL expired (last output before timeout follows): alive"
    finally:
        kill(proc)
