"""HTTP plumbing shared by the catalog's handlers: Consul-style errors, durations, query parsing."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

# Consul's blocking-query limits: default wait, maximum wait, and the jitter fraction (wait/16).
DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
JITTER_FRACTION = 16
# Go's time.Duration is int64 nanoseconds: ParseDuration rejects anything longer (~292 years).
MAX_DURATION = (2**63 - 1) / 1e9
# Consul's request bodies nest a handful of levels; deeper input is rejected before it is stored
# (a stored 900-deep object would break ?pretty answers and slow every read of it).
MAX_JSON_DEPTH = 64
_INT64 = 2**63


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
    # backslashreplace: an error quoting client input must never fail to encode
    return web.Response(status=status, body=text.encode("utf-8", "backslashreplace"),
                        content_type="text/plain", charset="utf-8")


def json_response(data: Any, pretty: bool = False, headers: Mapping[str, str] | None = None,
                  status: int = 200) -> web.Response:
    """A JSON answer; ``?pretty`` indents it like Consul does."""
    body = json.dumps(data, indent=4 if pretty else None, separators=None if pretty else (",", ":"))
    return web.Response(status=status, body=body.encode(), content_type="application/json",
                        headers=headers)


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")  # ASCII digits, as Go
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Seconds in a Go duration (``"10s"``, ``"1m30s"``, ``"500ms"``) or a number of nanoseconds.

    Raises ValueError on anything else, like Go's time.ParseDuration.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        seconds = float(value) / 1e9  # Consul's JSON decoder takes bare numbers as nanoseconds
        if not math.isfinite(seconds) or abs(seconds) > MAX_DURATION:
            raise ValueError(f"invalid duration {value!r} (out of range)")
        return seconds
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
    if not math.isfinite(total) or total > MAX_DURATION:
        raise ValueError(f"invalid duration {value!r} (longer than Go's maximum of about 292 years)")
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
    # ASCII digits only, like Go's strconv.ParseUint (Python's int() also takes " 5", "5_0" and "٥")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20:
        raise bad_request(f"Invalid {what}: {raw!r} is not an unsigned integer")
    value = int(raw, 10)
    if value >= 2**64:
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
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._decode_error(name, "an integer", value)
        if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
            raise self._decode_error(name, "an integer", value)
        if not -_INT64 <= value < _INT64:
            raise self._decode_error(name, "a 64-bit integer", value)
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

    def obj_map(self, name: str) -> dict[str, Fields]:
        """An object of objects with its keys exactly as sent (Go map keys are case-sensitive);
        null entries are skipped."""
        value = self.raw(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._decode_error(name, "an object", value)
        out = {}
        for key, entry in value.items():
            if entry is None:
                continue
            if not isinstance(entry, dict):
                raise self._decode_error(f"{name}.{key}", "an object", entry)
            out[key] = Fields(entry, f"{self.where}.{name}.{key}")
        return out

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


class _BadJSONValue(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadJSONValue(f"number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise _BadJSONValue(f"{name} is not JSON (write a number or null)")


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _sanitize(value: Any, depth: int) -> Any:
    """Enforce MAX_JSON_DEPTH and replace lone UTF-16 surrogates with U+FFFD, as Go's decoder does
    (a surrogate cannot be encoded as UTF-8, so it would fail every later write of the value)."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list | dict):
        if depth >= MAX_JSON_DEPTH:
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, list):
            return [_sanitize(v, depth + 1) for v in value]
        return {_sanitize(k, depth): _sanitize(v, depth + 1) for k, v in value.items()}
    return value


def decode_json_body(body: bytes, where: str, allow_empty: bool = False) -> Any:
    """Decode a request body; 400 ``Request decode failed: …`` naming the problem.

    Like Go's encoding/json: NaN/Infinity and out-of-range numbers are errors, lone surrogates
    become U+FFFD. Nesting deeper than :data:`MAX_JSON_DEPTH` is refused.
    """
    if not body.strip():
        if allow_empty:
            return None
        raise bad_request("Request decode failed: EOF (the request body is empty; send a JSON object)")
    try:
        value = json.loads(body, parse_float=_finite_float, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise bad_request("Request decode failed: the body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"Request decode failed: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise bad_request(f"Request decode failed: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except _BadJSONValue as exc:
        raise bad_request(f"Request decode failed: {exc}") from None
    except ValueError:  # Python refuses integers with thousands of digits
        raise bad_request("Request decode failed: a number is out of range (too many digits)") from None
    nested = body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH
    if nested or _SURROGATE_ESCAPE.search(body):
        try:
            value = _sanitize(value, 0)
        except (ValueError, RecursionError) as exc:
            raise bad_request(f"Request decode failed: JSON {exc}") from None
    return value
