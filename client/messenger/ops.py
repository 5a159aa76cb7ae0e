"""The messenger's operations on the daemon's local API (``client/api.py`` frames).

Each op takes the request map and returns a msgpack-able result; the daemon passes a ``send``
callback that hands envelopes to the transport and returns, per envelope, the transport's
verdict. Kept apart from ``daemon.py`` so the front ends' contract is readable in one place:

=================  ==================================  ========================================
op                 arguments                           result
=================  ==================================  ========================================
``card``           -                                   ``{text, qr, fingerprint}``
``contact_add``    ``card, name?``                     the contact
``contacts``       -                                   list of contacts
``contact_verify`` ``name, confirm?``                  ``{safety_number, digits, verification}``
``contact_ack``    ``name``                            the contact (key change acknowledged)
``contact_rename`` ``name, new_name``                  the contact
``contact_remove`` ``name``                            ``{name, removed, kept_as_group_member}``
``contact_block``  ``name, undo?``                     the contact
``msg_send``       ``to, text`` or ``to, file_name,``  ``{id, state, recipients}``
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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from client.messenger.errors import MessengerError
from client.messenger.messenger import Envelope, Messenger

OPS = frozenset({
    "card", "contact_add", "contacts", "contact_verify", "contact_ack", "contact_rename",
    "contact_remove", "contact_block", "msg_send", "msg_retry",
    "conversation", "msg_inbox", "group_create", "group_add", "group_remove", "groups",
    "timer_set", "timer_accept",
})


def _str(request: dict[str, Any], key: str, *, optional: bool = False) -> str:
    value = request.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str) or (not value and not optional):
        raise MessengerError(f"{key} must be text")
    return value


def _text(request: dict[str, Any]) -> str:
    """The message text; an empty or blank one is refused (there is nothing to send)."""
    value = request.get("text")
    if not isinstance(value, str):
        raise MessengerError("give the message's text")
    if not value.strip():
        raise MessengerError("the message is empty: nothing was sent")
    return value


def _group_info(m: Messenger, name: str) -> dict[str, Any]:
    return next(g for g in m.groups() if g["name"] == name)


def handle(
    m: Messenger,
    request: dict[str, Any],
    send: Callable[[list[Envelope]], None],
) -> Any:
    op = request.get("op")
    if op == "card":
        return {"text": m.card.to_text(), "qr": m.card.qr_text(),
                "identity_key": m.card.identity_key.hex()}
    if op == "contact_add":
        return m.add_contact(_str(request, "card"), _str(request, "name", optional=True) or None)
    if op == "contacts":
        return m.contacts()
    if op == "contact_verify":
        return m.verify(_str(request, "name"), confirm=bool(request.get("confirm")))
    if op == "contact_ack":
        return m.acknowledge_key_change(_str(request, "name"))
    if op == "contact_rename":
        return m.rename_contact(_str(request, "name"), _str(request, "new_name"))
    if op == "contact_remove":
        return m.remove_contact(_str(request, "name"))
    if op == "contact_block":
        return m.block_contact(_str(request, "name"), undo=bool(request.get("undo")))
    if op == "msg_send":
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
            try:
                envelopes = m.send_text(to, _text(request))
            except MessengerError as exc:
                if "unknown contact" not in str(exc) or not any(
                    g["name"] == to for g in m.groups()
                ):
                    raise
                envelopes = m.send_group(to, _text(request))
        send(envelopes)
        messages = m.conversation(to, mark_read=False)["messages"]
        return messages[-1] if messages else {}
    if op == "msg_retry":
        envelopes = m.retry(_str(request, "name"))
        send(envelopes)
        return {"retried": len(envelopes)}
    if op == "conversation":
        return m.conversation(
            _str(request, "name"),
            mark_read=bool(request.get("mark_read", True)),
            with_data=bool(request.get("with_data")),
        )
    if op == "msg_inbox":
        return m.inbox()
    if op == "group_create":
        members = request.get("members")
        if not isinstance(members, list) or not all(isinstance(x, str) for x in members):
            raise MessengerError("members must be a list of contact names")
        name = _str(request, "name")
        send(m.create_group(name, members))
        return _group_info(m, name)
    if op in ("group_add", "group_remove"):
        group, member = _str(request, "group"), _str(request, "member")
        fn = m.group_add if op == "group_add" else m.group_remove
        send(fn(group, member))
        return _group_info(m, group)
    if op == "groups":
        return m.groups()
    if op == "timer_set":
        seconds = request.get("seconds")
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            raise MessengerError("seconds must be an integer")
        name = _str(request, "name")
        send(m.propose_timer(name, seconds))
        return m.contact_info(m.contact(name))
    if op == "timer_accept":
        name = _str(request, "name")
        send(m.accept_timer(name))
        return m.contact_info(m.contact(name))
    raise MessengerError(f"unknown operation {op!r}")
