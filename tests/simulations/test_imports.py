"""The simulations package stays in its room: mixcore, numpy, matplotlib, rich, distributed
(Dask, for sweeps on a cluster) and stdlib only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import simulations

ALLOWED = {"mixcore", "numpy", "matplotlib", "rich", "simulations", "distributed"}


def test_simulations_imports_only_allowed_packages() -> None:
    root = Path(simulations.__file__).parent
    bad: list[str] = []
    files = sorted(root.rglob("*.py"))
    assert len(files) >= 10
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in ALLOWED and top not in sys.stdlib_module_names:
                    bad.append(f"{path.name}: {name}")
    assert not bad, bad


def test_plots_use_agg() -> None:
    import matplotlib

    import simulations.plots  # noqa: F401

    assert matplotlib.get_backend().lower() == "agg"
