"""``mixnet client ...``: create a client, run its daemon, and talk to it through the API; plus
the person-facing commands (``mixnet contact|send|read|group|chat ...``, mounted from
:mod:`client.messenger.commands`).

Every command finds the client's data directory in ``--dir`` or else ``$MIXNET_CLIENT_DIR``.
``init --join BOOTSTRAP`` takes the network's parameters from its threshold-signed consensus;
without it, ``--authority`` and ``--params`` are both required, so a client is never made with
built-in defaults that the network does not use (it would wait for a consensus forever).

Heavy modules (keys, consensus, the store's KDF) are imported by the commands that need them,
so that a command which only talks to the daemon starts quickly.

The store's passphrase comes from ``--passphrase-file``, else ``$MIXNET_PASSPHRASE`` (for scripts
and tests), else an interactive prompt (``getpass``; asked twice at ``init``). It is never
printed, logged or passed on the command line."""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import logging
import os
import random
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from client import store_commands
from client.daemon_config import ClientConfigError, DaemonConfig
from client.messenger import command_line as messenger_command_line
from client.messenger import commands as messenger_commands
from client.messenger.commands import DIR_ENV, data_dir
from client.setup import STORE_NAME, init_client
from mixcore.errors import MixnetError
from mixcore.loading import load_params
from mixcore.params import NetworkParams
from mixcore.ready import clear_ready, ready_path, write_ready

if TYPE_CHECKING:
    from mixcore.consensus import AuthorityRef, ConsensusDocument
    from mixcore.descriptor import NodeDescriptor


def _authority(value: str) -> AuthorityRef:
    from mixcore.consensus import AuthorityRef  # noqa: PLC0415  # keeps the CLI quick

    try:
        return AuthorityRef.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _emit(result: Any, as_json: bool, human: str) -> None:
    if as_json:
        print(json.dumps(result, default=lambda b: b.hex() if isinstance(b, bytes) else str(b)))
    else:
        print(human)


def _first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _run_trio(fn: Any, *args: Any) -> Any:
    try:
        return trio.run(fn, *args)
    except BaseExceptionGroup as group:
        inner = group.subgroup(MixnetError)
        if inner is None:
            raise
        raise _first_error(inner) from None


def _request(data_dir: Path, op: str, **args: Any) -> Any:
    """One API call from a synchronous command."""
    return _run_trio(functools.partial(messenger_commands.call, data_dir, op, **args))


PASSPHRASE_ENV = "MIXNET_PASSPHRASE"  # noqa: S105  # a variable name, not a secret
PASSPHRASE_HELP = f"read the store passphrase from PATH (else ${PASSPHRASE_ENV} or a prompt)"


def read_passphrase(file: str | None, *, confirm: bool) -> str | None:
    """The passphrase from a file, the environment or a prompt; None if none is available
    (no file, no variable, and stdin is not a terminal)."""
    if file:
        try:
            text = Path(file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ClientConfigError(f"cannot read passphrase file {file}: {exc.strerror}") from None
        if not text:
            raise ClientConfigError(f"passphrase file {file} is empty")
        return text
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env
    if not sys.stdin.isatty():
        return None
    first = getpass.getpass("passphrase for the message store: ")
    if not first:
        raise ClientConfigError("the passphrase must not be empty")
    if confirm and getpass.getpass("again: ") != first:
        raise ClientConfigError("the two passphrases differ; nothing was created")
    return first


def _choose_provider(doc: ConsensusDocument, wanted: str | None) -> NodeDescriptor:
    """The provider named (by name or node id) in the verified consensus, or a random one."""
    providers = doc.providers()
    if not providers:
        raise ClientConfigError("the network's consensus lists no provider yet; try again later")
    if wanted is None:
        return random.SystemRandom().choice(providers)
    for desc in providers:
        if desc.name == wanted or desc.identity_key.hex() == wanted.lower():
            return desc
    names = ", ".join(sorted(d.name or d.identity_key.hex()[:16] for d in providers))
    raise ClientConfigError(f"the network has no provider {wanted!r} (it has: {names})")


def _network(args: argparse.Namespace) -> tuple[tuple[AuthorityRef, ...], int, NetworkParams,
                                                  str, str]:
    """``(authorities, threshold, params, provider, provider label)`` for a new client."""
    if args.join:
        if args.authority or args.params or args.threshold:
            raise ClientConfigError("--join takes the authorities, threshold and parameters "
                                    "from the network; drop --authority/--threshold/--params")
        from mixcore.net.join import join_network  # noqa: PLC0415  # trio/httpx only here

        bootstrap, verified = join_network(
            args.join, wait=args.wait,
            notify=lambda text: print(f"mixnet: {text}", file=sys.stderr, flush=True),
        )
        desc = _choose_provider(verified.document, args.provider)
        label = f"{desc.name} ({desc.identity_key.hex()[:16]}...)"
        return (bootstrap.authorities, bootstrap.threshold, verified.document.params,
                desc.identity_key.hex(), label)
    if not args.authority or not args.params:
        raise ClientConfigError(
            "give the network's bootstrap with --join BOOTSTRAP (mixnet testnet --keep-running "
            "and mixnet directory info print it), or both --authority KEYHEX@URL and "
            "--params FILE; built-in defaults would not match the network"
        )
    if not args.provider:
        raise ClientConfigError("--provider NAME is needed without --join")
    params = load_params(args.params)
    threshold = args.threshold or len(args.authority) // 2 + 1
    return tuple(args.authority), threshold, params, args.provider, args.provider


def _init(args: argparse.Namespace) -> int:
    data = data_dir(args).resolve()
    if (data / "client.json").exists() and not args.force:
        raise ClientConfigError(f"{data} already holds a client; use --force to overwrite")
    authorities, threshold, params, provider, label = _network(args)
    passphrase = read_passphrase(args.passphrase_file, confirm=True)
    info = init_client(
        data, provider=provider, authorities=authorities, threshold=threshold, params=params,
        passphrase=passphrase, name=args.name, force=args.force,
    )
    human = f"client created in {data} (provider {label})"
    if passphrase is None:
        print(f"mixnet: note: no passphrase (set {PASSPHRASE_ENV} or run in a terminal): "
              "created a transport-only client without the message store", file=sys.stderr)
    elif info.card is not None:
        human += f"\nyour contact card:\n{info.card.qr_text()}\n{info.card.to_text()}"
    else:
        human += "\nyour contact card: start the daemon, then run: mixnet contact card"
    human += (f"\nnext: export {DIR_ENV}={data}; then run the daemon: mixnet client run")
    _emit(info.to_dict(), args.json, human)
    return 0


def _run(args: argparse.Namespace) -> int:
    config = DaemonConfig.load(data_dir(args))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"%(asctime)s client {config.name} %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    from client.daemon import serve  # noqa: PLC0415  # keep the other commands light

    passphrase = None
    if (config.data_dir / STORE_NAME).exists():
        passphrase = read_passphrase(args.passphrase_file, confirm=False)
    received: list[int] = []

    async def main() -> None:
        # The signals are ours from the first moment: Ctrl-C while the daemon still waits for
        # a consensus is a clean stop, not a KeyboardInterrupt inside a task group.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    async for signum in signals:
                        received.append(signum)
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(watch)
                address = await nursery.start(
                    functools.partial(serve, config, passphrase=passphrase)
                )
                write_ready(ready, {"name": config.name, "address": address})
                if args.json:
                    print(json.dumps({"status": "serving", "name": config.name,
                                      "address": address}), flush=True)
                else:
                    print(f"client {config.name} serving; address {address}", flush=True)

    ready = ready_path(config.data_dir)
    try:
        _run_trio(main)
    finally:
        clear_ready(ready)
    if signal.SIGINT in received:
        raise KeyboardInterrupt
    return 0


def _address(args: argparse.Namespace) -> int:
    result = _request(data_dir(args), "address")
    _emit(result, args.json, result["text"])
    return 0


def _raw_send(args: argparse.Namespace) -> int:
    from client.daemon import parse_address  # noqa: PLC0415

    provider, mailbox, mailbox_key = parse_address(args.address)
    directory = data_dir(args)
    data = sys.stdin.buffer.read() if args.text == "-" else args.text.encode()
    result = _request(directory, "send", provider=provider, mailbox=mailbox,
                      mailbox_key=mailbox_key, data=data)
    if args.wait:
        result = _run_trio(_wait, directory, result["message_id"], args.wait)
    _emit(result, args.json, json.dumps(result, default=lambda b: b.hex()))
    return 0 if result.get("state", "pending") != "undeliverable" else 1


async def _wait(directory: Path, message_id: bytes, timeout: float) -> dict[str, Any]:
    with trio.move_on_after(timeout):
        while True:
            state = await messenger_commands.call(directory, "message", message_id=message_id)
            if state["state"] != "pending":
                return {"message_id": message_id, **state}
            await trio.sleep(0.5)
    return {"message_id": message_id, "state": "pending", "reason": "still waiting"}


def _raw_inbox(args: argparse.Namespace) -> int:
    directory = data_dir(args)
    rows = _request(directory, "inbox", unread_only=not args.all, limit=args.limit)
    if args.mark_read and rows:
        _request(directory, "mark_read", seqs=[r["seq"] for r in rows])
    if args.json:
        _emit(
            {"messages": [{**r, "text": r["data"].decode(errors="replace")} for r in rows]},
            True, "",
        )
    else:
        for r in rows:
            print(f"[{r['seq']}] {r['data'].decode(errors='replace')}")
    return 0


def _dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", metavar="DIR", default=None,
                   help=f"the client's data directory (default: ${DIR_ENV})")


def _json_option(p: argparse.ArgumentParser, what: str = "print one JSON object") -> None:
    p.add_argument("--json", action="store_true", help=what)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("client", help="a messenger client: create, run, send, receive")
    cmds = parser.add_subparsers(dest="client_command", metavar="COMMAND", required=True)

    init = cmds.add_parser(
        "init", help="create a client (link key = mailbox credential, identity, store)",
        description="Create a client. Join a network from its bootstrap line (--join), or "
                    "name its authorities and parameters file yourself.",
    )
    _dir_option(init)
    init.add_argument("--join", metavar="BOOTSTRAP",
                      help="the network's bootstrap line (mixnet-bootstrap1:...) or a file "
                           "holding it; parameters come from its signed consensus")
    init.add_argument("--provider", metavar="NAME",
                      help="your provider: its name or node id (with --join: default random)")
    init.add_argument("--authority", type=_authority, action="append", metavar="KEYHEX@URL",
                      help="an authority, without --join (repeat for each)")
    init.add_argument("--threshold", type=int, default=0, metavar="N",
                      help="signatures a consensus needs, without --join (default: majority)")
    init.add_argument("--params", metavar="FILE",
                      help="JSON file of the network's parameters, without --join")
    init.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                      help="with --join: wait this long for a network that has not published "
                           "its first consensus yet")
    init.add_argument("--name", default="", metavar="NAME",
                      help="a name for this client in logs (default: the directory's name)")
    init.add_argument("--force", action="store_true",
                      help="overwrite a client already in DIR (its keys and messages are lost)")
    init.add_argument("--passphrase-file", metavar="PATH", help=PASSPHRASE_HELP)
    _json_option(init)
    init.set_defaults(func=_init)

    run = cmds.add_parser("run", help="run the client daemon (Poisson streams + local API)")
    _dir_option(run)
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.add_argument("--passphrase-file", metavar="PATH", help=PASSPHRASE_HELP)
    _json_option(run, "print one JSON object once serving")
    run.set_defaults(func=_run)

    p = cmds.add_parser("address",
                        help="print this client's address (PROVIDER:MAILBOX:MAILBOX_KEY)")
    _dir_option(p)
    _json_option(p)
    p.set_defaults(func=_address)

    p = cmds.add_parser("status", help="the daemon's state (the same as: mixnet status)")
    _dir_option(p)
    _json_option(p)
    p.set_defaults(func=messenger_commands.status_command)

    send = cmds.add_parser(
        "raw-send",
        help="send raw bytes to an address (the testnet's traffic; no end-to-end encryption, "
        "sealed to the mailbox's key like every item)",
    )
    send.add_argument("address", metavar="ADDRESS",
                      help="PROVIDER_HEX:MAILBOX_HEX:MAILBOX_KEY_HEX, as `client address` prints")
    send.add_argument("text", metavar="TEXT", help="what to send (- reads stdin)")
    _dir_option(send)
    send.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                      help="wait until delivered to the recipient's provider or failed")
    _json_option(send)
    send.set_defaults(func=_raw_send)

    inbox = cmds.add_parser(
        "raw-inbox", help="raw payloads received (not messenger messages: see mixnet inbox)"
    )
    _dir_option(inbox)
    inbox.add_argument("--all", action="store_true", help="include read payloads")
    inbox.add_argument("--mark-read", action="store_true", help="mark the shown ones read")
    inbox.add_argument("--limit", type=int, default=100, metavar="N",
                       help="at most N payloads (default 100)")
    _json_option(inbox)
    inbox.set_defaults(func=_raw_inbox)

    store_commands.register(cmds)  # passphrase, accept-restore
    messenger_command_line.register(sub)
