"""Optional Prometheus endpoint exposing the node's counters (counts only, never per-packet data).

Served by prometheus-client's own HTTP server thread on 127.0.0.1; each scrape reads
``statistics()`` and flattens nested counters into labelled samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector


class _StatsCollector(Collector):
    def __init__(self, statistics: Callable[[], dict[str, Any]]) -> None:
        self._statistics = statistics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, value in self._statistics().items():
            metric = f"mixnet_node_{name}"
            if isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                yield GaugeMetricFamily(metric, name, value=float(value))
            elif isinstance(value, dict) and all(
                isinstance(v, int | float) for v in value.values()
            ):
                family = GaugeMetricFamily(metric, name, labels=["kind"])
                for label, v in value.items():
                    family.add_metric([str(label)], float(v))
                yield family


def start_metrics_server(port: int, statistics: Callable[[], dict[str, Any]]) -> None:
    REGISTRY.register(_StatsCollector(statistics))
    start_http_server(port, addr="127.0.0.1")
