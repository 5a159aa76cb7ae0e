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
it once it is listening). Errors are one line on stderr via :mod:`mixnet.cli`.
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

from directory.admission import AdmissionMode, AdmissionSettings
from directory.approvals import (
    load_approvals,
    make_approval,
    parse_key,
    parse_list,
    parse_role,
    save_approvals,
)
from directory.config import (
    CONFIG_FILE_NAME,
    IDENTITY_FILE_NAME,
    AuthorityConfig,
    PeerConfig,
    load_config,
    parse_listen,
    save_config,
)
from directory.errors import DirectoryConfigError, DirectoryError
from mixcore.bootstrap import Bootstrap
from mixcore.consensus import AuthorityRef
from mixcore.errors import MixnetError
from mixcore.keys import IdentityKey, load_identity_key, save_identity_key
from mixcore.loading import load_params
from mixcore.params import NetworkParams


def bootstrap_of(config: AuthorityConfig, identity: IdentityKey) -> Bootstrap:
    """The network as this authority knows it: itself and its peers, and the threshold."""
    refs = [AuthorityRef(config.url, identity.public)]
    refs += [AuthorityRef(peer.url, peer.identity_key) for peer in config.peers]
    return Bootstrap(tuple(refs), config.effective_threshold)


def _info(config: AuthorityConfig, identity: IdentityKey, config_path: Path) -> dict[str, Any]:
    return {
        "name": config.name,
        "identity_key": identity.public.hex(),
        "url": config.url,
        "listen": f"{config.listen_host}:{config.listen_port}",
        "config": str(config_path),
        "threshold": config.effective_threshold,
        "authorities": len(config.peers) + 1,
        "peers": [p.to_dict() for p in config.peers],
        "peer_spec": f"{config.name}={identity.public.hex()}@{config.url}",
        "bootstrap": bootstrap_of(config, identity).to_text(),
    }


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
    directory = Path(args.dir)
    config_path = directory / CONFIG_FILE_NAME
    key_path = directory / IDENTITY_FILE_NAME
    if config_path.exists() or key_path.exists():
        raise DirectoryConfigError(f"{directory} already holds an authority; refusing to overwrite")
    host, port = parse_listen(args.listen)
    url = args.url or f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    config = AuthorityConfig(
        name=args.name,
        identity_key_file=key_path.resolve(),
        listen_host=host,
        listen_port=port,
        url=url,
        data_dir=directory.resolve(),
        params=load_params(args.params) if args.params else NetworkParams(),
        peers=tuple(PeerConfig.parse(spec) for spec in args.peer or ()),
        threshold=args.threshold,
        admission=AdmissionSettings(
            AdmissionMode.OPEN if args.open_admission else AdmissionMode.APPROVED
        ),
    )
    identity = IdentityKey.generate()
    config.authority_set(identity.public)  # checks the threshold against the peers
    directory.mkdir(parents=True, exist_ok=True)
    save_identity_key(key_path, identity)
    save_config(config_path, config)
    if not args.params:
        _note_default_params(config.params)
    _print(_info(config, identity, config_path.resolve()), args.json)
    return 0


def _note_default_params(params: NetworkParams) -> None:
    print(f"mixnet: note: no --params: this network uses the built-in defaults (epochs of "
          f"{params.epoch_length:.0f} s from genesis {params.genesis_time:.0f}); every "
          "authority of a network must have the same", file=sys.stderr)


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config) if args.config else Path(args.dir) / CONFIG_FILE_NAME


def _add_peer(args: argparse.Namespace) -> int:
    config_path = _config_path(args)
    config = load_config(config_path)
    identity = load_identity_key(config.identity_key_file)
    for spec in args.peer:
        config = config.with_peer(PeerConfig.parse(spec))
    if args.threshold is not None:
        values = {n: getattr(config, n) for n in AuthorityConfig.__dataclass_fields__}
        values["threshold"] = args.threshold
        config = AuthorityConfig(**values)
    config.authority_set(identity.public)
    save_config(config_path, config)
    _print(_info(config, identity, config_path.resolve()), args.json)
    return 0


def _show_info(args: argparse.Namespace) -> int:
    config_path = _config_path(args)
    config = load_config(config_path)
    identity = load_identity_key(config.identity_key_file)
    _print(_info(config, identity, config_path.resolve()), args.json)
    return 0


def _approve(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args))
    approvals = {a.identity_key: a for a in load_approvals(config.approvals_path)}
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
    if not new:
        raise DirectoryConfigError("approve: give a KEY with --role, or --file LIST")
    for approval in new:
        approvals[approval.identity_key] = approval
    save_approvals(config.approvals_path, approvals.values())
    _print_approvals(config, len(approvals), [a.identity_key.hex() for a in new], "approved",
                     args.json)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args))
    key = parse_key(args.key)
    approvals = [a for a in load_approvals(config.approvals_path) if a.identity_key != key]
    save_approvals(config.approvals_path, approvals)
    _print_approvals(config, len(approvals), [key.hex()], "revoked", args.json)
    return 0


def _print_approvals(
    config: AuthorityConfig, total: int, changed: list[str], what: str, as_json: bool
) -> None:
    info = {
        "name": config.name,
        "admission": config.admission.mode.value,
        "approvals_file": str(config.approvals_path),
        what: changed,
        "approved_nodes": total,
    }
    if as_json:
        print(json.dumps(info))
    else:
        for key in changed:
            print(f"{what:14} {key}")
        print(f"{'approved nodes':14} {total} ({config.approvals_path})")


async def _serve_until_signal(config: AuthorityConfig, announce: dict[str, Any] | None) -> None:
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
        if announce is not None:
            print(json.dumps({**announce, "status": "serving"}), flush=True)
        await shutdown.wait()
    # leaving the nursery waited for serve() to finish its graceful shutdown


def _serve(args: argparse.Namespace) -> int:
    config_path = _config_path(args)
    config = load_config(config_path)
    identity = load_identity_key(config.identity_key_file)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO: which peer was asked what, when. Metadata; keep it out.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    announce = _info(config, identity, config_path.resolve()) if args.json else None
    try:
        trio.run(_serve_until_signal, config, announce)
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
