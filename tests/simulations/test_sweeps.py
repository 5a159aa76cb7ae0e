"""Sweeps run their points on a process pool or a Dask cluster with the serial run's numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from distributed import LocalCluster

from mixnet.cli import main
from simulations import sweeps

SMALL = ["--clients", "6", "--layers", "2", "--width", "1", "--providers", "1",
         "--duration", "5", "--warmup", "1", "--targets", "8", "--seed", "5"]
SWEEP = ["network", *SMALL, "--sweep", "mean-hop-delay=0.1,0.3"]


def sweep(capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    assert main(["simulate", *SWEEP, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_dask_cluster_and_process_pool_match_the_serial_run(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    serial = sweep(capsys, "--jobs", "1")
    pooled = sweep(capsys, "--jobs", "2")
    table = tmp_path / "sweep.csv"
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster:
        on_dask = sweep(capsys, "--scheduler", cluster.scheduler_address, "--table", str(table))
    assert serial["sweep"]["headline"][0] != serial["sweep"]["headline"][1]
    assert pooled == serial
    assert on_dask == serial
    with open(table, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["value"]) for r in rows] == [0.1, 0.3]
    assert {r["param"] for r in rows} == {"mean_hop_delay"}
    means = [float(r["message_entropy_bits.mean"]) for r in rows]
    assert means == [x["message_entropy_bits"]["mean"] for x in serial["results"]]
    assert rows[0]["parameters.mean_hop_delay"] == "0.1"


def test_unreachable_scheduler_is_a_one_line_error(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweeps, "CONNECT_TIMEOUT", 1.0)
    code = main(["simulate", *SWEEP, "--scheduler", "tcp://127.0.0.1:9", "--json"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("mixnet: error:") and err.count("\n") == 1


def test_plotting_a_sweep_over_none_is_refused_before_anything_runs(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # "none" means "the default" for an optional field: it has no place on a number axis, and
    # finding that out after the whole sweep ran (a TypeError in the plot) lost the sweep.
    plot = tmp_path / "sweep.png"
    code = main(["simulate", "network", *SMALL, "--sweep", "provider-delay=none,0.1",
                 "--plot", str(plot)])
    assert code == 1
    err = capsys.readouterr().err
    assert "no number axis" in err and err.count("\n") == 1
    assert not plot.exists()
