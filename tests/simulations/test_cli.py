"""``mixnet simulate``: JSON output, sweeps, plots, trace mode, reproducibility, user errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mixnet.cli import main
from simulations.adversary import Adversary, default_horizon
from simulations.config import SimConfig
from simulations.network import simulate_network
from simulations.trace import TraceError, parse_trace, read_trace, write_trace

SMALL = ["--clients", "8", "--layers", "2", "--width", "2", "--providers", "1",
         "--duration", "8", "--warmup", "2", "--targets", "10"]


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["simulate", *argv, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    return json.loads(out)


def test_network_json_has_metrics_and_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "network", *SMALL, "--mean-hop-delay", "0.3", "--seed", "9")
    params = data["parameters"]
    assert params["clients"] == 8 and params["mean_hop_delay"] == 0.3 and params["seed"] == 9
    assert set(SimConfig().to_dict()) == set(params)
    for key in ("message_entropy_bits", "sender_entropy_bits", "epsilon"):
        assert {"mean", "p5", "p50", "p95"} <= set(data[key])
    assert "success" in data["timing_attack"]
    assert "p95" in data["latency_mailbox_s"]


def test_same_seed_same_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    a = run_json(capsys, "network", *SMALL, "--seed", "3")
    b = run_json(capsys, "network", *SMALL, "--seed", "3")
    c = run_json(capsys, "network", *SMALL, "--seed", "4")
    assert a == b
    assert a["message_entropy_bits"] != c["message_entropy_bits"]


@pytest.mark.parametrize("scenario", ["single-mix", "epsilon", "timing", "sda", "n-1"])
def test_every_scenario_runs(capsys: pytest.CaptureFixture[str], scenario: str) -> None:
    data = run_json(capsys, scenario, *SMALL, "--rounds", "300")
    assert data["scenario"] == scenario
    assert data["parameters"]["rounds"] == 300
    assert data["parameters"]["clients"] == 8
    if scenario == "single-mix":  # what ran: one mix, fed directly by the clients
        assert (data["parameters"]["layers"], data["parameters"]["width"]) == (1, 1)
        assert data["parameters"]["providers"] == 0


def test_sweep_with_plot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    png = tmp_path / "sweep.png"
    data = run_json(capsys, "single-mix", *SMALL, "--sweep", "mean-hop-delay=0.1,0.4",
                    "--plot", str(png))
    assert data["sweep"]["param"] == "mean_hop_delay"
    assert [r["parameters"]["mean_hop_delay"] for r in data["results"]] == [0.1, 0.4]
    heads = data["sweep"]["headline"]
    assert heads[1] > heads[0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_trace_mode_matches_the_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = SimConfig(clients=8, layers=2, width=2, providers=1, duration=8.0, warmup=2.0)
    run = simulate_network(cfg, np.random.default_rng(11))
    path = tmp_path / "trace.jsonl"
    rows = write_trace(run, path)
    assert rows == run.obs.n_rows
    trace = read_trace(path)
    assert trace.sizes_constant
    # The trace rows are the model rows in time order; the posteriors must be identical.
    order = np.argsort(run.obs.t_dep, kind="stable")
    where = np.empty_like(order)
    where[order] = np.arange(order.size)
    direct = Adversary(run.obs, default_horizon(cfg.mean_hop_delay))
    traced = Adversary(trace.obs, default_horizon(trace.mean_hop_delay or 0.0))
    for p in range(0, run.send_time.size, max(run.send_time.size // 15, 1)):
        a = direct.where_did_it_go(int(run.first_row[p]))
        b = traced.where_did_it_go(int(where[run.first_row[p]]))
        assert a.entropy_bits() == pytest.approx(b.entropy_bits(), abs=1e-9)
        assert b.prob_of(int(where[run.last_row[p]])) == pytest.approx(
            a.prob_of(int(run.last_row[p])), abs=1e-12)
    data = run_json(capsys, "trace", str(path), "--targets", "10")
    assert data["rows"] == rows
    assert data["message_entropy_bits"]["count"] == 10
    assert data["nodes"] == {"clients": 8, "providers": 1, "mixes": 4}


def test_bad_trace_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 1.0, "src": "client-0"}\n')
    assert main(["simulate", "trace", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mixnet: error:") and err.count("\n") == 1
    with pytest.raises(TraceError):
        parse_trace(['{"t": 1, "src": "a", "dst": "b", "size": 1}'])


def test_scenario_names_agree() -> None:
    from simulations.cli import SCENARIO_NAMES
    from simulations.scenarios import SCENARIOS

    assert tuple(SCENARIOS) == SCENARIO_NAMES


def test_user_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "network", "--corrupt-fraction", "2"]) == 1
    assert main(["simulate", "network", "--sweep", "nonsense=1,2"]) == 1
    assert main(["simulate", "trace"]) == 1
    err = capsys.readouterr().err
    assert err.count("mixnet: error:") == 3
