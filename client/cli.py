"""``mixnet client ...``: create a client, run its daemon, and talk to it through the API."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any

import trio

from client.api import ApiClient
from client.daemon_config import AuthorityEntry, ClientConfigError, DaemonConfig
from mixcore.errors import MixnetError
from mixcore.keys import LinkKey, save_link_key
from mixcore.params import NetworkParams
from mixcore.routing import mailbox_address


def _authority(value: str) -> AuthorityEntry:
    key, sep, url = value.partition("@")
    try:
        identity = bytes.fromhex(key)
    except ValueError:
        identity = b""
    if not sep or len(identity) != 32 or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError("expected KEYHEX@http://HOST:PORT")
    return AuthorityEntry(url, identity)


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
    return _run_trio(functools.partial(_call, data_dir, op, **args))


async def _call(data_dir: Path, op: str, **args: Any) -> Any:
    config = DaemonConfig.load(data_dir)
    client = await ApiClient.connect(str(config.socket_path), str(data_dir))
    try:
        return await client.call(op, **args)
    finally:
        await client.aclose()


def _init(args: argparse.Namespace) -> int:
    data = Path(args.dir).resolve()
    if (data / "client.json").exists() and not args.force:
        raise ClientConfigError(f"{data} already holds a client; use --force to overwrite")
    params = NetworkParams()
    if args.params:
        try:
            params = NetworkParams.from_dict(json.loads(Path(args.params).read_text()))
        except (OSError, ValueError) as exc:
            raise ClientConfigError(f"cannot read params file {args.params}: {exc}") from None
    config = DaemonConfig(
        data_dir=data,
        provider=args.provider,
        authorities=tuple(args.authority),
        threshold=args.threshold or len(args.authority) // 2 + 1,
        params=params,
        name=args.name or data.name,
    )
    path = config.save()
    key = LinkKey.generate()
    save_link_key(config.link_key_path, key)
    result = {"config": str(path), "provider": args.provider,
              "mailbox": mailbox_address(key.public).hex()}
    _emit(result, args.json, f"client created in {data} (provider {args.provider})")
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

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            address = await nursery.start(serve, config)
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
            state = await _call(data_dir, "message", message_id=message_id)
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
    init.add_argument("--json", action="store_true")
    init.set_defaults(func=_init)

    run = cmds.add_parser("run", help="run the client daemon (Poisson streams + local API)")
    run.add_argument("--dir", required=True)
    run.add_argument("--verbose", action="store_true")
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
