"""Stores of earlier versions kept the messenger's groups, pending cards, read marks and
delivery states as prefixed rows of the generic ``settings`` table; they move into the tables
of their own (:mod:`client.messenger.records`, :mod:`client.messenger.ledger`) once, in one
commit, the first time a :class:`~client.messenger.messenger.Messenger` opens such a store."""

from __future__ import annotations

from client.messenger.ledger import BY_TRANSPORT, DELIVERY, Delivery, Entry
from client.messenger.records import GROUPS, READ_MARKS, UNCONFIRMED_CARDS
from client.storage import Store
from mixcore.encoding import unpack_canonical

SETTINGS = "settings"
PREFIXES = {"group:": GROUPS, "pending_card:": UNCONFIRMED_CARDS, "read:": READ_MARKS,
            "transport:": BY_TRANSPORT}


def move_settings_rows(store: Store) -> int:
    """Move every legacy row to its table; returns how many rows moved."""
    rows = [(k, v) for k, v in store.items(SETTINGS)
            if k.startswith((*PREFIXES, "delivery:", "tids:"))]
    if not rows:
        return 0
    old = dict(rows)
    with store.transaction():
        for key, value in rows:
            store.delete(SETTINGS, key)
            prefix, _, rest = key.partition(":")
            if prefix == "delivery":
                tids = old.get(f"tids:{rest}", b"")
                entry = Entry(
                    {cid: (Delivery(state), reason)
                     for cid, state, reason in unpack_canonical(value)},
                    [tids[i : i + 16] for i in range(0, len(tids), 16)],
                )
                store.put(DELIVERY, rest, entry.encode())
            elif prefix != "tids":  # the transport ids went into their message's entry
                store.put(PREFIXES[prefix + ":"], rest, value)
    return len(rows)
