"""``mixnet simulate paper loopix --out DIR`` writes the three figures with their parameters."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest

from mixnet.cli import main
from simulations.config import SimConfig
from simulations.paper import FIGURES, caption, run_paper

#: The three figures with their end points only, to keep the test short.
ENDS = tuple(replace(f, values=(f.values[0], f.values[-1])) for f in FIGURES)


def test_paper_figures_regenerate(tmp_path: Path) -> None:
    out = tmp_path / "figs"
    base = SimConfig(clients=6, width=1, duration=4.0, warmup=1.0, targets=6)
    data = run_paper(base, out, jobs=1, figures=ENDS)
    assert [f["name"] for f in data["figures"]] == [f.name for f in FIGURES]
    for fig in ENDS:
        png = out / f"{fig.name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with open(out / f"{fig.name}.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        assert [float(r["value"]) for r in rows] == [float(v) for v in fig.values]
        assert all(r[f"parameters.{fig.param}"] for r in rows)
    rate = data["figures"][0]["message_entropy_mean_bits"]
    assert rate[-1] > rate[0]  # the paper's first trend, even on this tiny network


def test_caption_names_every_parameter() -> None:
    cfg = SimConfig()
    text = caption(cfg, "layers")
    for name in cfg.to_dict():
        if name not in ("layers", "contacts", "rounds"):
            assert f"{name}=" in text
    assert text.startswith("swept: layers")


def test_paper_needs_a_known_paper_and_a_folder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "paper", "tor"]) == 1
    assert main(["simulate", "paper", "loopix"]) == 1
    assert capsys.readouterr().err.count("mixnet: error:") == 2
