"""Optional Prometheus endpoint exposing the node's counters (counts only, never per-packet data).

Served by prometheus-client's own HTTP server thread on 127.0.0.1. That thread must not touch
the node's state, which belongs to the trio event loop (``statistics()`` reads trio's clock,
which only works inside the loop): the loop publishes a snapshot of its statistics (a fresh
dict, replaced whole) every ``stats_interval``, and each scrape reads the latest snapshot and
flattens nested counters into labelled samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry


class _StatsCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, value in self._snapshot().items():
            metric = f"mixnet_node_{name}"
            if isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                yield GaugeMetricFamily(metric, name, value=float(value))
            elif isinstance(value, dict) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
            ):
                family = GaugeMetricFamily(metric, name, labels=["kind"])
                for label, v in value.items():
                    family.add_metric([str(label)], float(v))
                yield family


def start_metrics_server(port: int, snapshot: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    """Serve ``snapshot()`` (called from the exporter's thread: it must only read a value the
    event loop published, never compute one) on 127.0.0.1:``port``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(snapshot))
    start_http_server(port, addr="127.0.0.1", registry=registry)
    return registry
