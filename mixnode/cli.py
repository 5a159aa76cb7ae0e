"""``mixnet mixnode init|run``: create a node's keys and config; run it.

``init`` joins a network from its bootstrap line (``--join``: the authorities, the threshold,
and the parameters of the threshold-signed consensus) or from ``--authority`` and ``--params``
given together; never from built-in defaults the network may not use. ``run`` takes the node's
``--dir DIR`` or its ``--config FILE``, as every role does (``docs/cli.md``); once it serves it
writes ``ready.json`` in its data directory (:mod:`mixcore.ready`), removed at a clean stop.
``init`` is :func:`mixnode.setup.init_node`, which launchers call directly."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import trio

from mixcore.consensus import AuthorityRef
from mixcore.loading import load_params
from mixcore.params import NetworkParams
from mixcore.ready import clear_ready, ready_path, write_ready
from mixcore.topology import NodeRole
from mixnode.config import CONFIG_NAME, MAX_WORKERS, ConfigError, NodeConfig
from mixnode.server import serve
from mixnode.setup import init_node


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT")
    return host.strip("[]"), int(port)


def _parse_authority(value: str) -> AuthorityRef:
    try:
        return AuthorityRef.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _network(args: argparse.Namespace) -> tuple[tuple[AuthorityRef, ...], int, NetworkParams]:
    if args.join:
        if args.authority or args.params or args.threshold:
            raise ConfigError("--join takes the authorities, threshold and parameters from the "
                              "network; drop --authority/--threshold/--params")
        from mixcore.net.join import join_network  # noqa: PLC0415  # trio/httpx only here

        bootstrap, verified = join_network(args.join, wait=args.wait)
        return bootstrap.authorities, bootstrap.threshold, verified.document.params
    if not args.authority or not args.params:
        raise ConfigError(
            "give the network's bootstrap with --join BOOTSTRAP (mixnet directory info prints "
            "it), or both --authority KEYHEX@URL and --params FILE"
        )
    threshold = args.threshold or len(args.authority) // 2 + 1
    return tuple(args.authority), threshold, load_params(args.params)


WORKERS_HELP = (
    "worker processes for the Sphinx hop (default: cores minus one, at least one; 0: in the "
    "node process)"
)


def _workers(value: str) -> int:
    if not value.isdigit() or int(value) > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"expected an integer in 0..{MAX_WORKERS}")
    return int(value)


def _init(args: argparse.Namespace) -> int:
    data = Path(args.dir).resolve()
    if (data / CONFIG_NAME).exists() and not args.force:
        raise ConfigError(f"{data / CONFIG_NAME} exists; use --force to overwrite")
    authorities, threshold, params = _network(args)
    host, port = args.listen
    info = init_node(
        data, role=NodeRole(args.role), listen_host=host, listen_port=port,
        authorities=authorities, threshold=threshold, params=params, name=args.name,
        workers=args.workers, force=args.force,
    ).to_dict()
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:13} {v}")
    return 0


def _run(args: argparse.Namespace) -> int:
    config = NodeConfig.load(args.config or Path(args.dir) / CONFIG_NAME)
    if args.workers is not None:
        config = dataclasses.replace(config, workers=args.workers)
    if args.trace is not None:
        config = dataclasses.replace(config, trace_path=Path(args.trace).resolve())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is metadata
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"%(asctime)s {config.name} %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    ready = ready_path(config.data_dir)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve, config)
            announce = {"name": config.name, "role": config.role.value, "port": port}
            write_ready(ready, announce)
            if args.json:
                print(json.dumps({"status": "serving", "name": config.name, "port": port}),
                      flush=True)
            else:
                print(f"{config.role.value} {config.name} serving on port {port}", flush=True)

    try:
        trio.run(main)  # mixnet.cli turns a MixnetError inside a task group into one line
    finally:
        clear_ready(ready)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("mixnode", help="run a mix node or provider")
    cmds = parser.add_subparsers(dest="mixnode_command", metavar="COMMAND", required=True)

    init = cmds.add_parser("init", help="create a node's keys and config file")
    init.add_argument("--dir", required=True, metavar="DIR",
                      help="data directory (keys, config, databases)")
    init.add_argument("--role", choices=[r.value for r in NodeRole], required=True,
                      help="a mix (one layer of the cascade) or a provider (clients' mailboxes)")
    init.add_argument("--listen", type=_parse_listen, required=True, metavar="HOST:PORT",
                      help="where it accepts links")
    init.add_argument("--join", metavar="BOOTSTRAP",
                      help="the network's bootstrap line or a file holding it; parameters come "
                           "from its signed consensus")
    init.add_argument(
        "--authority", type=_parse_authority, action="append", metavar="KEYHEX@URL",
        help="a directory authority, without --join (repeat for each)",
    )
    init.add_argument("--threshold", type=int, default=0, metavar="N",
                      help="signatures a consensus needs, without --join (default: majority)")
    init.add_argument("--params", metavar="FILE",
                      help="JSON file of the network's parameters, without --join")
    init.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                      help="with --join: wait this long for a first consensus")
    init.add_argument("--name", default="", metavar="NAME",
                      help="operator nickname (<= 32 printable chars)")
    init.add_argument("--force", action="store_true", help="overwrite an existing config")
    init.add_argument("--workers", type=_workers, default=None, metavar="N", help=WORKERS_HELP)
    init.add_argument("--json", action="store_true", help="print one JSON object")
    init.set_defaults(func=_init)

    run = cmds.add_parser("run", help="run the node until SIGINT/SIGTERM")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--dir", metavar="DIR", help="the node's data directory (made by init)")
    where.add_argument("--config", metavar="FILE", help=f"its config file instead "
                                                        f"(DIR/{CONFIG_NAME})")
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.add_argument(
        "--workers", type=_workers, default=None, metavar="N", help=WORKERS_HELP + " (overrides)"
    )
    run.add_argument("--trace", metavar="FILE", default=None,
                     help="record every link event to FILE for mixnet simulate trace (local "
                          "testnets only: it is the metadata a mix must never keep)")
    run.add_argument("--json", action="store_true", help="print one JSON object once serving")
    run.set_defaults(func=_run)
