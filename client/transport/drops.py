"""Why something that reached the client was discarded: counted by reason, never raised."""

from __future__ import annotations

from enum import Enum


class DropReason(Enum):
    UNEXPECTED_CONTROL = "unexpected_control"
    MALFORMED_CONTROL = "malformed_control"
    STALE_PULL_ITEM = "stale_pull_item"
    BAD_PULL_ITEM = "bad_pull_item"
    DUPLICATE_PULL_ITEM = "duplicate_pull_item"
    INCOMPLETE_PULL = "incomplete_pull"
    FORGED_FRAGMENT = "forged_fragment"
    """An item that did not open under our mailbox key, or opened to no valid fragment."""
    UNEXPECTED_LOOP = "unexpected_loop"
    """A loop item we are not waiting for: a duplicate delivery, a late one, or a forgery by
    someone holding our card. Counted here, never shown as a message."""
    DUPLICATE_FRAGMENT = "duplicate_fragment"
    ALREADY_DELIVERED = "already_delivered"
    INCONSISTENT_FRAGMENT = "inconsistent_fragment"
    TOO_MANY_FRAGMENTS = "too_many_fragments"
    UNDECODABLE_MESSAGE = "undecodable_message"
    EXPIRED_PARTIAL = "expired_partial"
    EVICTED_PARTIAL = "evicted_partial"
    UNKNOWN_ACK = "unknown_ack"
    STALE_ACK = "stale_ack"
    BAD_ACK = "bad_ack"
