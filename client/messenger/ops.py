"""The messenger's operations on the daemon's local API (``client/api.py`` frames).

Each is a handler in :data:`REGISTRY` (``client/api_ops.py``): it takes a
:class:`MessengerContext` (the messenger, and the daemon's ``send`` that hands envelopes to the
transport) and the request map, and returns a msgpack-able result shaped by
:mod:`client.messenger.views`. The daemon mounts this registry into its own. Kept apart from
``daemon.py`` so the front ends' contract is readable in one place:

=================  ==================================  ========================================
op                 arguments                           result
=================  ==================================  ========================================
``card``           -                                   ``{text, qr, identity_key}``
``contact_add``    ``card, name?``                     the contact
``contacts``       -                                   list of contacts
``contact_verify`` ``name, confirm?``                  ``{safety_number, digits, verification}``
``contact_ack``    ``name``                            the contact (key change acknowledged)
``contact_rename`` ``name, new_name``                  the contact
``contact_remove`` ``name``                            ``{name, removed, kept_as_group_member}``
``contact_block``  ``name, undo?``                     the contact
``msg_send``       ``to, text`` or ``to, file_name,``  the message as ``conversation`` shows it
                   ``data``; ``to`` = ``#group`` ok
``msg_retry``      ``name``                            ``{retried}``: failed messages sent again
``conversation``   ``name, mark_read?, with_data?``    ``{messages, contact?}``
``msg_inbox``      -                                   conversations with unread messages
``group_create``   ``name, members``                   the group
``group_add``      ``group, member``                   the group
``group_remove``   ``group, member``                   the group
``groups``         -                                   list of groups
``timer_set``      ``name, seconds``                   the contact
``timer_accept``   ``name``                            the contact
=================  ==================================  ========================================

(``tests/client/test_api_ops.py`` checks that this table names exactly the registered ops.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from client.api_ops import Registry, Request
from client.messenger.errors import MessengerError, UnknownContact
from client.messenger.messenger import Envelope, Messenger


@dataclass(frozen=True, slots=True)
class MessengerContext:
    """What a messenger operation works with."""

    messenger: Messenger
    send: Callable[[list[Envelope]], None]
    """Hands envelopes to the transport (the daemon's; tests hand them over directly)."""


REGISTRY: Registry[MessengerContext] = Registry()
op = REGISTRY.op


def handle(m: Messenger, request: Request, send: Callable[[list[Envelope]], None]) -> Any:
    """Answer one request with ``m`` (what the daemon does through its mounted registry)."""
    return REGISTRY.handle(MessengerContext(m, send), request)


# -- arguments ---------------------------------------------------------------------------------


def _str(request: Request, key: str, *, optional: bool = False) -> str:
    value = request.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str) or (not value and not optional):
        raise MessengerError(f"{key} must be text")
    return value


def _text(request: Request) -> str:
    """The message text; an empty or blank one is refused (there is nothing to send)."""
    value = request.get("text")
    if not isinstance(value, str):
        raise MessengerError("give the message's text")
    if not value.strip():
        raise MessengerError("the message is empty: nothing was sent")
    return value


def _flag(request: Request, key: str, default: bool = False) -> bool:
    return bool(request.get(key, default))


def _group_info(m: Messenger, name: str) -> dict[str, Any]:
    return next(g for g in m.groups() if g["name"] == name)


# -- contacts ----------------------------------------------------------------------------------


@op("card")
def _card(ctx: MessengerContext, request: Request) -> dict[str, Any]:
    card = ctx.messenger.card
    return {"text": card.to_text(), "qr": card.qr_text(), "identity_key": card.identity_key.hex()}


@op("contact_add")
def _contact_add(ctx: MessengerContext, request: Request) -> dict[str, Any]:
    name = _str(request, "name", optional=True) or None
    return ctx.messenger.add_contact(_str(request, "card"), name)


@op("contacts")
def _contacts(ctx: MessengerContext, request: Request) -> list[dict[str, Any]]:
    return ctx.messenger.contacts()


@op("contact_verify")
def _contact_verify(ctx: MessengerContext, request: Request) -> dict[str, Any]:
    return ctx.messenger.verify(_str(request, "name"), confirm=_flag(request, "confirm"))


@op("contact_ack")
def _contact_ack(ctx: MessengerContext, request: Request) -> dict[str, Any]:
    return ctx.messenger.acknowledge_key_change(_str(request, "name"))


@op("contact_rename")
def _contact_rename(ctx: MessengerContext, request: Request) -> dict[str, Any]:
    return ctx.messenger.rename_contact(_str(request, "name"), _str(request, "new_name"))


@op("contact_remove")
def _contact_remove(ctx: MessengerContext, request: Request) -> dict[str, Any]:
    return ctx.messenger.remove_contact(_str(request, "name"))


@op("contact_block")
def _contact_block(ctx: MessengerContext, request: Request) -> dict[str, Any]:
    return ctx.messenger.block_contact(_str(request, "name"), undo=_flag(request, "undo"))


# -- messages ----------------------------------------------------------------------------------


@op("msg_send")
def _msg_send(ctx: MessengerContext, request: Request) -> dict[str, Any]:
    """A text to a contact or ``#group`` (a bare name that is no contact but a group's goes
    to the group), or an attachment to a contact."""
    m = ctx.messenger
    to = _str(request, "to")
    data = request.get("data")
    if data is not None:
        if not isinstance(data, bytes):
            raise MessengerError("data must be bytes")
        if to.startswith("#"):
            raise MessengerError("attachments go to one contact at a time")
        envelopes = m.send_file(to, _str(request, "file_name"), data)
    elif to.startswith("#"):
        envelopes = m.send_group(to[1:], _text(request))
    else:
        text = _text(request)
        try:
            envelopes = m.send_text(to, text)
        except UnknownContact:
            if not m.has_group(to):
                raise
            envelopes = m.send_group(to, text)
    ctx.send(envelopes)
    messages = m.conversation(to, mark_read=False)["messages"]
    return messages[-1] if messages else {}


@op("msg_retry")
def _msg_retry(ctx: MessengerContext, request: Request) -> dict[str, Any]:
    envelopes = ctx.messenger.retry(_str(request, "name"))
    ctx.send(envelopes)
    return {"retried": len(envelopes)}


@op("conversation")
def _conversation(ctx: MessengerContext, request: Request) -> dict[str, Any]:
    return ctx.messenger.conversation(
        _str(request, "name"),
        mark_read=_flag(request, "mark_read", True),
        with_data=_flag(request, "with_data"),
    )


@op("msg_inbox")
def _msg_inbox(ctx: MessengerContext, request: Request) -> list[dict[str, Any]]:
    return ctx.messenger.inbox()


# -- groups ------------------------------------------------------------------------------------


@op("group_create")
def _group_create(ctx: MessengerContext, request: Request) -> dict[str, Any]:
    members = request.get("members")
    if not isinstance(members, list) or not all(isinstance(x, str) for x in members):
        raise MessengerError("members must be a list of contact names")
    name = _str(request, "name")
    ctx.send(ctx.messenger.create_group(name, members))
    return _group_info(ctx.messenger, name)


@op("group_add")
def _group_add(ctx: MessengerContext, request: Request) -> dict[str, Any]:
    group, member = _str(request, "group"), _str(request, "member")
    ctx.send(ctx.messenger.group_add(group, member))
    return _group_info(ctx.messenger, group)


@op("group_remove")
def _group_remove(ctx: MessengerContext, request: Request) -> dict[str, Any]:
    group, member = _str(request, "group"), _str(request, "member")
    ctx.send(ctx.messenger.group_remove(group, member))
    return _group_info(ctx.messenger, group)


@op("groups")
def _groups(ctx: MessengerContext, request: Request) -> list[dict[str, Any]]:
    return ctx.messenger.groups()


# -- timers ------------------------------------------------------------------------------------


@op("timer_set")
def _timer_set(ctx: MessengerContext, request: Request) -> dict[str, Any]:
    seconds = request.get("seconds")
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise MessengerError("seconds must be an integer")
    name = _str(request, "name")
    ctx.send(ctx.messenger.propose_timer(name, seconds))
    return ctx.messenger.contact_info(ctx.messenger.contact(name))


@op("timer_accept")
def _timer_accept(ctx: MessengerContext, request: Request) -> dict[str, Any]:
    name = _str(request, "name")
    ctx.send(ctx.messenger.accept_timer(name))
    return ctx.messenger.contact_info(ctx.messenger.contact(name))
