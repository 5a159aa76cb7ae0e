"""The optional Prometheus endpoint exposes the node's counters, nested ones as labels."""

from __future__ import annotations

import socket

import httpx
from helpers import HANG, wait_for

from mixnode.metrics import start_metrics_server


def test_metrics_endpoint_serves_counters() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stats = {"packets_in": 7, "dropped": {"replay": 2, "bad_mac": 1}, "name": "mix1"}
    start_metrics_server(port, lambda: stats)
    body = wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=HANG).text,
                    what="the metrics endpoint to answer", ignore=(httpx.HTTPError,))
    assert "mixnet_node_packets_in 7.0" in body
    assert 'mixnet_node_dropped{kind="replay"} 2.0' in body
    assert "mix1" not in body  # text fields are not metrics
    stats["packets_in"] = 9  # every scrape reads fresh statistics
    again = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=HANG).text
    assert "mixnet_node_packets_in 9.0" in again
