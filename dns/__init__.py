"""DNS: Consul-style service names answered from an in-memory view of the catalog."""

from waypost.dns.config import DnsConfig
from waypost.dns.server import DnsServer
from waypost.dns.view import CatalogView

__all__ = ["CatalogView", "DnsConfig", "DnsServer"]
