"""Admin HTTP endpoints, and the `ambassador` command: flags, start-up errors, a real process end to end."""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import socket
import sys

import aiohttp
import pytest

from tests.ambassador.conftest import Resp, ask, port_of
from tests.ports import free_port
from tests.proxying import open_and_echo
from waypost.ambassador import cli
from waypost.ambassador.admin import AdminServer
from waypost.config import ConfigError


async def test_admin_endpoints(backends, ambassador_factory):
    server = await backends(name="s")
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{server.port}"])
    assert await ask(port_of(amb), b"count me\n") == b"s:count me\n"
    admin = AdminServer(amb, "127.0.0.1", 0, token="sekrit")
    await admin.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(admin.url + "/healthz") as resp:
                assert resp.status == 200 and (await resp.json())["status"] == "ok"
            async with http.get(admin.url + "/v1/routes") as resp:
                assert resp.status == 401 and "Bearer" in (await resp.json())["error"]
            auth = {"Authorization": "Bearer sekrit"}
            async with http.get(admin.url + "/v1/routes", headers=auth) as resp:
                data = await resp.json()
            route = data["routes"][0]
            assert route["total"] == 1 and route["static"] is True
            assert route["backends"] == [{
                "address": f"127.0.0.1:{server.port}", "id": "", "state": "up", "active": 0, "total": 1,
                "bytes_up": len(b"count me\n"), "bytes_down": len(b"s:count me\n"), "connect_failures": 0}]
            async with http.get(admin.url + "/metrics", headers=auth) as resp:
                assert resp.status == 200 and resp.content_type == "text/plain"
                text = await resp.text()
    finally:
        await admin.stop()
    labels = f'backend="127.0.0.1:{server.port}",direction="up",route="127.0.0.1:0=127.0.0.1:{server.port}"'
    assert f"waypost_ambassador_bytes_total{{{labels}}} 9.0" in text
    assert "waypost_ambassador_connections_total{" in text
    assert f'waypost_ambassador_idle_closed_total{{route="127.0.0.1:0=127.0.0.1:{server.port}"}} 0.0' in text
    assert "waypost_ambassador_backend_state{" in text and "waypost_ambassador_connect_failures_total{" in text


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(("argv", "flag"), [
    ((), "--route"),
    (("--route", "6379"), "--route"),
    (("--route", "0=127.0.0.1:1", "--retries", "-1"), "--retries"),
    (("--route", "0=127.0.0.1:1", "--admin", "127.0.0.1:notaport"), "--admin"),
])
async def test_bad_flags_are_config_errors_naming_the_flag(argv, flag):
    with pytest.raises(ConfigError, match=flag):
        await cli.run(_args(*argv))


async def test_admin_port_in_use_is_a_config_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        addr = f"127.0.0.1:{busy.getsockname()[1]}"
        with pytest.raises(ConfigError, match="--admin"):
            await cli.run(_args("--route", f"127.0.0.1:{free_port()}=127.0.0.1:1", "--admin", addr))


async def _run_cli(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "waypost", "ambassador", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def test_cli_process_serves_a_static_route_and_stops_on_sigterm(redis_factory):
    redis = redis_factory()
    port, admin = free_port(), free_port()
    proc = await _run_cli("--route", f"127.0.0.1:{port}=127.0.0.1:{redis.port}", "--admin", f"127.0.0.1:{admin}")
    try:
        async with asyncio.timeout(15):
            while True:
                line = await proc.stderr.readline()
                assert line, "ambassador exited before it was ready"
                if b"ambassador ready" in line:
                    break
        client = await Resp.connect(port)
        assert await client.call("SET", "via", "cli") == "OK"
        assert await client.call("GET", "via") == b"cli"
        await client.close()
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{admin}/healthz") as resp:
            assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
    assert code == 0


async def test_cli_process_exits_non_zero_on_a_bad_route():
    proc = await _run_cli("--route", "6379=redis#")
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 2
    assert b"--route '6379=redis#': empty tag" in err


async def test_fd_exhaustion_refuses_new_connections_and_keeps_serving(backends):
    """With a tiny descriptor limit, extra clients are turned away; open ones keep working."""
    server = await backends(name="s")
    port = free_port()

    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "waypost", "ambassador", "--route", f"127.0.0.1:{port}=127.0.0.1:{server.port}",
        "--max-conns", "1000", stderr=asyncio.subprocess.PIPE, preexec_fn=low_fd_limit)
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    turned_away = 0
    try:
        startup = b""
        async with asyncio.timeout(15):
            while b"ambassador ready" not in startup:
                startup += await proc.stderr.readline()
        for i in range(60):
            conn = await open_and_echo(port, b"%d\n" % i, b"s:%d\n" % i, timeout=3)
            if conn is not None:
                held.append(conn)
            else:
                turned_away += 1
        assert len(held) == (128 - 32) // 2 and turned_away == 60 - len(held)
        for i, (reader, writer) in enumerate(held):  # everything already open still works
            writer.write(b"again %d\n" % i)
            assert await asyncio.wait_for(reader.readline(), 3) == b"s:again %d\n" % i
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.3)
        assert await ask(port, b"after\n") == b"s:after\n"  # descriptors came back
        assert proc.returncode is None
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 10)
    log = (startup + await proc.stderr.read()).decode()
    assert "Traceback" not in log
    assert "--max-conns 1000 is more than the open-files limit (128, two per connection) allows" in log
    assert log.count("connection limit reached (--max-conns 48, 48 open)") == 1


@pytest.mark.parametrize(("argv", "flag"), [
    (("--route", "127.0.0.1:7=127.0.0.1:1", "--workers", "0"), "--workers"),
    (("--route", "0=127.0.0.1:1", "--workers", "2"), "--workers needs fixed LISTEN ports"),
    (("--inject", "--workers", "2"), "--workers is for sidecar routes"),
])
async def test_bad_workers_flags_are_config_errors(argv, flag):
    with pytest.raises(ConfigError, match=flag):
        await cli.run(_args(*argv))


def _ambassador_pids(port: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read().split(b"\0")
            except OSError:
                continue
            if b"ambassador" in cmd and any(f"127.0.0.1:{port}=".encode() in arg for arg in cmd):
                pids.append(int(entry))
    return pids


async def test_workers_share_the_route_ports_and_follow_the_catalog(redis_factory, catalog_client, catalog_server):
    """`--workers 2`: a second process serves the same port (SO_REUSEPORT) with its own catalog watch;
    every connection, whichever process the kernel hands it to, reaches redis; both stop together."""
    from waypost.catalog import ServiceDef

    redis = redis_factory()
    await catalog_client.register(ServiceDef(id="cache-1", name="cache", address="127.0.0.1", port=redis.port))
    port = free_port()
    proc = await _run_cli("--route", f"127.0.0.1:{port}=cache", "--catalog", catalog_server.url, "--workers", "2")
    try:
        async with asyncio.timeout(20):
            while len(_ambassador_pids(port)) < 2:
                await asyncio.sleep(0.1)
            served = 0
            while served < 24:  # new connections spread over both listeners by source port
                try:
                    client = await Resp.connect(port)
                except OSError:
                    await asyncio.sleep(0.1)  # the worker may still be binding
                    continue
                assert await client.call("PING") == "PONG"
                await client.close()
                served += 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
    assert code == 0
    await asyncio.sleep(0.5)
    assert _ambassador_pids(port) == [], "a worker outlived the ambassador"


def _affinities(pid: int) -> list[set[int]]:
    """The CPU sets of every thread of a process."""
    return [os.sched_getaffinity(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")]


async def _workers_ready(proc: asyncio.subprocess.Process) -> str:
    async with asyncio.timeout(20):
        while True:
            line = (await proc.stderr.readline()).decode()
            assert line, "ambassador exited before its workers started"
            if "share the route ports" in line:
                return line


@pytest.mark.parametrize("affinity", ["auto", "off"])
async def test_workers_are_bound_to_their_own_cpus_unless_told_not_to(redis_factory, affinity):
    """`--workers 2` on a host with 2+ CPUs: by default the two processes run on disjoint halves of
    the CPUs this one may use (no worker is moved between CPUs by the scheduler); with
    `--cpu-affinity off` both keep every CPU. Either way every connection still reaches redis."""
    redis = redis_factory()
    port = free_port()
    allowed = os.sched_getaffinity(0)
    proc = await _run_cli("--route", f"127.0.0.1:{port}=127.0.0.1:{redis.port}", "--workers", "2",
                          "--cpu-affinity", affinity)
    try:
        line = await _workers_ready(proc)
        pids = _ambassador_pids(port)
        assert len(pids) == 2
        parent = [p for p in pids if p == proc.pid][0]
        child = [p for p in pids if p != proc.pid][0]
        parent_sets, child_sets = _affinities(parent), _affinities(child)
        assert all(s == parent_sets[0] for s in parent_sets), "a thread of the first worker was left unbound"
        if affinity == "auto" and len(allowed) > 1:
            first, second = parent_sets[0], child_sets[0]
            assert first and second and not first & second and first | second == allowed
            assert all(s == second for s in child_sets)
            assert "bound to CPUs" in line
        else:
            assert parent_sets[0] == allowed and all(s == allowed for s in child_sets)
            assert "bound to CPUs" not in line
        for _ in range(8):
            client = await Resp.connect(port)
            assert await client.call("PING") == "PONG"
            await client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
