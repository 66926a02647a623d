"""HTTP plumbing shared by the catalog's handlers: Consul-style errors, durations, query parsing."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

# Consul's blocking-query limits: default wait, maximum wait, and the jitter fraction (wait/16).
DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
JITTER_FRACTION = 16


class HTTPError(Exception):
    """An error answered as Consul does: a status code and a plain-text body."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def bad_request(text: str) -> HTTPError:
    return HTTPError(400, text)


def not_found(text: str) -> HTTPError:
    return HTTPError(404, text)


def text_response(status: int, text: str) -> web.Response:
    """A plain-text answer, the way Consul writes its errors."""
    return web.Response(status=status, text=text, content_type="text/plain", charset="utf-8")


def json_response(data: Any, pretty: bool = False, headers: Mapping[str, str] | None = None,
                  status: int = 200) -> web.Response:
    """A JSON answer; ``?pretty`` indents it like Consul does."""
    body = json.dumps(data, indent=4 if pretty else None, separators=None if pretty else (",", ":"))
    return web.Response(status=status, body=body.encode(), content_type="application/json",
                        headers=headers)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Seconds in a Go duration (``"10s"``, ``"1m30s"``, ``"500ms"``) or a number of nanoseconds.

    Raises ValueError on anything else, like Go's time.ParseDuration.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        return float(value) / 1e9  # Consul's JSON decoder takes bare numbers as nanoseconds
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}")
    text = value.strip()
    if text in ("", "0"):
        if text == "":
            raise ValueError('invalid duration ""')
        return 0.0
    sign = 1.0
    if text[0] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    pos = 0
    total = 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if not m:
            raise ValueError(f"invalid duration {value!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(f"invalid duration {value!r}")
    return sign * total


def format_duration(seconds: float) -> str:
    """Go's Duration.String(): ``10s``, ``1m30s``, ``500ms``, ``0s``."""
    if seconds == 0:
        return "0s"
    neg = seconds < 0
    seconds = abs(seconds)
    if seconds < 1:
        ms = seconds * 1000
        if ms >= 1:
            out = f"{ms:.6f}".rstrip("0").rstrip(".") + "ms"
        else:
            out = f"{seconds * 1e6:.3f}".rstrip("0").rstrip(".") + "µs"
        return ("-" if neg else "") + out
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{secs:.9f}".rstrip("0").rstrip(".") + "s"
    out = ""
    if hours:
        out = f"{int(hours)}h{int(minutes)}m{sec_text}"
    elif minutes:
        out = f"{int(minutes)}m{sec_text}"
    else:
        out = sec_text
    return ("-" if neg else "") + out


def query_flag(query: Mapping[str, str], name: str) -> bool:
    """Consul's presence flags (``?recurse``, ``?passing``): present means on, unless 0/false."""
    if name not in query:
        return False
    value = query.get(name, "").strip().lower()
    if value in ("", "1", "t", "true", "yes"):
        return True
    if value in ("0", "f", "false", "no"):
        return False
    raise bad_request(f"Invalid value for ?{name}: {query.get(name)!r} (use true or false)")


def parse_uint(query: Mapping[str, str], name: str, what: str) -> int | None:
    """An unsigned integer query parameter, or None when absent; 400 naming it when malformed."""
    if name not in query:
        return None
    raw = query.get(name, "")
    try:
        value = int(raw, 10)
    except ValueError:
        raise bad_request(f"Invalid {what}: {raw!r} is not an unsigned integer") from None
    if value < 0 or value >= 2**64:
        raise bad_request(f"Invalid {what}: {raw!r} is not an unsigned integer")
    return value


class Fields:
    """Case-insensitive access to a decoded JSON object, as Go's decoder (and snake_case, as Consul).

    ``get("DeregisterCriticalServiceAfter")`` also finds ``deregister_critical_service_after``.
    """

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.where = where
        self._data = {k.lower().replace("_", ""): v for k, v in data.items()}

    def has(self, name: str) -> bool:
        return name.lower() in self._data and self._data[name.lower()] is not None

    def raw(self, name: str, default: Any = None) -> Any:
        value = self._data.get(name.lower())
        return default if value is None else value

    def _decode_error(self, name: str, expected: str, value: Any) -> HTTPError:
        return bad_request(
            f"Request decode failed: {self.where}.{name}: expected {expected}, got {json.dumps(value)}")

    def str(self, name: str, default: str = "") -> str:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._decode_error(name, "a string", value)
        return value

    def int(self, name: str, default: int = 0) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise self._decode_error(name, "an integer", value)
        return int(value)

    def bool(self, name: str, default: bool = False) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._decode_error(name, "true or false", value)
        return value

    def str_list(self, name: str) -> list[str]:
        value = self.raw(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._decode_error(name, "a list of strings", value)
        return list(value)

    def str_map(self, name: str) -> dict[str, str]:
        value = self.raw(name)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self._decode_error(name, "an object of string values", value)
        return dict(value)

    def obj(self, name: str) -> Fields | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._decode_error(name, "an object", value)
        return Fields(value, f"{self.where}.{name}")

    def obj_list(self, name: str) -> list[Fields]:
        value = self.raw(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self._decode_error(name, "a list of objects", value)
        return [Fields(v, f"{self.where}.{name}[{i}]") for i, v in enumerate(value)]

    def duration(self, name: str) -> float:
        value = self.raw(name)
        if value is None or value == "":
            return 0.0
        try:
            return parse_duration(value)
        except ValueError:
            raise self._decode_error(name, "a duration such as \"10s\"", value) from None


def decode_json_body(body: bytes, where: str, allow_empty: bool = False) -> Any:
    """Decode a request body; 400 ``Request decode failed: …`` naming the problem."""
    if not body.strip():
        if allow_empty:
            return None
        raise bad_request("Request decode failed: EOF (the request body is empty; send a JSON object)")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise bad_request("Request decode failed: the body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"Request decode failed: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
