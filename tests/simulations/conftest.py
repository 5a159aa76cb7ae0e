"""Small, fast configurations shared by the simulation tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The previous adversary lives beside these tests (reference_adversary.py), never in the
# package; importlib mode does not put this folder on the path by itself.
sys.path.insert(0, str(Path(__file__).parent))

from simulations.config import SimConfig


@pytest.fixture
def small() -> SimConfig:
    """A small network: 12 clients, 2 layers of 2 mixes, 1 provider, 15 s window."""
    return SimConfig(clients=12, client_rate=1.0, loop_rate=0.5, drop_rate=0.5, layers=2,
                     width=2, providers=1, mean_hop_delay=0.2, link_latency=0.005,
                     duration=15.0, warmup=3.0, targets=30, seed=7)
