"""The image's HEALTHCHECK (waypost.healthcheck): it probes what the running command serves, so a
container running `registrator`, `dns` or `catalog` is not marked unhealthy for lacking `up`'s /healthz."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from waypost import healthcheck
from waypost.healthcheck import probe_url, waypost_args


@pytest.mark.parametrize(("args", "env", "url"), [
    (["up"], {}, "http://127.0.0.1:8500/healthz"),
    ([], {}, "http://127.0.0.1:8500/healthz"),  # the image's CMD is `up`
    (["up", "--http", "0.0.0.0:9000"], {}, "http://127.0.0.1:9000/healthz"),
    (["up", "--http=[::]:9000"], {}, "http://[::1]:9000/healthz"),
    (["up"], {"WAYPOST_HTTP": "127.0.0.1:8501"}, "http://127.0.0.1:8501/healthz"),
    (["up", "--http", "127.0.0.1:9002"], {"WAYPOST_HTTP": "127.0.0.1:8501"}, "http://127.0.0.1:9002/healthz"),
    (["catalog"], {}, "http://127.0.0.1:8500/v1/status/leader"),
    (["catalog", "--listen", "0.0.0.0:8600"], {}, "http://127.0.0.1:8600/v1/status/leader"),
    (["ambassador", "--route", "127.0.0.1:6379=redis", "--admin", "127.0.0.1:9901"], {},
     "http://127.0.0.1:9901/healthz"),
    (["ambassador", "--route", "127.0.0.1:6379=redis"], {}, None),
    (["registrator", "consul://10.0.0.1:8500"], {}, None),
    (["dns", "--listen", "127.0.0.1:53"], {}, None),
    (["registrator"], {"WAYPOST_HEALTH_ADDR": "127.0.0.1:7000"}, "http://127.0.0.1:7000/healthz"),
    (["up", "--http", "127.0.0.1:9002"], {"WAYPOST_HEALTH_ADDR": "127.0.0.1:7000"}, "http://127.0.0.1:7000/healthz"),
])
def test_probe_url_follows_the_command(args: list[str], env: dict[str, str], url: str | None) -> None:
    assert probe_url(args, env) == url


def test_waypost_args_from_an_argv() -> None:
    assert waypost_args(["/opt/waypost/bin/python3", "/opt/waypost/bin/waypost", "dns"]) == ["dns"]
    assert waypost_args(["python3", "-m", "waypost", "up", "--http", "x"]) == ["up", "--http", "x"]
    assert waypost_args(["python3", "-m", "waypost.healthcheck"]) is None
    assert waypost_args(["/sbin/tini", "--", "sleep"]) is None


def test_finds_waypost_behind_an_init(tmp_path: Path) -> None:
    for pid, argv in ((1, ["/sbin/tini", "--", "waypost", "catalog"]), (7, ["/usr/bin/waypost", "dns"]),
                      (12, ["python3", "-m", "waypost.healthcheck"])):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (tmp_path / "self").mkdir()
    assert healthcheck._running_waypost(tmp_path) == ["catalog"]
    (tmp_path / "1" / "cmdline").write_bytes(b"/sbin/tini\0--\0sleep\0")
    assert healthcheck._running_waypost(tmp_path) == ["dns"]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_exit_status(monkeypatch: pytest.MonkeyPatch, http_server: int, refusing_port: Any) -> None:
    monkeypatch.delenv("WAYPOST_HEALTH_ADDR", raising=False)
    monkeypatch.delenv("WAYPOST_HTTP", raising=False)
    running: list[str] = []
    monkeypatch.setattr(healthcheck, "_running_waypost", lambda: running)
    running[:] = ["up", "--http", f"127.0.0.1:{http_server}"]
    assert healthcheck.main() == 0
    running[:] = ["catalog", "--listen", f"127.0.0.1:{http_server}"]  # answers 404 on the leader path
    assert healthcheck.main() == 1
    running[:] = ["up", "--http", f"127.0.0.1:{refusing_port()}"]
    assert healthcheck.main() == 1
    running[:] = ["registrator"]
    assert healthcheck.main() == 0
