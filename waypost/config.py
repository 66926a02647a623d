"""Shared configuration: where the catalog is, and how listen addresses are written."""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

log = logging.getLogger("waypost.config")

DEFAULT_CATALOG = "http://127.0.0.1:8500"
# registry URI scheme → HTTP scheme; consul-tls is gliderlabs/registrator's Consul over TLS
CATALOG_SCHEMES = {"consul": "http", "http": "http", "https": "https", "consul-tls": "https"}
# gliderlabs' consul-tls client certificate variables (no client certificates here yet)
CLIENT_CERT_VARIABLES = ("CONSUL_TLSCERT", "CONSUL_TLSKEY")


class ConfigError(ValueError):
    """A flag or environment value that cannot be used; the message names it and the fix."""


@dataclass(frozen=True, slots=True)
class CatalogConfig:
    """How to reach the catalog (embedded or a Consul agent)."""

    scheme: str = "http"
    host: str = "127.0.0.1"
    port: int = 8500
    token: str | None = None
    ca_file: str | None = None
    verify: bool = True

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @classmethod
    def from_url(
        cls,
        url: str | None = None,
        token: str | None = None,
        ca_file: str | None = None,
        verify: bool | None = None,
    ) -> CatalogConfig:
        """Parse ``consul://host:port``, ``consul-tls://…``, ``http://…``, ``https://…`` or a bare ``host:port``.

        Unset values come from Consul's own environment variables (``CONSUL_HTTP_ADDR``,
        ``CONSUL_HTTP_TOKEN``, ``CONSUL_CACERT``, ``CONSUL_HTTP_SSL_VERIFY``). A path, query or
        fragment in the URL is ignored with a warning.
        """
        raw = url or os.environ.get("CONSUL_HTTP_ADDR") or DEFAULT_CATALOG
        text = raw if "://" in raw else f"http://{raw}"
        parts = urlsplit(text)
        scheme = catalog_scheme(raw, parts.scheme)
        try:
            port = parts.port or (443 if scheme == "https" else 8500)
        except ValueError as exc:
            raise ConfigError(f"--catalog {raw!r}: bad port ({exc}); write e.g. consul://127.0.0.1:8500") from exc
        if not parts.hostname:
            raise ConfigError(f"--catalog {raw!r}: no host; write e.g. consul://127.0.0.1:8500")
        warn_ignored_parts(raw, parts)
        if parts.scheme == "consul-tls":
            warn_client_certificates(raw)
        if verify is None:
            verify = os.environ.get("CONSUL_HTTP_SSL_VERIFY", "true").lower() not in ("0", "false", "no")
        return cls(
            scheme=scheme,
            host=parts.hostname,
            port=port,
            token=token or os.environ.get("CONSUL_HTTP_TOKEN") or None,
            ca_file=ca_file or os.environ.get("CONSUL_CACERT") or None,
            verify=verify,
        )


def catalog_scheme(raw: str, scheme: str) -> str:
    """The HTTP scheme for registry URI scheme `scheme` of `raw` (ConfigError when unusable)."""
    if scheme == "consul-unix":
        raise ConfigError(
            f"--catalog {raw!r}: unix sockets are not supported; use the agent's HTTP address as "
            "consul://HOST:PORT, e.g. consul://127.0.0.1:8500"
        )
    try:
        return CATALOG_SCHEMES[scheme]
    except KeyError:
        raise ConfigError(
            f"--catalog {raw!r}: unknown scheme {scheme!r}; use consul://HOST:PORT, "
            "consul-tls://HOST:PORT, http://HOST:PORT or https://HOST:PORT"
        ) from None


def warn_client_certificates(raw: str) -> None:
    """Say so when gliderlabs' consul-tls client certificate variables are set: they are not used."""
    named = [name for name in CLIENT_CERT_VARIABLES if os.environ.get(name)]
    if named:
        log.warning(
            "%s: %s set, but client certificates are not supported yet: the connection is made "
            "without one (the CA in CONSUL_CACERT is used). An agent with verify_incoming on its "
            "HTTPS port will refuse it; turn that off for the HTTPS API, or register through the "
            "agent's local HTTP port (consul://127.0.0.1:8500)", raw, " and ".join(named))


def warn_ignored_parts(raw: str, parts: SplitResult) -> None:
    """Warn about the path, query or fragment of catalog URL `raw`: only scheme, host and port count."""
    ignored = [f"{what} {value!r}" for what, value in
               (("path", parts.path.rstrip("/")), ("query", parts.query), ("fragment", parts.fragment)) if value]
    if ignored:
        log.warning("--catalog %r: %s ignored (only the scheme, host and port are used)", raw, ", ".join(ignored))


def parse_hostport(value: str, default_port: int | None = None, flag: str = "--listen",
                   example_port: int = 8600) -> tuple[str, int]:
    """Parse ``HOST:PORT``, ``[V6]:PORT`` or (with a default port) a bare host.

    Errors name `flag` and show an example address with `example_port` (the flag's usual port).
    """
    text = value.strip()
    host: str
    port_text: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"{flag} {value!r}: missing ']' in IPv6 address; write [::1]:{example_port}")
        host = text[1:end]
        rest = text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        host, port_text = text, None
    else:
        host, port_text = text, None
    if port_text is None or port_text == "":
        if default_port is None:
            raise ConfigError(f"{flag} {value!r}: no port; write HOST:PORT, e.g. 127.0.0.1:{example_port}")
        port = default_port
    else:
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(f"{flag} {value!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{flag} {value!r}: port {port} is out of range 0-65535")
    return host or "127.0.0.1", port


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_catalog_arguments(parser) -> None:  # type: ignore[no-untyped-def]
    """The flags every catalog client shares (`--catalog`, `--token`, `--ca-file`)."""
    group = parser.add_argument_group("catalog")
    group.add_argument(
        "--catalog",
        metavar="URL",
        default=None,
        help="catalog address: consul://HOST:PORT, http://… or https://… "
        "(default: $CONSUL_HTTP_ADDR, else http://127.0.0.1:8500)",
    )
    group.add_argument(
        "--catalog-token",
        metavar="TOKEN",
        default=None,
        help="ACL token sent as X-Consul-Token (default: $CONSUL_HTTP_TOKEN)",
    )
    group.add_argument(
        "--catalog-ca-file",
        metavar="FILE",
        default=None,
        help="CA bundle to verify an https catalog (default: $CONSUL_CACERT)",
    )


def catalog_config_from_args(args) -> CatalogConfig:  # type: ignore[no-untyped-def]
    """Build a :class:`CatalogConfig` from the flags added by :func:`add_catalog_arguments`."""
    return CatalogConfig.from_url(
        getattr(args, "catalog", None),
        token=getattr(args, "catalog_token", None),
        ca_file=getattr(args, "catalog_ca_file", None),
    )
