"""The person-facing commands: ``mixnet contact|send|retry|inbox|read|group|timer|status|chat``.

Each attaches to the running daemon through the local API (``client/api.py``), takes
``--dir`` (default: ``$MIXNET_CLIENT_DIR``) and ``--json`` (then prints one JSON object).
Their parsers are in :mod:`client.messenger.command_line`. Errors are one line on stderr with
a non-zero status (``mixnet.cli.main`` prints any :class:`MixnetError`); nothing here prints
message contents anywhere but stdout.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import trio

from client.api import ApiClient
from client.daemon_config import DaemonConfig, socket_of
from client.messenger.errors import MessengerError
from mixcore.errors import MixnetError

DIR_ENV = "MIXNET_CLIENT_DIR"
STATE_MARKS = {
    "queued": "… queued", "sent": "→ sent", "at_provider": "✓ at their provider",
    "delivered": "✓✓ delivered", "failed": "✗ failed",
}
FINAL = {"at_provider", "delivered", "failed"}


def _jsonable(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else str(value)


def emit(result: Any, as_json: bool, human: str) -> None:
    if as_json:
        print(json.dumps(result, default=_jsonable))
    elif human:
        print(human)


def data_dir(args: argparse.Namespace) -> Path:
    value = args.dir or os.environ.get(DIR_ENV)
    if not value:
        raise MessengerError(f"give the client's data directory with --dir or ${DIR_ENV}")
    return Path(value)


async def call(directory: Path, op: str, **args: Any) -> Any:
    client = await ApiClient.connect(str(socket_of(directory)), str(directory))
    try:
        return await client.call(op, **args)
    finally:
        await client.aclose()


def request(args: argparse.Namespace, op: str, **kw: Any) -> Any:
    try:
        return trio.run(functools.partial(call, data_dir(args), op, **kw))
    except BaseExceptionGroup as group:  # pragma: no cover - trio wraps rarely here
        inner = group.subgroup(MixnetError)
        if inner is None:
            raise
        raise inner.exceptions[0] from None


def _badge(state: str) -> str:
    return {"verified": "✓ verified", "key_changed": "⚠ KEY CHANGED"}.get(state, "unverified")


# -- contact -------------------------------------------------------------------------------------


def _contact_card(args: argparse.Namespace) -> int:
    result = request(args, "card")
    emit({"card": result["text"], "identity_key": result["identity_key"]}, args.json,
         f"{result['qr']}\n{result['text']}")
    return 0


def _contact_add(args: argparse.Namespace) -> int:
    card = sys.stdin.read().strip() if args.card == "-" else args.card
    result = request(args, "contact_add", card=card, name=args.name or "")
    emit(result, args.json, f"added {result['name']} ({_badge(result['verification'])})")
    return 0


def _contact_remove(args: argparse.Namespace) -> int:
    result = request(args, "contact_remove", name=args.name)
    emit(result, args.json, f"removed {args.name} (its conversation is deleted)")
    return 0


def _contact_rename(args: argparse.Namespace) -> int:
    result = request(args, "contact_rename", name=args.name, new_name=args.new_name)
    emit(result, args.json, f"{args.name} is now {result['name']}")
    return 0


def _contact_block(args: argparse.Namespace) -> int:
    result = request(args, "contact_block", name=args.name, undo=args.undo)
    human = (f"unblocked {args.name}" if args.undo else
             f"blocked {args.name}: their messages are dropped, nothing is sent to them")
    emit(result, args.json, human)
    return 0


def _contact_list(args: argparse.Namespace) -> int:
    contacts = request(args, "contacts")
    lines = []
    for c in contacts:
        extra = []
        if c["timer"]:
            extra.append(f"⏱ {c['timer']} s")
        if c["request"]:
            extra.append("message request")
        if c["unread"]:
            extra.append(f"{c['unread']} unread")
        if c.get("blocked"):
            extra.append("blocked")
        lines.append(f"{c['name']:20} {_badge(c['verification']):14} {' '.join(extra)}")
    emit({"contacts": contacts}, args.json, "\n".join(lines) or "no contacts yet")
    return 0


def _contact_verify(args: argparse.Namespace) -> int:
    if args.acknowledge:
        result = request(args, "contact_ack", name=args.name)
        emit(result, args.json, f"{args.name}: new key acknowledged (unverified)")
        return 0
    result = request(args, "contact_verify", name=args.name, confirm=args.confirm)
    human = (
        f"safety number with {args.name}:\n{result['safety_number']}\n"
        f"status: {_badge(result['verification'])}"
    )
    if not args.confirm and result["verification"] != "verified":
        human += f"\ncompare it in person, then: mixnet contact verify {args.name} --confirm"
    result.pop("qr", None)
    emit(result, args.json, human)
    return 0


# -- send / read ---------------------------------------------------------------------------------


def _send(args: argparse.Namespace) -> int:
    if args.file:
        path = Path(args.file)
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise MessengerError(f"cannot read {path}: {exc.strerror}") from None
        result = request(args, "msg_send", to=args.name, file_name=path.name, data=blob)
    else:
        if args.text is None:
            raise MessengerError("give the TEXT to send, - to read it from stdin, or --file PATH")
        result = request(args, "msg_send", to=args.name, text=_text(args.text))
    if args.wait:
        result = _wait(args, result, args.wait)
    emit(result, args.json, f"{args.name}: {STATE_MARKS.get(result.get('state', ''), '')}")
    if result.get("state") == "failed":
        raise MessengerError(f"message to {args.name} failed: {result.get('reason', '')}")
    return 0


def _text(value: str) -> str:
    """TEXT, or stdin for ``-`` without the trailing newline that ``echo`` and editors add."""
    if value != "-":
        return value
    text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text


def _wait(args: argparse.Namespace, sent: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Poll until the message is at the provider, delivered or failed; progress on stderr."""
    deadline = time.monotonic() + timeout
    last = ""
    current = sent
    while time.monotonic() < deadline:
        conv = request(args, "conversation", name=args.name, mark_read=False)
        current = next((m for m in conv["messages"] if m["id"] == sent["id"]), current)
        state = current.get("state", "")
        line = state
        if "fragments_total" in current:
            line += f" ({current['fragments_acked']}/{current['fragments_total']} fragments)"
        if line != last and not args.json:
            print(line, file=sys.stderr)
            last = line
        if state in (args.until, "failed") or (args.until == "at_provider" and state in FINAL):
            break
        time.sleep(0.3)
    return current


def _format(m: dict[str, Any]) -> str:
    at = datetime.fromtimestamp(m["at"]).strftime("%H:%M")
    if m["direction"] == "event":
        return f"[{at}] -- {m['text']}"
    body = m["text"]
    if m["kind"] == "file":
        body = f"[file {m['file']['name']}, {m['file']['size']} bytes, sha256 "
        body += f"{m['file']['sha256'][:16]}…]"
    line = f"[{at}] {m['from']}: {body}"
    if m["direction"] == "out":
        line += f"   {STATE_MARKS.get(m['state'], m['state'])}"
        if m.get("recipients", 1) > 1:
            line += f" {m['delivered']}/{m['recipients']}"
    if m.get("expires_at"):
        line += " ⏱"
    return line


def safe_file_name(name: str) -> str:
    """A received attachment's name as one plain file name: the sender chose it, so no
    folders, no ``..``, no leading dot (hidden files), no control characters."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip().lstrip(".")
    return name[:128] or "attachment"


def _free_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name-2``, ``name-3``... so nothing already there is overwritten."""
    path = folder / name
    stem, dot, ext = name.partition(".")
    n = 2
    while path.exists():
        path = folder / f"{stem}-{n}{dot}{ext}"
        n += 1
    return path


def _read(args: argparse.Namespace) -> int:
    result = request(args, "conversation", name=args.name, with_data=bool(args.save))
    saved: list[str] = []
    if args.save:
        target = Path(args.save)
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MessengerError(f"cannot create {target}: {exc.strerror}") from None
        for m in result["messages"]:
            data = m.get("file", {}).pop("data", None)
            if m["kind"] != "file" or m["direction"] != "in" or data is None:
                continue
            path = _free_path(target, safe_file_name(m["file"]["name"]))
            try:
                path.write_bytes(data)
            except OSError as exc:
                raise MessengerError(f"cannot save {path}: {exc.strerror}") from None
            m["file"]["saved_to"] = str(path)
            saved.append(f"saved {m['file']['name']!r} to {path}")
    human = "\n".join(_format(m) for m in result["messages"]) or "no messages"
    emit(result, args.json, "\n".join([human, *saved]))
    return 0


def _retry(args: argparse.Namespace) -> int:
    result = request(args, "msg_retry", name=args.name)
    n = result["retried"]
    human = (f"{args.name}: {n} failed message{'s' if n != 1 else ''} sent again" if n
             else f"{args.name}: no failed messages to send again")
    emit(result, args.json, human)
    return 0


def _inbox(args: argparse.Namespace) -> int:
    result = request(args, "msg_inbox")
    human = "\n".join(
        f"{c['conversation']:20} {c['unread']} unread" + (" (group)" if c["type"] == "group"
                                                         else "")
        for c in result
    )
    emit({"conversations": result}, args.json, human or "no unread messages")
    return 0


# -- groups and timers ---------------------------------------------------------------------------


def _group_line(g: dict[str, Any]) -> str:
    state = " (you were removed)" if g["left"] else ""
    return f"{g['name']:16} admin {g['admin']:10} members: {', '.join(g['members'])}{state}"


def _group(args: argparse.Namespace) -> int:
    cmd = args.group_command
    if cmd == "create":
        result = request(args, "group_create", name=args.group, members=args.members)
    elif cmd in ("add", "remove"):
        result = request(args, f"group_{cmd}", group=args.group, member=args.member)
    elif cmd == "send":
        result = request(args, "msg_send", to=f"#{args.group}", text=_text(args.text))
        emit(result, args.json, f"#{args.group}: {STATE_MARKS.get(result['state'], '')}")
        return 0
    else:
        groups = request(args, "groups")
        emit({"groups": groups}, args.json, "\n".join(map(_group_line, groups)) or "no groups")
        return 0
    emit(result, args.json, _group_line(result))
    return 0


def _timer(args: argparse.Namespace) -> int:
    if args.timer_command == "set":
        result = request(args, "timer_set", name=args.name, seconds=args.seconds)
        human = f"proposed to {args.name}; it applies when they accept"
    else:
        result = request(args, "timer_accept", name=args.name)
        human = f"disappearing messages with {args.name}: {result['timer']} s"
    emit(result, args.json, human)
    return 0


def status_command(args: argparse.Namespace) -> int:
    s = request(args, "status")
    rates = s.get("rates_per_s", {})
    transport = s.get("transport", {})
    lines = [
        f"client              {s.get('name', '')} (provider {s.get('provider_name', '')})",
        f"connection          {'connected' if s.get('connected') else 'DISCONNECTED'}",
        f"consensus epoch     {s.get('epoch')}",
        "cover traffic       " + ", ".join(f"{k} {v}/s" for k, v in rates.items()),
        f"pending acks        {s.get('acks_pending', 0)}",
        f"fragments queued    {s.get('fragments_queued', 0)}",
        "outbox              " + ", ".join(
            f"{k[7:]} {v}" for k, v in s.items() if k.startswith("outbox_")),
        f"messages received   {transport.get('messages_received', 0)}",
        f"messenger           {s.get('messenger')}",
        f"anonymity           {_anonymity_line(s.get('anonymity'))}",
    ]
    emit(s, args.json, "\n".join(lines))
    return 0


def _anonymity_line(meter: dict[str, Any] | None) -> str:
    """The meter (mixcore.anonymity) in one line: expected entropies, then any warning."""
    if not meter:
        return "waiting for the nodes' traffic figures"
    line = (f"~{meter['sender_entropy_bits']:.1f} bits sender "
            f"(~{meter['clients_estimate']:.0f} clients), "
            f"~{meter['message_entropy_bits']:.1f} bits message")
    for warning in meter["warnings"]:
        line += f"\n  WARNING: {warning}"
    return line


def _chat(args: argparse.Namespace) -> int:
    from client.tui.app import run_chat  # noqa: PLC0415  # textual is heavy

    directory = data_dir(args)
    DaemonConfig.load(directory)  # a clear error for a wrong directory before the screen opens
    request(args, "status")  # ... and for a daemon that is not running
    run_chat(directory)
    return 0
