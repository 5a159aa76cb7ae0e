"""What the local API answers: the messenger's records rendered as msgpack-able maps.

The one place that decides the shape of a reply (the CLI, the chat screen and scripts read
these keys; ``docs/messenger.md`` §2-3). Views only read: the one exception is that showing a
conversation moves its read mark when asked (``mark_read``).
"""

from __future__ import annotations

from typing import Any

from client.e2e.safety import ContactVerification, SafetyNumber, VerificationState
from client.messenger import attachments
from client.messenger.contacts import Contacts
from client.messenger.conversations import Conversations, of_contact, of_group
from client.messenger.ledger import DeliveryLedger
from client.messenger.records import ContactRecord, GroupRecord


def _can_acknowledge(v: ContactVerification) -> bool:
    return v.state is VerificationState.KEY_CHANGED and not v.was_verified


def contact(contacts: Contacts, conversations: Conversations, c: ContactRecord
            ) -> dict[str, Any]:
    v = contacts.verification(c)
    return {
        "name": c.name,
        "verification": v.state.value,
        "can_acknowledge": _can_acknowledge(v),
        "timer": c.timer,
        "timer_proposed_by_me": c.my_proposal if c.my_proposal >= 0 else None,
        "timer_proposed_by_them": c.their_proposal if c.their_proposal >= 0 else None,
        "request": c.request,
        "group_member_only": c.hidden,
        "blocked": c.blocked,
        "unread": conversations.unread(of_contact(c.cid)),
    }


def contact_list(contacts: Contacts, conversations: Conversations) -> list[dict[str, Any]]:
    return sorted((contact(contacts, conversations, c) for c in contacts.all()),
                  key=lambda d: d["name"])


def verification(name: str, number: SafetyNumber, v: ContactVerification) -> dict[str, Any]:
    return {"name": name, "safety_number": number.formatted(), "digits": number.digits,
            "verification": v.state.value, "qr": number.qr_text(),
            "can_acknowledge": _can_acknowledge(v)}


def group(contacts: Contacts, conversations: Conversations, g: GroupRecord) -> dict[str, Any]:
    admin = contacts.by_cid(g.admin) if g.admin else None
    return {
        "name": g.name,
        "members": sorted(contacts.names(g.members)),
        "admin": "you" if not g.admin else (admin.name if admin else "?"),
        "left": g.left,
        "unread": conversations.unread(of_group(g.gid)),
    }


def group_list(contacts: Contacts, conversations: Conversations, groups: list[GroupRecord]
               ) -> list[dict[str, Any]]:
    return sorted((group(contacts, conversations, g) for g in groups), key=lambda d: d["name"])


def messages(conversations: Conversations, ledger: DeliveryLedger, conv: str,
             senders: dict[str, str], *, mark_read: bool, with_data: bool
             ) -> list[dict[str, Any]]:
    """A conversation's messages with their states (outgoing) and attachments."""
    rows = conversations.live(conv)
    out = []
    for seq, r in rows:
        item: dict[str, Any] = {
            "seq": seq, "id": r.uid.hex(), "direction": r.direction, "kind": r.kind,
            "from": "you" if r.direction == "out" else senders.get(r.sender, ""),
            "text": r.text, "at": r.at, "expires_at": r.expires_at or None,
        }
        if r.kind == "file":
            item["file"] = attachments.view(r, with_data=with_data)
        if r.direction == "out":
            item.update(ledger.summary(r.uid))
        out.append(item)
    if mark_read and rows:
        conversations.mark_read(conv, rows[-1][0])
    return out


def inbox(contacts: Contacts, conversations: Conversations, groups: list[GroupRecord]
          ) -> list[dict[str, Any]]:
    """Conversations with unread messages."""
    out = []
    for c in contacts.all():
        n = conversations.unread(of_contact(c.cid))
        if n:
            out.append({"conversation": c.name, "type": "contact", "unread": n})
    for g in groups:
        n = conversations.unread(of_group(g.gid))
        if n:
            out.append({"conversation": g.name, "type": "group", "unread": n})
    return out
