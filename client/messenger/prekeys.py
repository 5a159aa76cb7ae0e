"""Signed-prekey upkeep: rotate the prekey when due, and erase old prekeys after their grace
period together with the first-message records (table ``replay``) that only they could open,
so a stolen store cannot replay or open those first messages later (``docs/e2e.md`` §3)."""

from __future__ import annotations

from client.e2e.cards import ContactCard
from client.e2e.identity import MAX_PREKEYS
from client.messenger.context import Context
from client.messenger.records import REPLAY
from mixcore.encoding import unpack_canonical


def upkeep(ctx: Context, address: tuple[bytes, bytes, bytes]) -> None:
    """Rotate and erase what is due; a rotated prekey gives the user a new card."""
    now = ctx.clock()
    identity = ctx.identity
    rotated = False
    if identity.rotation_due(now):
        identity.rotate_prekey(keep=MAX_PREKEYS, now=now)
        rotated = True
        ctx.counts["prekeys_rotated"] += 1
    erased = identity.erase_prekeys(now)
    if rotated or erased:
        with ctx.store.transaction():
            ctx.store.save_identity(identity)
            for ephemeral, value in ctx.store.items(REPLAY):
                if unpack_canonical(value) in erased:
                    ctx.store.delete(REPLAY, ephemeral)
        ctx.card = ContactCard.create(identity, *address)
        ctx.counts["prekeys_erased"] += len(erased)
