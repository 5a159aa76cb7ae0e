"""The mix and provider roles: the node runtime around `mixcore.hop`'s packet processor, delay
pool, replay filter, key ring, cover loops, mailboxes and the trio server."""

from __future__ import annotations
