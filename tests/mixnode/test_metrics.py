"""The optional Prometheus endpoint exposes the node's counters, nested ones as labels."""

from __future__ import annotations

import socket
import time

import httpx

from mixnode.metrics import start_metrics_server


def test_metrics_endpoint_serves_counters() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stats = {"packets_in": 7, "dropped": {"replay": 2, "bad_mac": 1}, "name": "mix1"}
    start_metrics_server(port, lambda: stats)
    for _ in range(50):
        try:
            body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    assert "mixnet_node_packets_in 7.0" in body
    assert 'mixnet_node_dropped{kind="replay"} 2.0' in body
    assert "mix1" not in body  # text fields are not metrics
    stats["packets_in"] = 9  # every scrape reads fresh statistics
    assert "mixnet_node_packets_in 9.0" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
