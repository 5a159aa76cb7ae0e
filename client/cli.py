"""``mixnet client ...``: create a client, run its daemon, and talk to it through the API; plus
the person-facing commands (``mixnet contact|send|read|group|chat ...``, mounted from
:mod:`client.messenger.commands`).

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
import sys
from pathlib import Path
from typing import Any

import trio

from client import store_commands
from client.daemon_config import ClientConfigError, DaemonConfig
from client.e2e.cards import ContactCard
from client.e2e.identity import UserIdentity
from client.messenger import commands as messenger_commands
from client.storage import Store
from mixcore.consensus import AuthorityRef
from mixcore.errors import MixnetError
from mixcore.keys import LinkKey, save_link_key
from mixcore.params import NetworkParams
from mixcore.routing import mailbox_address


def _authority(value: str) -> AuthorityRef:
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
STORE_NAME = "messenger.db"
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


def _init(args: argparse.Namespace) -> int:
    data = Path(args.dir).resolve()
    if (data / "client.json").exists() and not args.force:
        raise ClientConfigError(f"{data} already holds a client; use --force to overwrite")
    params = NetworkParams.load(args.params) if args.params else NetworkParams()
    config = DaemonConfig(
        data_dir=data,
        provider=args.provider,
        authorities=tuple(args.authority),
        threshold=args.threshold or len(args.authority) // 2 + 1,
        params=params,
        name=args.name or data.name,
    )
    passphrase = read_passphrase(args.passphrase_file, confirm=True)
    path = config.save()
    key = LinkKey.generate()
    save_link_key(config.link_key_path, key)
    mailbox = mailbox_address(key.public)
    result: dict[str, Any] = {"config": str(path), "provider": args.provider,
                              "mailbox": mailbox.hex(), "messenger": passphrase is not None}
    human = f"client created in {data} (provider {args.provider})"
    store_path = data / STORE_NAME
    if args.force:
        store_path.unlink(missing_ok=True)
    if passphrase is None:
        print(f"mixnet: note: no passphrase (set {PASSPHRASE_ENV} or run in a terminal): "
              "created a transport-only client without the message store", file=sys.stderr)
    else:
        identity = UserIdentity.generate()
        with Store.create(store_path, passphrase) as store:
            store.save_identity(identity)
        try:
            provider = bytes.fromhex(args.provider)
        except ValueError:
            provider = b""
        if len(provider) == 32:
            card = ContactCard.create(identity, provider, mailbox)
            result["card"] = card.to_text()
            human += f"\n{card.qr_text()}\n{card.to_text()}"
        else:
            human += "\nyour contact card: start the daemon, then run: mixnet contact card"
    _emit(result, args.json, human)
    return 0


def _run(args: argparse.Namespace) -> int:
    config = DaemonConfig.load(args.dir)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"%(asctime)s client {config.name} %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    from client.daemon import serve  # noqa: PLC0415  # keep the other commands light

    passphrase = None
    if (config.data_dir / STORE_NAME).exists():
        passphrase = read_passphrase(args.passphrase_file, confirm=False)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            address = await nursery.start(functools.partial(serve, config, passphrase=passphrase))
            print(json.dumps({"status": "serving", "name": config.name, "address": address}),
                  flush=True)
            with trio.open_signal_receiver(2, 15) as signals:  # SIGINT, SIGTERM
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

    _run_trio(main)
    return 0


def _address(args: argparse.Namespace) -> int:
    result = _request(Path(args.dir), "address")
    _emit(result, args.json, result["text"])
    return 0


def _send(args: argparse.Namespace) -> int:
    from client.daemon import parse_address  # noqa: PLC0415

    provider, mailbox = parse_address(args.address)
    data = sys.stdin.buffer.read() if args.text == "-" else args.text.encode()
    result = _request(Path(args.dir), "send", provider=provider, mailbox=mailbox, data=data)
    if args.wait:
        result = _run_trio(_wait, Path(args.dir), result["message_id"], args.wait)
    _emit(result, args.json, json.dumps(result, default=lambda b: b.hex()))
    return 0 if result.get("state", "pending") != "undeliverable" else 1


async def _wait(data_dir: Path, message_id: bytes, timeout: float) -> dict[str, Any]:
    with trio.move_on_after(timeout):
        while True:
            state = await messenger_commands.call(data_dir, "message", message_id=message_id)
            if state["state"] != "pending":
                return {"message_id": message_id, **state}
            await trio.sleep(0.5)
    return {"message_id": message_id, "state": "pending", "reason": "still waiting"}


def _inbox(args: argparse.Namespace) -> int:
    rows = _request(Path(args.dir), "inbox", unread_only=not args.all, limit=args.limit)
    if args.mark_read and rows:
        _request(Path(args.dir), "mark_read", seqs=[r["seq"] for r in rows])
    if args.json:
        _emit(
            {"messages": [{**r, "text": r["data"].decode(errors="replace")} for r in rows]},
            True, "",
        )
    else:
        for r in rows:
            print(f"[{r['seq']}] {r['data'].decode(errors='replace')}")
    return 0


def _status(args: argparse.Namespace) -> int:
    result = _request(Path(args.dir), "status")
    human = "\n".join(f"{k:24} {v}" for k, v in result.items() if not isinstance(v, dict))
    _emit(result, args.json, human)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("client", help="a messenger client: create, run, send, receive")
    cmds = parser.add_subparsers(dest="client_command", metavar="COMMAND", required=True)

    init = cmds.add_parser("init", help="create a client (link key = mailbox credential)")
    init.add_argument("--dir", required=True)
    init.add_argument("--provider", required=True, help="provider name or node id (hex)")
    init.add_argument("--authority", type=_authority, action="append", required=True,
                      metavar="KEYHEX@URL")
    init.add_argument("--threshold", type=int, default=0)
    init.add_argument("--params", help="JSON file of network parameters")
    init.add_argument("--name", default="")
    init.add_argument("--force", action="store_true")
    init.add_argument("--passphrase-file", metavar="PATH",
                      help=PASSPHRASE_HELP)
    init.add_argument("--json", action="store_true")
    init.set_defaults(func=_init)

    run = cmds.add_parser("run", help="run the client daemon (Poisson streams + local API)")
    run.add_argument("--dir", required=True)
    run.add_argument("--verbose", action="store_true")
    run.add_argument("--passphrase-file", metavar="PATH",
                     help=PASSPHRASE_HELP)
    run.set_defaults(func=_run)

    for name, func, help_text in (
        ("address", _address, "print this client's address"),
        ("status", _status, "connection, epoch, rates and counters"),
    ):
        p = cmds.add_parser(name, help=help_text)
        p.add_argument("--dir", required=True)
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)

    send = cmds.add_parser("send", help="send TEXT (or - for stdin) to an address")
    send.add_argument("--dir", required=True)
    send.add_argument("address")
    send.add_argument("text")
    send.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                      help="wait until delivered to the recipient's provider or failed")
    send.add_argument("--json", action="store_true")
    send.set_defaults(func=_send)

    inbox = cmds.add_parser("inbox", help="show received messages")
    inbox.add_argument("--dir", required=True)
    inbox.add_argument("--all", action="store_true", help="include read messages")
    inbox.add_argument("--mark-read", action="store_true")
    inbox.add_argument("--limit", type=int, default=100)
    inbox.add_argument("--json", action="store_true")
    inbox.set_defaults(func=_inbox)

    store_commands.register(cmds)  # passphrase, accept-restore
    messenger_commands.register(sub)
