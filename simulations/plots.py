"""Figures for ``--plot``: matplotlib on the Agg backend (files only, never a screen)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from simulations.scenarios import Curve


def draw(path: Path | str, title: str, curves: list[tuple[str, Curve]],
         summary: tuple[str, list[float], list[float], str] | None = None) -> None:
    """One curve per (label, curve); with a sweep, a second panel of the headline vs. the value."""
    panels = 2 if summary is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.4 * panels, 4.4), squeeze=False)
    ax = axes[0][0]
    for label, curve in curves:
        ax.plot(curve.x, curve.y, label=label, drawstyle="steps-post" if len(curve.x) > 20
                else "default", marker=None if len(curve.x) > 20 else "o")
    first = curves[0][1] if curves else None
    if first is not None:
        ax.set_xlabel(first.xlabel)
        ax.set_ylabel(first.ylabel)
        refs = {c.reference for _, c in curves if c.reference is not None}
        for ref in refs:
            ax.axvline(ref, linestyle="--", color="grey", linewidth=1)
        if refs:
            ax.plot([], [], linestyle="--", color="grey", label="closed form")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) > 1 or (first is not None and first.reference is not None):
        ax.legend(fontsize="small")
    if summary is not None:
        name, xs, ys, ylabel = summary
        ax2 = axes[0][1]
        ax2.plot(xs, ys, marker="o")
        ax2.set_xlabel(name)
        ax2.set_ylabel(ylabel)
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
