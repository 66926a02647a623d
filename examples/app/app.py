"""The demo web app: counts hits per web instance in redis, dialling `redis:6379` and nothing else.

Standard library only, so its image is just Python. GET / increments this instance's counter
and answers with every instance's count as JSON; GET /healthz answers ok.
"""

from __future__ import annotations

import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REDIS = os.environ.get("REDIS_ADDR", "redis:6379")
INSTANCE = socket.gethostname()


def redis_command(*args: str) -> object:
    """Send one command in RESP and read one reply (integers, bulk strings, arrays of them)."""
    host, port = REDIS.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=3) as sock:
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        sock.sendall(payload.encode())
        reader = sock.makefile("rb")
        return _read_reply(reader)


def _read_reply(reader) -> object:  # type: ignore[no-untyped-def]
    line = reader.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b":":
        return int(rest)
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else reader.read(size + 2)[:-2].decode()
    if kind == b"*":
        return [_read_reply(reader) for _ in range(int(rest))]
    raise RuntimeError(f"unexpected redis reply {line!r}")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/healthz":
            self._send(200, {"ok": True})
            return
        try:
            mine = redis_command("HINCRBY", "hits", INSTANCE, "1")
            flat = redis_command("HGETALL", "hits")
            counts = dict(zip(flat[0::2], map(int, flat[1::2]), strict=True))  # type: ignore[index]
            self._send(200, {"instance": INSTANCE, "hits": mine, "all": counts})
        except (OSError, RuntimeError) as exc:
            self._send(503, {"instance": INSTANCE, "error": f"redis at {REDIS}: {exc}"})

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Handler).serve_forever()
