"""``mixnet directory ...``: create, inspect and run a directory authority.

* ``init --dir DIR --name NAME --listen HOST:PORT [--url URL] [--params FILE]
  [--peer NAME=KEYHEX@URL ...] [--threshold N]``: writes ``DIR/identity.key`` (0600) and
  ``DIR/authority.json``; refuses to overwrite an existing authority;
* ``add-peer --dir DIR --peer NAME=KEYHEX@URL [--threshold N]``: adds (or updates) peers;
* ``info --dir DIR``: the public key and URL a launcher collects to configure the others, and
  the network's bootstrap line (every authority's key and URL, and the threshold) that
  clients and nodes join with;
* ``approve --dir DIR KEYHEX --role mix|provider [--layer N]`` (or ``--file LIST``) and
  ``revoke --dir DIR KEYHEX``: edit the approved node keys (``approved.json``); a running
  authority picks the change up without a restart;
* ``run --dir DIR`` (also ``serve``): runs the authority until SIGINT or SIGTERM.

Commands after ``init`` take the authority's ``--dir DIR`` or, equally, ``--config FILE`` (the
``authority.json`` inside it), as in every role (``docs/cli.md``).

Every command takes ``--json`` and then prints exactly one JSON object on stdout (``serve`` prints
it once it is listening, and writes ``ready.json`` in the authority's folder, removed at a clean
stop: :mod:`mixcore.ready`). Errors are one line on stderr via :mod:`mixnet.cli`. The work is
done in :mod:`directory.setup`, which launchers call directly.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import trio

from directory.approvals import make_approval, parse_key, parse_list, parse_role
from directory.config import (
    CONFIG_FILE_NAME,
    AuthorityConfig,
    PeerConfig,
    load_config,
    parse_listen,
)
from directory.errors import DirectoryConfigError, DirectoryError
from directory.setup import (
    ApprovalsInfo,
    add_peers,
    approve_nodes,
    authority_info,
    init_authority,
    revoke_node,
)
from mixcore.errors import MixnetError
from mixcore.loading import load_params
from mixcore.params import NetworkParams
from mixcore.ready import clear_ready, ready_path, write_ready


def _print(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(info))
        return
    for key, value in info.items():
        if key == "peers":
            for peer in value:
                print(f"{'peer':14} {peer['name']} {peer['identity_key']} {peer['url']}")
        else:
            print(f"{key:14} {value}")


def _init(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    info = init_authority(
        Path(args.dir), name=args.name, listen_host=host, listen_port=port, url=args.url,
        params=load_params(args.params) if args.params else None,
        peers=[PeerConfig.parse(spec) for spec in args.peer or ()], threshold=args.threshold,
        open_admission=args.open_admission,
    )
    if not args.params:
        _note_default_params(NetworkParams())
    _print(info.to_dict(), args.json)
    return 0


def _note_default_params(params: NetworkParams) -> None:
    print(f"mixnet: note: no --params: this network uses the built-in defaults (epochs of "
          f"{params.epoch_length:.0f} s from genesis {params.genesis_time:.0f}); every "
          "authority of a network must have the same", file=sys.stderr)


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config) if args.config else Path(args.dir) / CONFIG_FILE_NAME


def _add_peer(args: argparse.Namespace) -> int:
    info = add_peers(_config_path(args), [PeerConfig.parse(spec) for spec in args.peer],
                     args.threshold)
    _print(info.to_dict(), args.json)
    return 0


def _show_info(args: argparse.Namespace) -> int:
    _print(authority_info(_config_path(args)).to_dict(), args.json)
    return 0


def _approve(args: argparse.Namespace) -> int:
    new = []
    if args.file:
        try:
            text = Path(args.file).read_text()
        except OSError as exc:
            raise DirectoryConfigError(f"cannot read {args.file}: {exc.strerror}") from None
        new += parse_list(text)
    if args.key:
        if not args.role:
            raise DirectoryConfigError("approve: --role mix|provider is required with a key")
        new.append(make_approval(parse_key(args.key), parse_role(args.role), args.layer))
    _print_approvals(approve_nodes(_config_path(args), new), args.json)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    _print_approvals(revoke_node(_config_path(args), parse_key(args.key)), args.json)
    return 0


def _print_approvals(info: ApprovalsInfo, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info.to_dict()))
    else:
        for key in info.changed:
            print(f"{info.what:14} {key.hex()}")
        print(f"{'approved nodes':14} {info.approved_nodes} ({info.approvals_file})")


async def _serve_until_signal(
    config: AuthorityConfig, announce: dict[str, Any] | None, ready: Path
) -> None:
    from directory.service import serve  # noqa: PLC0415  # hypercorn only needed to serve

    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    shutdown.set()
                    return

        nursery.start_soon(watch_signals)
        await nursery.start(
            lambda task_status: serve(config, shutdown=shutdown, task_status=task_status)
        )
        write_ready(ready, {"name": config.name, "url": config.url,
                            "listen": f"{config.listen_host}:{config.listen_port}"})
        if announce is not None:
            print(json.dumps({**announce, "status": "serving"}), flush=True)
        await shutdown.wait()
    # leaving the nursery waited for serve() to finish its graceful shutdown


def _serve(args: argparse.Namespace) -> int:
    config_path = _config_path(args)
    config = load_config(config_path)
    info = authority_info(config_path)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO: which peer was asked what, when. Metadata; keep it out.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    announce = info.to_dict() if args.json else None
    ready = ready_path(config.data_dir)
    try:
        trio.run(_serve_until_signal, config, announce, ready)
    except BaseException as exc:
        inner = _single(exc)
        if isinstance(inner, OSError):
            raise DirectoryError(
                f"cannot serve on {config.listen_host}:{config.listen_port}: "
                f"{inner.strerror or inner}"
            ) from None
        if isinstance(inner, MixnetError):
            raise inner from None
        raise
    finally:
        clear_ready(ready)
    return 0


def _single(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-member exception groups, else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _where(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--dir", metavar="DIR", help="the authority's folder (made by init)")
    where.add_argument("--config", metavar="FILE",
                       help=f"its config file instead (DIR/{CONFIG_FILE_NAME})")


def _json(p: argparse.ArgumentParser, what: str = "print one JSON object") -> None:
    p.add_argument("--json", action="store_true", help=what)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("directory", help="run a directory authority")
    sub = parser.add_subparsers(dest="directory_command", metavar="COMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(sys.stderr), 2)[1])

    init = sub.add_parser("init", help="create an authority's identity key and config")
    init.add_argument("--dir", required=True, metavar="DIR",
                      help="folder for the key, config and database")
    init.add_argument("--name", required=True, metavar="NAME", help="the authority's name")
    init.add_argument("--listen", required=True, metavar="HOST:PORT",
                      help="where it serves HTTP")
    init.add_argument("--url", metavar="URL", help="public base URL (default http://HOST:PORT)")
    init.add_argument("--params", metavar="FILE",
                      help="network parameters (JSON object; default: built-in)")
    init.add_argument("--peer", action="append", metavar="NAME=KEYHEX@URL",
                      help="another authority of the network (repeat for each)")
    init.add_argument("--threshold", type=int, metavar="N",
                      help="signatures a consensus needs (default: majority)")
    init.add_argument(
        "--open-admission", action="store_true",
        help="admit unapproved nodes (test networks only; capped per address and epoch)",
    )
    _json(init)
    init.set_defaults(func=_init)

    approve = sub.add_parser("approve", help="approve node identity keys for the consensus")
    _where(approve)
    approve.add_argument("key", nargs="?", metavar="KEYHEX", help="the node's identity key")
    approve.add_argument("--role", choices=["mix", "provider"],
                         help="the role the node may take")
    approve.add_argument("--layer", type=int, metavar="N",
                         help="the only layer a mix may request")
    approve.add_argument("--file", metavar="LIST", help="lines of KEYHEX ROLE [LAYER]")
    approve.add_argument("--json", action="store_true", help="print one JSON object")
    approve.set_defaults(func=_approve)

    revoke = sub.add_parser("revoke", help="withdraw a node's approval")
    _where(revoke)
    revoke.add_argument("key", metavar="KEYHEX", help="the node's identity key")
    revoke.add_argument("--json", action="store_true", help="print one JSON object")
    revoke.set_defaults(func=_revoke)

    add = sub.add_parser("add-peer", help="add or update peer authorities")
    _where(add)
    add.add_argument("--peer", action="append", required=True, metavar="NAME=KEYHEX@URL",
                     help="another authority of the network (repeat for each)")
    add.add_argument("--threshold", type=int, metavar="N",
                     help="signatures a consensus needs (default: majority)")
    _json(add)
    add.set_defaults(func=_add_peer)

    info = sub.add_parser(
        "info", help="print the authority's key and URL, and the network's bootstrap line"
    )
    _where(info)
    _json(info)
    info.set_defaults(func=_show_info)

    run = sub.add_parser("run", aliases=["serve"],
                         help="run the authority until SIGINT or SIGTERM")
    _where(run)
    _json(run, "print one JSON object when listening")
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=_serve)
