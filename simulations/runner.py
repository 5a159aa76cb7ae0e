"""What ``mixnet simulate`` does once parsed: run, sweep or analyze a trace, then print/plot."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress

from mixcore.errors import MixnetError, ParamsError
from simulations.config import SimConfig, coerce
from simulations.network import simulate_network
from simulations.scenarios import (
    HEADLINE_LABELS,
    SCENARIOS,
    Curve,
    Outcome,
    analyze_trace,
    headline,
)
from simulations.sweeps import connect, run_points, write_table
from simulations.trace import read_trace, write_trace


def parse_sweep(text: str) -> tuple[str, list[int | float | None]]:
    """``mean-hop-delay=0.1,0.2`` -> ("mean_hop_delay", [0.1, 0.2]), typed like the field."""
    if "=" not in text:
        raise ParamsError("sweep", "expected PARAM=V1,V2,...")
    name, _, values = text.partition("=")
    name = name.strip().lstrip("-").replace("-", "_")
    items = [v for v in values.split(",") if v.strip()]
    if not items:
        raise ParamsError("sweep", "no values given")
    return name, [coerce(name, v.strip()) for v in items]


def run(args: argparse.Namespace, cfg: SimConfig) -> int:
    """The ``simulate`` handler's body; returns the exit status."""
    if args.scenario == "trace":
        if not args.file:
            raise MixnetError("simulate trace needs a FILE")
        outcome = analyze_trace(read_trace(args.file), cfg)
        data = {"scenario": "trace", "file": args.file, "parameters": cfg.to_dict(),
                **outcome.data}
        _emit(args, data)
        if args.plot and outcome.curve is not None:
            _plot(args.plot, f"trace {args.file}", [("trace", outcome.curve)])
        return 0
    if args.scenario == "paper":
        return _paper(args, cfg)
    if args.file:
        raise MixnetError(f"unexpected argument {args.file!r} (only the trace scenario takes one)")
    scenario = SCENARIOS[args.scenario]
    if args.sweep:
        return _sweep(args, cfg, scenario)
    outcome = scenario(cfg)
    data = {"scenario": args.scenario, "parameters": outcome.parameters(cfg), **outcome.data}
    if args.write_trace:
        first = np.random.SeedSequence(cfg.seed).spawn(cfg.runs)[0]
        data["trace_rows"] = write_trace(simulate_network(cfg, np.random.default_rng(first)),
                                         args.write_trace)
        data["trace_file"] = args.write_trace
    _emit(args, data)
    if args.plot and outcome.curve is not None:
        _plot(args.plot, args.scenario, [(args.scenario, outcome.curve)])
    return 0


def _sweep(args: argparse.Namespace, cfg: SimConfig, run: Any) -> int:
    del run  # the points run by name (simulations.sweeps), wherever they run
    name, values = parse_sweep(args.sweep)
    numbers = [v for v in values if v is not None]
    if args.plot and len(numbers) != len(values):
        raise ParamsError("plot", f"a sweep of {name} over 'none' has no number axis to plot")
    points = [cfg.replace(**{name: value}) for value in values]
    results: list[dict[str, Any]] = []
    curves: list[tuple[str, Curve]] = []
    heads: list[float] = []
    client = connect(args.scheduler)
    try:
        with Progress(transient=True, console=_stderr_console()) as bar:
            task = bar.add_task(f"sweep {name}", total=len(values))
            outcomes: list[Outcome] = run_points(
                [(args.scenario, p.to_dict()) for p in points], jobs=args.jobs, client=client,
                progress=lambda: bar.advance(task))
    finally:
        if client is not None:
            client.close()
    for value, point, outcome in zip(values, points, outcomes, strict=True):
        results.append({"value": value, "parameters": outcome.parameters(point),
                        **outcome.data})
        heads.append(headline(args.scenario, outcome.data))
        if outcome.curve is not None:
            curves.append((f"{name}={value}", outcome.curve))
    if args.table:
        write_table(args.table, name, results)
    data = {
        "scenario": args.scenario,
        "parameters": cfg.to_dict(),
        "sweep": {"param": name, "values": values, "headline": heads},
        "results": results,
    }
    _emit(args, data)
    if args.plot:
        _plot(args.plot, f"{args.scenario}: sweep of {name}", curves,
              (name, [float(v) for v in numbers], heads, HEADLINE_LABELS[args.scenario]))
    return 0


def _paper(args: argparse.Namespace, cfg: SimConfig) -> int:
    if args.file != "loopix":
        raise MixnetError("simulate paper takes one paper: loopix")
    if not args.out:
        raise MixnetError("simulate paper loopix needs --out DIR")
    from simulations.paper import run_paper  # noqa: PLC0415  (matplotlib, only here)

    client = connect(args.scheduler)
    try:
        data = run_paper(cfg, args.out, jobs=args.jobs, client=client)
    finally:
        if client is not None:
            client.close()
    _emit(args, {"scenario": "paper", "paper": "loopix", "parameters": cfg.to_dict(), **data})
    return 0


def _stderr_console() -> Console:
    return Console(file=sys.stderr)


def _plot(path: str, title: str, curves: list[tuple[str, Curve]],
          summary: tuple[str, list[float], list[float], str] | None = None) -> None:
    # Imported here: matplotlib costs half a second and most runs draw nothing.
    from simulations.plots import draw  # noqa: PLC0415

    draw(path, title, curves, summary)


def _emit(args: argparse.Namespace, data: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(_clean(data), allow_nan=False))
        return
    for line in _human(data):
        print(line)


def _clean(obj: Any) -> Any:
    """JSON has no NaN/inf: non-finite numbers become null (their count is reported beside)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def _human(data: dict[str, Any], indent: str = "") -> list[str]:
    lines: list[str] = []
    for key, value in data.items():
        if key == "parameters":
            continue
        if isinstance(value, dict):
            if {"mean", "p50"} <= set(value):
                lines.append(f"{indent}{key:32} mean {_fmt(value['mean'])}  p5 "
                             f"{_fmt(value['p5'])}  p50 {_fmt(value['p50'])}  p95 "
                             f"{_fmt(value['p95'])}  (n={value['count']})")
            else:
                lines.append(f"{indent}{key}:")
                lines.extend(_human(value, indent + "  "))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines.append(f"{indent}- value {item.get('value')}")
                lines.extend(_human(item, indent + "  "))
        else:
            lines.append(f"{indent}{key:32} {_fmt(value)}")
    return lines


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
