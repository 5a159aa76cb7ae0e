"""``mixnet``: one command, a subcommand per role.

Each role package may provide ``<role>/cli.py`` with ``register(subparsers)``; that function adds
its subcommand and sets ``func`` on its parser to a handler ``(args) -> int`` (the exit status).
Handlers print one JSON object on stdout when ``--json`` is given. User errors surface as one line
on stderr and a non-zero status, never a traceback. Before any command runs, the process gets a
private umask (every file it creates is 0600, every folder 0700) and its descriptor limit raised
to the hard limit (:func:`mixcore.process.prepare_process`): this is the entry of every role.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

import mixcore
from mixcore.errors import MixnetError
from mixcore.params import NetworkParams
from mixcore.process import prepare_process

#: Role packages whose ``cli`` module is mounted when it exists, in help order.
ROLE_CLIS = ("directory", "mixnode", "client", "simulations")


def _params_command(args: argparse.Namespace) -> int:
    params = NetworkParams()
    if args.json:
        print(json.dumps(params.to_dict()))
    else:
        for name, value in params.to_dict().items():
            print(f"{name:16} {value}")
    return 0


def _testnet_command(args: argparse.Namespace) -> int:
    from mixnet.testnet import Options, _print, run_testnet  # noqa: PLC0415  # heavy imports

    options = Options(
        duration=args.duration,
        clients=args.clients,
        layers=args.layers,
        mixes_per_layer=args.mixes_per_layer,
        mean_hop_delay=args.mean_hop_delay,
        epoch_length=args.epoch_length,
        message_interval=args.message_interval,
        seed=args.seed,
        chaos=args.chaos,
        keep_running=args.keep_running,
        directory=args.dir,
        trace=args.trace,
        json=args.json,
    )
    summary = run_testnet(options)
    if not args.keep_running:
        _print(summary, args.json)
    messages = summary["messages"]
    return 0 if messages["lost"] == 0 and messages["delivered"] > 0 else 1


def _register_testnet(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pathlib import Path  # noqa: PLC0415

    p = sub.add_parser("testnet", help="run a whole network on this machine and report")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--mixes-per-layer", type=int, default=2)
    p.add_argument("--mean-hop-delay", type=float, default=0.1, metavar="S")
    p.add_argument("--epoch-length", type=float, default=20.0, metavar="S")
    p.add_argument("--message-interval", type=float, default=3.0, metavar="S",
                   help="mean seconds between two messages of one client")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--chaos", action="store_true",
                   help="SIGKILL and restart a mix and a provider, stop an authority")
    p.add_argument("--keep-running", action="store_true")
    p.add_argument("--dir", type=Path, default=None, help="keep configs, keys and logs here")
    p.add_argument("--trace", type=Path, default=None, metavar="FILE",
                   help="record every link event (time, from, to, size) for mixnet simulate trace")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_testnet_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixnet", description="Metadata-minimizing mixnet messenger."
    )
    parser.add_argument("--version", action="version", version=f"mixnet {mixcore.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    params = sub.add_parser("params", help="print the default network parameters")
    params.add_argument("--json", action="store_true", help="print one JSON object")
    params.set_defaults(func=_params_command)
    _register_testnet(sub)
    for role in ROLE_CLIS:
        try:
            module = importlib.import_module(f"{role}.cli")
        except ModuleNotFoundError as exc:
            if exc.name != f"{role}.cli":
                raise
            continue
        module.register(sub)
    return parser


def _first_mixnet_error(group: BaseExceptionGroup[BaseException]) -> MixnetError | None:
    """The first project error inside (nested) exception groups: a user error raised in a
    task is still one line, not a traceback."""
    matched = group.subgroup(MixnetError)
    if matched is None:
        return None
    exc: BaseException = matched
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc if isinstance(exc, MixnetError) else None


def main(argv: Sequence[str] | None = None) -> int:
    prepare_process()
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args))
    except MixnetError as exc:
        print(f"mixnet: error: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:  # trio nurseries wrap what their tasks raised
        error = _first_mixnet_error(group)
        if error is None:
            raise
        print(f"mixnet: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mixnet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
