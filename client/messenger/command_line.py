"""The argument parsers of the person-facing commands (``mixnet contact|send|retry|inbox|read|
group|timer|status|chat``); what each does is in :mod:`client.messenger.commands`."""

from __future__ import annotations

import argparse

from client.messenger import commands
from client.messenger.commands import DIR_ENV


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=None, metavar="DIR",
                   help=f"the client's data directory (default: ${DIR_ENV})")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _name(p: argparse.ArgumentParser, what: str = "the contact's name") -> None:
    p.add_argument("name", metavar="NAME", help=what)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    contact = sub.add_parser("contact", help="your card, contacts, safety numbers")
    cs = contact.add_subparsers(dest="contact_command", metavar="COMMAND", required=True)
    p = cs.add_parser("card", help="print your contact card (text and QR)")
    _common(p)
    p.set_defaults(func=commands._contact_card)
    p = cs.add_parser("add", help="add a contact from their card (- reads stdin)")
    p.add_argument("card", metavar="CARD", help="their card (mixnet1:...), or - for stdin")
    p.add_argument("--name", metavar="NAME", help="what to call them (default: from the key)")
    _common(p)
    p.set_defaults(func=commands._contact_add)
    p = cs.add_parser("list", help="contacts with verification state")
    _common(p)
    p.set_defaults(func=commands._contact_list)
    p = cs.add_parser("verify", help="show the safety number; --confirm marks verified")
    _name(p)
    p.add_argument("--confirm", action="store_true", help="you compared it and it matched")
    p.add_argument("--acknowledge", action="store_true",
                   help="accept a changed key as unverified (sending is blocked until then)")
    _common(p)
    p.set_defaults(func=commands._contact_verify)
    p = cs.add_parser("rename", help="give a contact another name")
    _name(p)
    p.add_argument("new_name", metavar="NEW_NAME", help="the new name")
    _common(p)
    p.set_defaults(func=commands._contact_rename)
    p = cs.add_parser("remove", help="delete a contact and its conversation")
    _name(p)
    _common(p)
    p.set_defaults(func=commands._contact_remove)
    p = cs.add_parser("block", help="drop a contact's messages and send them nothing")
    _name(p)
    p.add_argument("--undo", action="store_true", help="unblock")
    _common(p)
    p.set_defaults(func=commands._contact_block)

    p = sub.add_parser("send", help="send TEXT (or - for stdin, or --file PATH) to a contact")
    p.add_argument("name", metavar="NAME", help="contact name (or #group)")
    p.add_argument("text", metavar="TEXT", nargs="?", help="the message; - reads stdin")
    p.add_argument("--file", metavar="PATH", help="send a file as an attachment")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait for the delivery state, showing progress")
    p.add_argument("--until", choices=["at_provider", "delivered"], default="at_provider",
                   help="with --wait: the state to wait for (default at_provider)")
    _common(p)
    p.set_defaults(func=commands._send)

    p = sub.add_parser("retry", help="send a conversation's failed messages again")
    _name(p, "contact name or #group")
    _common(p)
    p.set_defaults(func=commands._retry)

    p = sub.add_parser("inbox", help="conversations with unread messages")
    _common(p)
    p.set_defaults(func=commands._inbox)
    p = sub.add_parser("read", help="show a conversation (marks it read)")
    _name(p, "contact name or #group")
    p.add_argument("--save", metavar="DIR", help="save received attachments into DIR")
    _common(p)
    p.set_defaults(func=commands._read)

    group = sub.add_parser("group", help="groups: create, add, remove, send, list")
    gs = group.add_subparsers(dest="group_command", metavar="COMMAND", required=True)
    p = gs.add_parser("create", help="create a group with some contacts")
    p.add_argument("group", metavar="GROUP", help="the group's name")
    p.add_argument("members", metavar="MEMBER", nargs="+", help="contact names")
    _common(p)
    for verb, what in (("add", "add a contact (creator only)"),
                       ("remove", "remove a member (creator only)")):
        p = gs.add_parser(verb, help=what)
        p.add_argument("group", metavar="GROUP", help="the group's name")
        p.add_argument("member", metavar="MEMBER", help="a contact's name")
        _common(p)
    p = gs.add_parser("send", help="send TEXT to every member")
    p.add_argument("group", metavar="GROUP", help="the group's name")
    p.add_argument("text", metavar="TEXT", help="the message; - reads stdin")
    _common(p)
    p = gs.add_parser("list", help="your groups")
    _common(p)
    group.set_defaults(func=commands._group)

    timer = sub.add_parser("timer", help="disappearing messages: propose or accept a timer")
    ts = timer.add_subparsers(dest="timer_command", metavar="COMMAND", required=True)
    p = ts.add_parser("set", help="propose SECONDS (0 turns it off)")
    _name(p)
    p.add_argument("seconds", metavar="SECONDS", type=int,
                   help="how long messages live (0: off)")
    _common(p)
    p = ts.add_parser("accept", help="accept the contact's proposal")
    _name(p)
    _common(p)
    timer.set_defaults(func=commands._timer)

    p = sub.add_parser("status", help="connection, epoch, cover rates, pending acks, queues")
    _common(p)
    p.set_defaults(func=commands.status_command)

    p = sub.add_parser("chat", help="the terminal chat screen")
    p.add_argument("--dir", default=None, metavar="DIR",
                   help=f"the client's data directory (default: ${DIR_ENV})")
    p.set_defaults(func=commands._chat)
