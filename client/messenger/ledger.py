"""The delivery ledger: the one owner of an outgoing message's delivery state.

One state of :class:`Delivery` per outgoing message (its uid) and recipient (a contact id),
moved only through :data:`TRANSITIONS`: a report that is not in the table is a bug
(:class:`IllegalTransition`), never silently applied. Who reports what:

=====================  ==============================  =======================================
report                 from                            method
=====================  ==============================  =======================================
``queued``             the messenger, when it stores   :meth:`DeliveryLedger.open`
                       an outgoing message; a retry    :meth:`DeliveryLedger.requeue`
``sent``               the transport's progress (a     :meth:`DeliveryLedger.on_progress`,
                       fragment left)                  :meth:`DeliveryLedger.poll`
``at_provider``        the transport's SURB-ACKs       :meth:`DeliveryLedger.on_at_provider`
``failed``             the transport gave up, or       :meth:`DeliveryLedger.on_failed`,
                       refused it at hand-over         :meth:`DeliveryLedger.refused`
``delivered``          the recipient's receipt         :meth:`DeliveryLedger.receipt`
(withdrawn)            the disappearing timer: the     :meth:`DeliveryLedger.withdraw`
                       rows go, and the transport is
                       told to cancel
=====================  ==============================  =======================================

Everything that shows a state reads it here (:meth:`DeliveryLedger.summary`), the daemon
included: it polls the transport's fragment counts for :meth:`DeliveryLedger.in_flight`
through :meth:`DeliveryLedger.poll` and keeps no list of its own.

Stored (sealed rows of the store's own tables):

* ``delivery``: uid (hex) -> ``[1, [[contact id, state, reason], ...], [transport id, ...]]``;
  the transport ids of every envelope that carried the message, so a disappearing timer can
  withdraw them all.
* ``delivery_transport``: transport id (hex) -> uid + contact id: which message and recipient
  a transport message carries, until the transport's outcome (at provider, failed) arrives.

In memory only: the fragment progress of the transport messages in flight (the transport's
own records are the truth; after a restart it is read again from them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from client.messenger.errors import MessengerError
from client.storage import Store
from client.transport_db import forget as forget_outgoing
from mixcore.encoding import expect_list, pack, unpack_canonical

DELIVERY = "delivery"
BY_TRANSPORT = "delivery_transport"
UID_LEN = 16


class Delivery(Enum):
    """Delivery state of an outgoing message to one recipient (see ``docs/messenger.md``)."""

    QUEUED = "queued"
    """Encrypted and in the daemon's send queue; no fragment has left yet."""
    SENT = "sent"
    """Fragments have left in packets; not all acknowledged by the recipient's provider."""
    AT_PROVIDER = "at_provider"
    """Every fragment is stored at the recipient's provider (transport SURB-ACKs)."""
    DELIVERED = "delivered"
    """The recipient's daemon decrypted and stored it (its end-to-end receipt came back)."""
    FAILED = "failed"
    """Given up: retry budget spent, provider gone, or blocked (the reason says which)."""


_Q, _S, _P, _D, _F = (Delivery.QUEUED, Delivery.SENT, Delivery.AT_PROVIDER, Delivery.DELIVERED,
                      Delivery.FAILED)

#: ``(current state, reported state) -> next state``. States only move forward; a receipt wins
#: over everything (the message did arrive, an ACK was lost); a late transport report never
#: undoes a later one; ``queued`` is reported only by a retry, and only of a failed message.
TRANSITIONS: dict[tuple[Delivery, Delivery], Delivery] = {
    (_Q, _S): _S, (_Q, _P): _P, (_Q, _F): _F, (_Q, _D): _D,
    (_S, _S): _S, (_S, _P): _P, (_S, _F): _F, (_S, _D): _D,
    (_P, _S): _P, (_P, _P): _P, (_P, _F): _F, (_P, _D): _D,
    (_F, _S): _F, (_F, _P): _F, (_F, _F): _F, (_F, _D): _D, (_F, _Q): _Q,
    (_D, _S): _D, (_D, _P): _D, (_D, _F): _D, (_D, _D): _D,
}


class IllegalTransition(MessengerError):
    """A report the table has no entry for (a bug in whoever reported it)."""


def advance(current: Delivery, reported: Delivery) -> Delivery:
    """The state after ``reported`` arrives in state ``current`` (:data:`TRANSITIONS`)."""
    try:
        return TRANSITIONS[(current, reported)]
    except KeyError:
        raise IllegalTransition(
            f"delivery state {current.value} cannot take the report {reported.value}"
        ) from None


Rows = dict[str, tuple[Delivery, str]]


def summarize(rows: Rows) -> dict[str, Any]:
    """One state for a message to several recipients: the least advanced, with counts."""
    if not rows:
        return {"state": Delivery.DELIVERED.value, "reason": "", "recipients": 0, "delivered": 0}
    rank = {_F: -1, _Q: 0, _S: 1, _P: 2, _D: 4}
    states = [s for s, _ in rows.values()]
    failed = [r for s, r in rows.values() if s is Delivery.FAILED]
    worst = min(states, key=rank.__getitem__)
    return {
        "state": worst.value,
        "reason": failed[0] if failed else "",
        "recipients": len(rows),
        "delivered": sum(1 for s in states if s is Delivery.DELIVERED),
    }


@dataclass(slots=True)
class Entry:
    """The ledger's row for one outgoing message."""

    rows: Rows
    transport_ids: list[bytes] = field(default_factory=list)

    def encode(self) -> bytes:
        return pack([1, [[cid, state.value, reason] for cid, (state, reason)
                         in sorted(self.rows.items())], list(self.transport_ids)])

    @classmethod
    def decode(cls, data: bytes) -> Entry:
        _, rows, tids = expect_list(unpack_canonical(data), 3, "delivery entry")
        return cls({cid: (Delivery(state), reason) for cid, state, reason in rows}, list(tids))


@dataclass(frozen=True, slots=True)
class Progress:
    """A transport message's fragments: sent at least once, acknowledged, in all."""

    sent: int
    acked: int
    total: int


class DeliveryLedger:
    """The delivery states of one user's outgoing messages in an unlocked :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # transport messages in flight -> their last reported progress (None: none yet)
        self._flight: dict[bytes, Progress | None] = {
            bytes.fromhex(tid): None for tid in store.ids(BY_TRANSPORT)
        }
        self._withdrawn: list[bytes] = []

    # -- the messenger's reports ---------------------------------------------------------------

    def open(self, uid: bytes, recipients: list[str], failed: dict[str, str] | None = None
             ) -> None:
        """A new outgoing message, queued for ``recipients`` (those in ``failed`` could not
        even be encrypted for, with why)."""
        rows: Rows = {cid: (Delivery.QUEUED, "") for cid in recipients}
        for cid, reason in (failed or {}).items():
            rows[cid] = (Delivery.FAILED, reason)
        self._save(uid, Entry(rows))

    def rows(self, uid: bytes) -> Rows:
        entry = self._entry(uid)
        return {} if entry is None else dict(entry.rows)

    def failed_recipients(self, uid: bytes) -> list[str]:
        return [cid for cid, (state, _) in self.rows(uid).items() if state is Delivery.FAILED]

    def requeue(self, uid: bytes, cid: str) -> None:
        """The user sends a failed message again to ``cid`` (``mixnet retry``)."""
        self._report(uid, cid, Delivery.QUEUED)

    def refused(self, uid: bytes, cid: str, reason: str) -> None:
        """Not handed to the transport after all: not encrypted, no route, queue full."""
        self._report(uid, cid, Delivery.FAILED, reason)

    def receipt(self, uid: bytes, cid: str) -> None:
        """``cid``'s end-to-end receipt for ``uid`` (the only way to ``delivered``)."""
        self._report(uid, cid, Delivery.DELIVERED)

    def withdraw(self, uid: bytes) -> None:
        """The message is gone (its timer ran out): its rows, its bindings and the transport's
        envelopes that still carry it go with it; :meth:`take_withdrawn` names them for the
        transport to cancel."""
        entry = self._entry(uid)
        if entry is None:
            return
        with self.store.transaction():
            self.store.delete(DELIVERY, uid.hex())
            for tid in entry.transport_ids:
                self.store.delete(BY_TRANSPORT, tid.hex())
                forget_outgoing(self.store, tid)
                self._flight.pop(tid, None)
                self._withdrawn.append(tid)

    def take_withdrawn(self) -> list[bytes]:
        """Transport ids withdrawn since the last call: the shell must cancel them in the
        transport, which may still hold them queued in memory."""
        out, self._withdrawn = self._withdrawn, []
        return out

    # -- the transport's reports ---------------------------------------------------------------

    def bind(self, uid: bytes, cid: str, transport_id: bytes) -> None:
        """The transport carries ``uid`` to ``cid`` as ``transport_id``. Envelopes of no
        stored message (receipts, timer and group updates) are not tracked."""
        entry = self._entry(uid)
        if entry is None:
            return
        entry.transport_ids.append(transport_id)
        with self.store.transaction():
            self.store.put(BY_TRANSPORT, transport_id.hex(), uid + cid.encode())
            self._save(uid, entry)
        self._flight[transport_id] = None

    def tracks(self, transport_id: bytes) -> bool:
        return self._carried(transport_id) is not None

    def in_flight(self) -> list[bytes]:
        """Transport ids whose progress the shell should report (:meth:`poll`)."""
        return list(self._flight)

    def poll(self, progress_of: Callable[[bytes], tuple[int, int, int] | None]) -> None:
        """Ask the transport (``progress_of``: sent, acked, total, or None once it finished)
        for every message in flight and take in what changed."""
        for tid, last in list(self._flight.items()):
            found = progress_of(tid)
            if found is None:
                self._flight.pop(tid, None)
            elif last is None or (last.sent, last.acked) != found[:2]:
                self.on_progress(tid, *found)

    def on_progress(self, transport_id: bytes, sent: int, acked: int, total: int) -> None:
        """Fragments that have left (``sent``) and been acknowledged, of ``total``."""
        found = self._carried(transport_id)
        if found is None:
            self._flight.pop(transport_id, None)
            return
        self._flight[transport_id] = Progress(sent, acked, total)
        if sent:
            self._report(*found, Delivery.SENT)

    def on_at_provider(self, transport_id: bytes) -> None:
        self._finish(transport_id, Delivery.AT_PROVIDER, "")

    def on_failed(self, transport_id: bytes, reason: str) -> None:
        self._finish(transport_id, Delivery.FAILED, reason)

    # -- reading -------------------------------------------------------------------------------

    def summary(self, uid: bytes) -> dict[str, Any]:
        """What a front end shows for an outgoing message: the least advanced state with
        counts, and the fragments acknowledged while any are in flight."""
        entry = self._entry(uid)
        rows = entry.rows if entry is not None else {}
        out = summarize(rows)
        known = [p for tid in (entry.transport_ids if entry else [])
                 if (p := self._flight.get(tid)) is not None]
        if known:
            out["fragments_acked"] = sum(p.acked for p in known)
            out["fragments_total"] = sum(p.total for p in known)
        return out

    # -- internals -----------------------------------------------------------------------------

    def _finish(self, transport_id: bytes, state: Delivery, reason: str) -> None:
        found = self._carried(transport_id)
        self._flight.pop(transport_id, None)
        if found is None:
            return
        with self.store.transaction():
            self._report(*found, state, reason)
            self.store.delete(BY_TRANSPORT, transport_id.hex())

    def _carried(self, transport_id: bytes) -> tuple[bytes, str] | None:
        data = self.store.get(BY_TRANSPORT, transport_id.hex())
        if data is None:
            return None
        return data[:UID_LEN], data[UID_LEN:].decode()

    def _report(self, uid: bytes, cid: str, reported: Delivery, reason: str = "") -> None:
        entry = self._entry(uid)
        if entry is None or cid not in entry.rows:
            return  # expired and withdrawn, or not a message we track (a control message)
        old, _ = entry.rows[cid]
        new = advance(old, reported)
        if new is not old:
            entry.rows[cid] = (new, reason if new is Delivery.FAILED else "")
            self._save(uid, entry)

    def _entry(self, uid: bytes) -> Entry | None:
        data = self.store.get(DELIVERY, uid.hex())
        return None if data is None else Entry.decode(data)

    def _save(self, uid: bytes, entry: Entry) -> None:
        self.store.put(DELIVERY, uid.hex(), entry.encode())
