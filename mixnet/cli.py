"""``mixnet``: one command, a subcommand per role.

Each role package may provide ``<role>/cli.py`` with ``register(subparsers)``; that function adds
its subcommand and sets ``func`` on its parser to a handler ``(args) -> int`` (the exit status).
Handlers print one JSON object on stdout when ``--json`` is given. User errors surface as one line
on stderr and a non-zero status, never a traceback.
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixnet", description="Metadata-minimizing mixnet messenger."
    )
    parser.add_argument("--version", action="version", version=f"mixnet {mixcore.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    params = sub.add_parser("params", help="print the default network parameters")
    params.add_argument("--json", action="store_true", help="print one JSON object")
    params.set_defaults(func=_params_command)
    for role in ROLE_CLIS:
        try:
            module = importlib.import_module(f"{role}.cli")
        except ModuleNotFoundError as exc:
            if exc.name != f"{role}.cli":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
    except KeyboardInterrupt:
        print("mixnet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
