"""``mixnet mixnode init|run``: create a node's keys and config; run it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import trio

from mixcore.consensus import AuthorityRef
from mixcore.keys import IdentityKey, LinkKey, save_identity_key, save_link_key
from mixcore.params import NetworkParams
from mixnode.config import CONFIG_NAME, MAX_WORKERS, ConfigError, NodeConfig
from mixnode.processor import Role
from mixnode.server import IDENTITY_FILE, LINK_FILE, serve


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
    params = NetworkParams.load(args.params) if args.params else NetworkParams()
    host, port = args.listen
    config = NodeConfig(
        name=args.name or data.name[:32],
        role=Role(args.role),
        data_dir=data,
        listen_host=host,
        listen_port=port,
        authorities=tuple(args.authority),
        threshold=args.threshold or len(args.authority) // 2 + 1,
        params=params,
        workers=args.workers,
    )
    data.mkdir(parents=True, exist_ok=True)
    identity, link = IdentityKey.generate(), LinkKey.generate()
    save_identity_key(data / IDENTITY_FILE, identity)
    save_link_key(data / LINK_FILE, link)
    config.save(data / CONFIG_NAME)
    info = {
        "config": str(data / CONFIG_NAME),
        "name": config.name,
        "role": config.role.value,
        "identity_key": identity.public.hex(),
        "link_key": link.public.hex(),
    }
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:13} {v}")
    return 0


def _run(args: argparse.Namespace) -> int:
    config = NodeConfig.load(args.config)
    if args.workers is not None:
        config = dataclasses.replace(config, workers=args.workers)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is metadata
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"%(asctime)s {config.name} %(levelname)s %(message)s",
        stream=sys.stderr,
    )

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve, config)
            print(json.dumps({"status": "serving", "name": config.name, "port": port}), flush=True)

    trio.run(main)  # mixnet.cli turns a MixnetError inside a task group into one line
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("mixnode", help="run a mix node or provider")
    cmds = parser.add_subparsers(dest="mixnode_command", metavar="COMMAND", required=True)

    init = cmds.add_parser("init", help="create a node's keys and config file")
    init.add_argument("--dir", required=True, help="data directory (keys, config, databases)")
    init.add_argument("--role", choices=[r.value for r in Role], required=True)
    init.add_argument("--listen", type=_parse_listen, required=True, metavar="HOST:PORT")
    init.add_argument(
        "--authority", type=_parse_authority, action="append", required=True,
        metavar="KEYHEX@URL", help="a directory authority (repeat for each)",
    )
    init.add_argument("--threshold", type=int, default=0, help="default: majority")
    init.add_argument("--name", default="", help="operator nickname (<= 32 printable chars)")
    init.add_argument("--params", help="JSON file of network parameters (default: built-in)")
    init.add_argument("--force", action="store_true", help="overwrite an existing config")
    init.add_argument("--workers", type=_workers, default=None, metavar="N", help=WORKERS_HELP)
    init.add_argument("--json", action="store_true")
    init.set_defaults(func=_init)

    run = cmds.add_parser("run", help="run the node until SIGINT/SIGTERM")
    run.add_argument("--config", required=True)
    run.add_argument("--verbose", action="store_true")
    run.add_argument(
        "--workers", type=_workers, default=None, metavar="N", help=WORKERS_HELP + " (overrides)"
    )
    run.set_defaults(func=_run)
