"""Query statistics and their Prometheus exposition.

The query path only bumps plain dict counters (a few tens of nanoseconds); a custom collector turns
them into metric families when Prometheus scrapes, so no prometheus_client call is ever on the
hot path.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator

from dnslib import QTYPE, RCODE
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

# Query types reported by name; anything else is counted as "other" so labels stay bounded.
KNOWN_TYPES = frozenset({1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 41, 43, 48, 64, 65, 99, 251, 252, 255, 257})


def stat_key(qtype: int) -> bytes:
    """The key the slow path counts a query type under (the fast path's type+class IN bytes)."""
    return qtype.to_bytes(2, "big") + b"\x00\x01" if qtype in KNOWN_TYPES else b"other"


class DnsStats:
    """Counters the server bumps: answers by (type+class bytes, rcode) and events by name."""

    def __init__(self) -> None:
        self.answers: defaultdict[tuple[bytes, int], int] = defaultdict(int)
        self.events: defaultdict[str, int] = defaultdict(int)

    def by_type_rcode(self) -> dict[tuple[str, str], int]:
        """Answers summed by (query type name, rcode name), e.g. ``("A", "NOERROR")``."""
        out: dict[tuple[str, str], int] = defaultdict(int)
        for (tc, rcode), n in list(self.answers.items()):
            if len(tc) == 4 and int.from_bytes(tc[:2], "big") in KNOWN_TYPES:
                qtype = QTYPE.get(int.from_bytes(tc[:2], "big"))
            else:
                qtype = "none" if not tc else "other"
            out[(qtype, RCODE.get(rcode) if rcode < 16 else "BADVERS" if rcode == 16 else str(rcode))] += n
        return dict(out)

    @property
    def total(self) -> int:
        return sum(self.answers.values())


class DnsCollector:
    """Prometheus collector reading a server's stats and its view's state at scrape time."""

    def __init__(self, stats: DnsStats, stale: Callable[[], bool], services: Callable[[], int],
                 names: Callable[[], int]) -> None:
        self.stats = stats
        self.stale = stale
        self.services = services
        self.names = names

    def collect(self) -> Iterator[Metric]:
        queries = CounterMetricFamily("waypost_dns_queries", "DNS answers sent, by query type and rcode",
                                      labels=["type", "rcode"])
        for (qtype, rcode), n in sorted(self.stats.by_type_rcode().items()):
            queries.add_metric([qtype, rcode], n)
        yield queries
        events = CounterMetricFamily("waypost_dns_events", "Dropped packets, truncations, recursion outcomes",
                                     labels=["event"])
        for name, n in sorted(self.stats.events.items()):
            events.add_metric([name], n)
        yield events
        yield GaugeMetricFamily("waypost_dns_catalog_stale",
                                "1 while answers come from last-known data (catalog unreachable)",
                                value=1.0 if self.stale() else 0.0)
        yield GaugeMetricFamily("waypost_dns_services", "Services with healthy instances in the view",
                                value=self.services())
        yield GaugeMetricFamily("waypost_dns_names", "Names with prebuilt answers", value=self.names())


def make_registry(collector: DnsCollector, registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """Register the collector in ``registry`` (a fresh one by default) and return it."""
    registry = registry or CollectorRegistry(auto_describe=True)
    registry.register(collector)
    return registry
