"""Groups: pairwise fan-out over the members' sessions, membership set by the creator.

Table ``groups`` (group id hex -> :class:`GroupRecord`). There is no group server and no
group key: a group message is encrypted separately for each member. The creator (the group's
only admin) sends the full member list (:class:`~client.messenger.inner.GroupUpdate`, each
member's card) after every change; updates from anyone else, and group messages from
non-members, are dropped and counted ``group_rejected``. A removed member learns only that it
was removed. See ``docs/messenger.md`` §6.
"""

from __future__ import annotations

from client.e2e.cards import ContactCard
from client.messenger import inner
from client.messenger.contacts import Contacts, check_name
from client.messenger.context import Context
from client.messenger.conversations import Conversations, of_group
from client.messenger.courier import Courier, Envelope
from client.messenger.errors import (
    MessageTooLong,
    MessengerError,
    RecipientWouldRefuse,
    UnknownGroup,
)
from client.messenger.records import GROUPS, ContactRecord, GroupRecord


class Groups:
    def __init__(self, ctx: Context, contacts: Contacts, conversations: Conversations,
                 courier: Courier) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.contacts = contacts
        self.conversations = conversations
        self.courier = courier

    # -- looking up ----------------------------------------------------------------------------

    def all(self) -> list[GroupRecord]:
        return [GroupRecord.decode(v) for _, v in self.store.items(GROUPS)]

    def save(self, g: GroupRecord) -> None:
        self.store.put(GROUPS, g.gid.hex(), g.encode())

    def named(self, name: str) -> GroupRecord:
        """The group of that name we are in, else one we were removed from."""
        groups = self.all()
        for g in groups:
            if g.name == name and not g.left:
                return g
        for g in groups:
            if g.name == name:
                return g
        raise UnknownGroup(name)

    def by_id(self, gid: bytes) -> GroupRecord | None:
        data = self.store.get(GROUPS, gid.hex())
        return None if data is None else GroupRecord.decode(data)

    def shares(self, cid: str) -> bool:
        """Whether the contact is in a group with us (its card is needed there)."""
        return any(cid in g.members or cid == g.admin for g in self.all())

    def replace_member(self, old: str, new: str) -> None:
        """Two contacts turned out to be one: ``old``'s memberships become ``new``'s."""
        for g in self.all():
            if old in g.members or g.admin == old:
                g.members = list(dict.fromkeys(new if m == old else m for m in g.members))
                g.admin = new if g.admin == old else g.admin
                self.save(g)

    # -- our acts ------------------------------------------------------------------------------

    def create(self, name: str, members: list[str]) -> list[Envelope]:
        name = check_name(name)
        if any(g.name == name and not g.left for g in self.all()):
            raise MessengerError(f"there is already a group named {name!r}")
        cids = list(dict.fromkeys(self.contacts.named(m).cid for m in members))
        g = GroupRecord(inner.new_uid(), name, "", cids)
        with self.store.transaction():
            self.save(g)
            envs, _ = self._fan_out(self._update(g), cids)
            self.conversations.event(of_group(g.gid),
                                     f"you created the group with {', '.join(members)}")
        return envs

    def add(self, group: str, member: str) -> list[Envelope]:
        g = self._administered(group)
        c = self.contacts.named(member)
        if c.cid in g.members:
            raise MessengerError(f"{member} is already in {group!r}")
        g.members.append(c.cid)
        with self.store.transaction():
            self.save(g)
            envs, _ = self._fan_out(self._update(g), g.members)
            self.conversations.event(of_group(g.gid), f"you added {member}")
        return envs

    def remove(self, group: str, member: str) -> list[Envelope]:
        """Remove a member: the others get the new list, the removed member gets it too (and
        sees itself missing); from now on nothing of the group is encrypted for it."""
        g = self._administered(group)
        c = self.contacts.named(member)
        if c.cid not in g.members:
            raise MessengerError(f"{member} is not in {group!r}")
        g.members.remove(c.cid)
        with self.store.transaction():
            self.save(g)
            envs, _ = self._fan_out(self._update(g), [*g.members, c.cid])
            self.conversations.event(of_group(g.gid), f"you removed {member}")
        return envs

    def send_text(self, group: str, body: str) -> list[Envelope]:
        g = self.named(group)
        if g.left:
            raise MessengerError(f"you are no longer a member of {group!r}")
        if not g.members:
            raise MessengerError(f"{group!r} has no other members")
        message = inner.group_text(g.gid, body)
        with self.store.transaction():
            envs, failed = self._fan_out(message, g.members)
            self.conversations.add_outgoing(of_group(g.gid), message, g.members, failed)
        return envs

    # -- what members send ---------------------------------------------------------------------

    def conversation_for(self, sender: ContactRecord,
                         message: inner.GroupText) -> str | None:
        """Where a member's group message goes; None (counted) if the sender is not a member
        of a group we are in."""
        g = self.by_id(message.gid)
        if g is None or g.left or (sender.cid not in g.members and sender.cid != g.admin):
            self.ctx.counts["group_rejected"] += 1
            return None
        return of_group(g.gid)

    def on_update(self, sender: ContactRecord, update: inner.GroupUpdate) -> None:
        """A member list from the group's creator (new group, members added or removed)."""
        g = self.by_id(update.gid)
        if g is not None and g.admin != sender.cid:
            self.ctx.counts["group_rejected"] += 1  # only the creator changes membership
            return
        cards = []
        for hint, card_bytes in update.members:
            card = ContactCard.from_bytes(card_bytes)
            card.verify()
            cards.append((hint, card))
        me = self.ctx.card.identity_key
        mine = any(card.identity_key == me for _, card in cards)
        sender_key = ContactCard.from_bytes(sender.card).identity_key
        if not any(card.identity_key == sender_key for _, card in cards):
            self.ctx.counts["group_rejected"] += 1
            return
        cids = []
        for hint, card in cards:
            if card.identity_key == me:
                continue
            c = self.contacts.member(hint, card)
            if c.cid != sender.cid:
                cids.append(c.cid)
        conv = of_group(update.gid)
        if g is None:
            g = GroupRecord(update.gid, update.name, sender.cid, [sender.cid, *cids],
                            left=not mine)
            self.conversations.event(conv, f"{sender.name} added you to the group "
                                     f"{update.name!r}")
        else:
            before = set(self.contacts.names(g.members))
            g.members = [sender.cid, *cids] if mine else []
            g.name, g.left = update.name, not mine
            if mine:  # a removed member learns only that it was removed, not about the others
                after = set(self.contacts.names(g.members))
                for added in sorted(after - before):
                    self.conversations.event(conv, f"{sender.name} added {added}")
                for removed in sorted(before - after - {sender.name}):
                    self.conversations.event(conv, f"{sender.name} removed {removed}")
        if not mine:
            self.conversations.event(conv, f"{sender.name} removed you from the group")
        self.save(g)

    # -- internals -----------------------------------------------------------------------------

    def _administered(self, group: str) -> GroupRecord:
        g = self.named(group)
        if g.left:
            raise MessengerError(f"you are no longer a member of {group!r}")
        if g.admin:
            raise MessengerError("only the group's creator can change its members")
        return g

    def _update(self, g: GroupRecord) -> inner.GroupUpdate:
        """The member list as the creator sends it: us first, then each member's card."""
        members = [("", self.ctx.card.to_bytes())]
        for cid in g.members:
            c = self.contacts.by_cid(cid)
            if c is not None:
                members.append((c.name, c.card))
        return inner.group_update(g.gid, g.name, members)

    def _fan_out(self, message: inner.Inner, cids: list[str]
                 ) -> tuple[list[Envelope], dict[str, str]]:
        """One envelope per member; a member who cannot get it (blocked, key changed) is
        listed with why, but a message no member could take is refused outright."""
        inner.check_acceptable(message)  # for every member alike: refuse it before anything
        envelopes, failed = [], {}
        for cid in cids:
            c = self.contacts.by_cid(cid)
            if c is None:
                continue
            try:
                envelopes.append(self.courier.seal(c, message))
            except (MessageTooLong, RecipientWouldRefuse):
                raise
            except MessengerError as exc:
                failed[cid] = str(exc)
        return envelopes, failed
