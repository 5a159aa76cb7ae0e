"""``mixnet simulate paper loopix --out DIR``: the shapes of the Loopix paper's anonymity figures.

Piotrowska et al. (USENIX Security 2017), section 5, show how entropy grows with the rate of
traffic, with the mean delay, and how little it gains past three layers. This regenerates those
three curves from our model and adversary: ``entropy_vs_rate.png``, ``entropy_vs_delay.png``,
``entropy_vs_layers.png``, each with every parameter in its caption, plus a tidy CSV per figure
(``*.csv``, one row per point). The base parameters are the command's flags, so the same command
with small flags is a quick check and with the defaults the figures in docs/simulations.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulations.config import SimConfig
from simulations.sweeps import run_points, write_table


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    param: str
    values: tuple[float | int, ...]
    xlabel: str
    statement: str
    """What the paper says about this curve (printed on the figure)."""
    log_x: bool = False


FIGURES = (
    Figure("entropy_vs_rate", "client_rate", (0.5, 1.0, 2.0, 4.0, 8.0),
           "payload rate per client (packets/s)",
           "Loopix: entropy grows with the rate of traffic (about log2(lambda/mu) + 1.4 bits "
           "for one mix)", log_x=True),
    Figure("entropy_vs_delay", "mean_hop_delay", (0.05, 0.1, 0.2, 0.5, 1.0),
           "mean delay per hop (s)",
           "Loopix: entropy grows with the mean delay; lambda/mu >= 2 recommended", log_x=True),
    Figure("entropy_vs_layers", "layers", (1, 2, 3, 4, 5), "mix layers",
           "Loopix: at least 3 layers recommended; more add little"),
)


def run_paper(base: SimConfig, out_dir: Path | str, *, jobs: int | None = None,
              client: Any = None, figures: tuple[Figure, ...] = FIGURES) -> dict[str, Any]:
    """Run the three sweeps and write their PNGs and CSVs; returns the figures' data."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    points = [("network-entropy", base.replace(**{f.param: v}).to_dict())
              for f in figures for v in f.values]
    outcomes = run_points(points, jobs=jobs, client=client)
    result: dict[str, Any] = {"figures": []}
    at = 0
    for fig in figures:
        chunk = outcomes[at: at + len(fig.values)]
        at += len(fig.values)
        rows = [{"value": v, "parameters": base.replace(**{fig.param: v}).to_dict(), **o.data}
                for v, o in zip(fig.values, chunk, strict=True)]
        write_table(out / f"{fig.name}.csv", fig.param, rows)
        png = out / f"{fig.name}.png"
        _draw(png, fig, base, rows)
        result["figures"].append({
            "name": fig.name, "param": fig.param, "values": list(fig.values), "png": str(png),
            "message_entropy_mean_bits": [r["message_entropy_bits"]["mean"] for r in rows],
            "sender_entropy_mean_bits": [r["sender_entropy_bits"]["mean"] for r in rows],
        })
    return result


def caption(base: SimConfig, swept: str) -> str:
    """Every parameter of the run, the swept one named as such, wrapped for a figure."""
    skip = {"contacts", "rounds"}
    items = [f"{k}={v}" for k, v in base.to_dict().items() if k != swept and k not in skip]
    text = f"swept: {swept}; " + ", ".join(items)
    words, lines, line = text.split(" "), [], ""
    for w in words:
        if len(line) + len(w) > 120:
            lines.append(line)
            line = ""
        line += w + " "
    lines.append(line)
    return "\n".join(lines)


def _draw(path: Path, fig: Figure, base: SimConfig, rows: list[dict[str, Any]]) -> None:
    # Imported here: matplotlib costs half a second and only this command draws.
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import matplotlib.ticker  # noqa: PLC0415

    xs = [float(r["value"]) for r in rows]
    fig_, ax = plt.subplots(figsize=(7.2, 5.0))
    for key, label in (("message_entropy_bits", "message entropy"),
                       ("sender_entropy_bits", "sender entropy")):
        mean = [r[key]["mean"] for r in rows]
        lo = [r[key]["p25"] for r in rows]
        hi = [r[key]["p75"] for r in rows]
        ax.plot(xs, mean, marker="o", label=f"{label} (mean, p25-p75 band)")
        ax.fill_between(xs, lo, hi, alpha=0.2)
    ax.axhline(math.log2(base.clients), linestyle=":", color="grey", linewidth=1,
               label=f"log2(clients) = {math.log2(base.clients):.2f}")
    if fig.log_x:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_xlabel(fig.xlabel)
    ax.set_ylabel("entropy (bits)")
    ax.set_title(fig.statement, fontsize="small")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig_.text(0.01, 0.01, caption(base, fig.param), fontsize=5.5, family="monospace",
              va="bottom")
    fig_.tight_layout(rect=(0, 0.1, 1, 1))
    fig_.savefig(path, dpi=90)
    plt.close(fig_)
