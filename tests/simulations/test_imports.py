"""The simulations package draws headless: its plots use the Agg backend. (Which packages it
may import is checked with every other package's in tests/test_architecture.py.)"""

from __future__ import annotations


def test_plots_use_agg() -> None:
    import matplotlib

    import simulations.plots  # noqa: F401

    assert matplotlib.get_backend().lower() == "agg"
