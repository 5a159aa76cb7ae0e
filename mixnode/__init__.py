"""The mix and provider roles: the sans-IO node core (`mixnode.core.NodeCore`, around
`mixcore.hop`'s packet processor: delay pool, cover loops, ACKs, statistics), its trio shell
(`mixnode.runtime`), the replay filters, key ring, mailboxes and the trio server."""

from __future__ import annotations
