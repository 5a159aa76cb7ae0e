"""``mixnet simulate SCENARIO``: run a scenario, a sweep, or the adversary on a recorded trace.

Mounted by ``mixnet.cli`` through ``register(subparsers)``. ``--json`` prints one object with
every parameter used; the progress bar of a sweep goes to stderr so stdout stays parseable.
Only the parser lives here: every ``mixnet`` command imports this module to mount the
subcommand, so the numeric work (``simulations.runner``) is imported when it runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from simulations.config import SimConfig

#: Scenario names (``simulations.scenarios.SCENARIOS`` has the functions; a test checks both
#: agree). Kept here so that mounting the subcommand does not import numpy.
SCENARIO_NAMES = ("single-mix", "network", "epsilon", "timing", "sda", "n-1")

#: Flag name -> SimConfig field, for the flags that map one to one.
FLAGS: dict[str, str] = {
    "clients": "clients",
    "client_rate": "client_rate",
    "loop_rate": "loop_rate",
    "drop_rate": "drop_rate",
    "mix_loop_rate": "mix_loop_rate",
    "layers": "layers",
    "width": "width",
    "providers": "providers",
    "mean_hop_delay": "mean_hop_delay",
    "link_latency": "link_latency",
    "duration": "duration",
    "warmup": "warmup",
    "corrupt_fraction": "corrupt_fraction",
    "corrupt_providers": "corrupt_providers",
    "message_rate": "message_rate",
    "provider_delay": "provider_delay",
    "pull_batch": "pull_batch",
    "seed": "seed",
    "runs": "runs",
    "targets": "targets",
    "pull_interval": "pull_interval",
    "contacts": "contacts",
    "rounds": "rounds",
}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="traffic-analysis simulations and attacks",
        description="Simulate the mixnet against a global passive adversary and attacks, or "
        "analyze a recorded link trace: mixnet simulate trace FILE.",
    )
    p.add_argument("scenario", choices=[*SCENARIO_NAMES, "trace", "paper"],
                   help="what to simulate (paper loopix: the Loopix paper's figures)")
    p.add_argument("file", nargs="?",
                   help="trace file (JSON lines) for trace; the paper (loopix) for paper")
    p.add_argument("--out", metavar="DIR", help="paper: folder for the figures and tables")
    defaults = SimConfig()
    helps = {
        "client_rate": "payload-stream packets/s per client, all real unless --message-rate "
                       "(single-mix: input rate = clients x this)",
        "message_rate": "real messages/s per client queued into the payload stream (the other "
                        "slots carry drop cover)",
        "provider_delay": "mean holding delay at providers (default: --mean-hop-delay; 0 as "
                          "built)",
        "corrupt_providers": "providers that reveal their links and their mailboxes",
        "pull_batch": "items a mailbox pull returns at most",
        "providers": "providers (0 = clients send straight into layer 1)",
        "width": "mixes per layer",
        "corrupt_fraction": "share of mixes that reveal their input-output links",
        "targets": "target messages tracked per run",
        "rounds": "SDA: observation rounds (of --pull-interval seconds)",
        "contacts": "SDA: recipients of the target sender",
    }
    for flag, name in FLAGS.items():
        value = getattr(defaults, name)
        p.add_argument(
            "--" + flag.replace("_", "-"),
            dest=name,
            type=int if isinstance(value, int) else float,
            default=value,
            help=f"{helps.get(name, name.replace('_', ' '))} (default {value})",
        )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.png", help="draw the figure into this file")
    p.add_argument("--sweep", metavar="PARAM=V1,V2,...", help="run once per value of PARAM")
    p.add_argument("--jobs", type=int, default=None,
                   help="sweep: local processes (default: one per CPU; 1: serial)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="sweep: run the points on this Dask distributed scheduler")
    p.add_argument("--table", metavar="FILE.csv",
                   help="sweep: also write a tidy table, one row per value")
    p.add_argument("--write-trace", metavar="FILE",
                   help="network scenarios: also write the first run as a link trace")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from simulations.runner import run  # noqa: PLC0415  (see the module docstring)

    return run(args, config_from(args))


def config_from(args: argparse.Namespace) -> SimConfig:
    """The flags as a validated ``SimConfig`` (a bad value is a one-line ``ParamsError``)."""
    return SimConfig(**{name: getattr(args, name) for name in FLAGS.values()})
