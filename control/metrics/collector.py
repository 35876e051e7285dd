"""A prometheus-client ``Collector`` that yields the gateway's families from one ``Snapshot`` per scrape.

It keeps nothing between scrapes, so a series exists only while its SA does: per-SA labels stay bounded
by the SA table, and a dead SA's series is gone at the next scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from control.metrics.snapshot import Snapshot

__all__ = ["GatewayCollector"]


class GatewayCollector(Collector):
    def __init__(self, source: Callable[[], Snapshot]):
        self.source = source

    def describe(self) -> list[Metric]:
        # no describe-time scrape: registering must not reach into the daemon (the loop may not run yet)
        return []

    def collect(self) -> Iterator[Metric]:
        s = self.source()
        g = GaugeMetricFamily("ipsecgw_ike_sas", "IKE SAs by state", labels=["state"])
        for state, n in s.ike_sas.items():
            g.add_metric([state], n)
        yield g
        g = GaugeMetricFamily("ipsecgw_child_sas", "CHILD SAs by state (REKEYED: replaced, inbound kept a "
                              "moment)", labels=["state"])
        for state, n in s.child_sas.items():
            g.add_metric([state], n)
        yield g
        pk = CounterMetricFamily("ipsecgw_sa_packets", "Packets through one SA, as the fastpath counts them",
                                 labels=["child", "spi", "dir"])
        by = CounterMetricFamily("ipsecgw_sa_bytes", "Bytes through one SA (inner packets), as the fastpath "
                                 "counts them", labels=["child", "spi", "dir"])
        for sa in s.sas:
            labels = [sa.child, f"0x{sa.spi:08x}", sa.dir]
            pk.add_metric(labels, sa.packets)
            by.add_metric(labels, sa.bytes)
        yield pk
        yield by
        c = CounterMetricFamily("ipsecgw_drops", "Packets the fastpath dropped, by direction and reason",
                                labels=["dir", "reason"])
        for (direction, reason), n in sorted(s.drops.items()):
            c.add_metric([direction, reason], n)
        yield c
        c = CounterMetricFamily("ipsecgw_ike_messages", "IKE datagrams by exchange and direction (fragments "
                                "and retransmissions each count)", labels=["exchange", "dir"])
        for (exchange, direction), n in sorted(s.ike_messages.items()):
            c.add_metric([exchange, direction], n)
        yield c
        c = CounterMetricFamily("ipsecgw_negotiation_failures", "Failed IKE and CHILD SA negotiations, by the "
                                "notify that ended them or timeout", labels=["reason"])
        for reason, n in sorted(s.failures.items()):
            c.add_metric([reason], n)
        yield c
        yield GaugeMetricFamily("ipsecgw_fastpath_up", "1 while the fastpath's heartbeat in the region is fresh",
                                value=1 if s.fastpath_up else 0)
        info = InfoMetricFamily("ipsecgw", "Version, I/O mode and ESP engines of this gateway")
        info.add_metric([], s.info)
        yield info
