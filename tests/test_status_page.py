"""`waypost up`'s status page in headless Chromium: what it shows, and that it refreshes itself.

Chromium is driven over the DevTools protocol (aiohttp websockets, no extra dependency): the
page is loaded once, read through the DOM, a screenshot is saved under the test's tmp dir, a
service is registered, and the same page (a marker set on `window` proves it was not reloaded)
shows it a refresh later.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.dockerkit import run as docker_run
from tests.tooling import require_tool
from tests.up.conftest import (  # noqa: F401 - fixtures
    CONNECT_LABEL,
    busybox_image,
    docker_cleanup,
    docker_client,
    start_up,
    stop_up,
)
from waypost.catalog import CatalogClient, CheckDef, ServiceDef
from waypost.config import CatalogConfig

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1200,900", "--remote-debugging-port=0")


class Browser:
    """One headless Chromium and a DevTools session on its first page."""

    def __init__(self, proc: asyncio.subprocess.Process, session: aiohttp.ClientSession,
                 ws: aiohttp.ClientWebSocketResponse) -> None:
        self.proc, self.session, self.ws = proc, session, ws
        self._ids = itertools.count(1)

    @classmethod
    async def launch(cls, chromium: str, profile: Path) -> Browser:
        proc = await asyncio.create_subprocess_exec(
            chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.returncode is None, "chromium exited at start"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        session = aiohttp.ClientSession()
        async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
            [page] = [t for t in await resp.json(content_type=None) if t["type"] == "page"][:1]
        ws = await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        return cls(proc, session, ws)

    async def call(self, method: str, **params: Any) -> dict:
        """One DevTools command; its result (events in between are skipped)."""
        msg_id = next(self._ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self.ws.receive_json(), 30)
            if msg.get("id") == msg_id:
                assert "error" not in msg, msg
                return msg["result"]

    async def js(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def wait_js(self, expression: str, timeout: float = 15) -> Any:
        """Poll a JS expression until it is truthy (the page refreshes every 2 s); errors count as not yet."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.js(f"(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()")
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{expression}: still {value!r} after {timeout} s")
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()
        if self.proc.returncode is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()


def table_rows(table: str) -> str:
    """JS: the rows of a status table, cells joined by ' | ', rows by newlines."""
    return (f"Array.from(document.querySelectorAll('#{table} tbody tr')).map(tr => "
            "Array.from(tr.cells).map(td => td.textContent).join(' | ')).join('\\n')")


@pytest.fixture
async def up(tmp_path, docker_cleanup):  # noqa: F811 - the fixture of the same name
    process = await asyncio.to_thread(start_up, tmp_path)
    yield process
    await asyncio.to_thread(stop_up, process)


@pytest.fixture
async def browser(tmp_path):
    chromium = require_tool("chromium")
    b = await Browser.launch(chromium, tmp_path / "chromium-profile")
    yield b
    await b.close()


async def test_status_page_shows_services_ambassadors_dns_and_refreshes(
        up, browser, tmp_path, docker_client, busybox_image) -> None:  # noqa: F811
    catalog = CatalogClient(CatalogConfig.from_url(up.http))
    # a TCP backend for an injected ambassador: answers one line and keeps the connection open
    held: list[asyncio.StreamWriter] = []

    async def serve(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        writer.write(b"hello\n")
        await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    echo_port = server.sockets[0].getsockname()[1]
    try:
        await catalog.register(ServiceDef("api-1", "api", "10.9.0.1", 8080, tags=("v2",),
                                          checks=(CheckDef("ttl", ttl="60s", initial_status="passing",
                                                           check_id="api-1-ttl"),)))
        await catalog.register(ServiceDef("api-2", "api", "10.9.0.2", 8080,
                                          checks=(CheckDef("ttl", ttl="60s", initial_status="critical",
                                                           check_id="api-2-ttl"),)))
        await catalog.register(ServiceDef("echo-1", "echo", "127.0.0.1", echo_port))
        client = await asyncio.to_thread(
            docker_run, docker_client, busybox_image,
            ["sh", "-c", "until nc echo 7000; do sleep 0.3; done; sleep 3600"],
            extra_labels={CONNECT_LABEL: "echo:7000"})
        for _ in range(300):  # up to 30 s for the ambassador's first connection to reach us
            if held:
                break
            await asyncio.sleep(0.1)
        assert held, ("the labelled container never reached the backend through its injected ambassador:\n"
                      + up.log()[-3000:] + client.logs().decode(errors="replace"))

        import dns.message
        import dns.query

        for name in ("api.service.consul", "nothing.service.consul"):
            await asyncio.to_thread(dns.query.udp, dns.message.make_query(name, "A"), "127.0.0.1",
                                    port=up.dns_port, timeout=2)

        await browser.call("Page.navigate", url=up.http + "/")
        await browser.wait_js("document.getElementById('updated').textContent !== 'never'")
        await browser.js("window.__loadedOnce = true")

        await browser.wait_js(f"({table_rows('services')}).includes('echo')")
        services = await browser.js(table_rows("services"))
        rows = services.splitlines()
        assert "api | api-1 | 10.9.0.1:8080 | uptest | v2 | passing" in rows, services
        assert "api | api-2 | 10.9.0.2:8080 | uptest |  | critical" in rows, services
        assert f"echo | echo-1 | 127.0.0.1:{echo_port} | uptest |  | passing" in rows, services
        colour = await browser.js("getComputedStyle(document.querySelector('#services td.critical')).color")
        assert colour == "rgb(197, 48, 48)", "critical instances are shown in red"
        assert await browser.js("document.getElementById('node').textContent") == "uptest"

        await browser.wait_js(f"({table_rows('ambassadors')}).includes('echo → echo')")
        ambassadors = await browser.js(table_rows("ambassadors"))
        [row] = [r for r in ambassadors.splitlines() if "echo → echo" in r]
        cells = row.split(" | ")
        assert cells[0] == client.name and cells[2].startswith("127.127.") and cells[2].endswith(":7000"), row
        assert cells[3] == f"127.0.0.1:{echo_port}", f"backend column shows {cells[3]!r}"
        assert cells[4] == "up" and cells[5] == "1" and int(cells[6]) >= 1, row  # one live connection

        dns_row = (await browser.js(table_rows("dns"))).split(" | ")
        assert dns_row[0] == f"127.0.0.1:{up.dns_port}" and int(dns_row[1]) >= 2 and dns_row[3] == "fresh", dns_row
        assert "NOERROR" in dns_row[2] and "NXDOMAIN" in dns_row[2], dns_row

        shot = await browser.call("Page.captureScreenshot", format="png")
        png = tmp_path / "status-page.png"
        png.write_bytes(base64.b64decode(shot["data"]))
        assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
        print(f"screenshot: {png}")

        # the page refreshes itself: a new service appears, an instance turns healthy, no reload
        await catalog.register(ServiceDef("billing-1", "billing", "10.9.0.3", 9090))
        await catalog.update_ttl("api-2-ttl", "passing")
        await browser.wait_js(f"({table_rows('services')}).includes('billing | billing-1 | 10.9.0.3:9090')")
        await browser.wait_js(f"({table_rows('services')}).includes('api | api-2 | 10.9.0.2:8080 | uptest |  | passing')")
        assert await browser.js("window.__loadedOnce === true"), "the page was reloaded"

        # and says so when waypost goes away, keeping the last view
        await asyncio.to_thread(stop_up, up)
        error = await browser.wait_js("document.getElementById('error').textContent")
        assert "cannot reach waypost" in error
        assert "billing" in await browser.js(table_rows("services"))
        (tmp_path / "status.json").write_text(json.dumps({"services": services, "ambassadors": ambassadors}))
    finally:
        for writer in held:
            writer.close()
        server.close()
        await catalog.close()
