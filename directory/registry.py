"""The descriptor registry: which uploaded descriptors an authority accepts and holds (sans-IO).

Bytes and the time go in, a :class:`DescriptorAccepted` event (to persist) or a
:class:`~directory.errors.DescriptorRejected` (with the HTTP status) comes out. Nothing here does
I/O; :mod:`directory.store` persists what is accepted and :meth:`DescriptorRegistry.restore`
loads it back after a restart.

Acceptance rules, in order (cheapest first):

1. size: at most :data:`MAX_UPLOAD_BYTES` (413);
2. canonical encoding and every field valid (400), via
   :func:`mixcore.descriptor.parse_signed_descriptor`;
3. the signature verifies under the identity key *inside* the descriptor (403): nobody can
   publish anything under a node id whose secret key they do not hold;
4. the descriptor is for the current or the next epoch (400): a replay of an old descriptor is
   refused, and so is pinning keys far ahead;
5. one descriptor per (identity, epoch), immutable once accepted: the same bytes again is an
   idempotent success, different bytes for the same epoch are refused (409). A node changes
   its descriptor by uploading one for the *next* epoch, which then wins (the consensus picks a
   node's latest descriptor). This makes replays harmless: an old version can never displace a
   newer one, and votes never change under a peer's feet;
6. the link key and the mix keys are not claimed by a different identity the registry holds
   (409): a node cannot list another node's keys under its own id;
7. capacity: at most ``max_nodes`` distinct identities (503 for a new identity when full;
   known identities may still upload). Descriptors that no longer cover the current or a later
   epoch are pruned every epoch, which frees room. This bound keeps a flood of identities from
   making the consensus exceed :data:`mixcore.consensus.MAX_NODES`; it does not stop a flood
   from crowding honest newcomers out, which needs an admission policy (future work).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from directory.errors import DescriptorRejected
from mixcore.consensus import MAX_NODES
from mixcore.descriptor import (
    MAX_SIGNED_DESCRIPTOR_BYTES,
    SignedDescriptor,
    check_descriptor_epoch,
    parse_signed_descriptor,
)
from mixcore.errors import DescriptorError, SignatureError
from mixcore.keys import short_id

#: Largest upload body the API reads; a real signed descriptor is at most 522 bytes.
MAX_UPLOAD_BYTES = MAX_SIGNED_DESCRIPTOR_BYTES


@dataclass(frozen=True, slots=True)
class DescriptorAccepted:
    """A descriptor the registry now holds (``duplicate``: it already held these exact bytes)."""

    identity_key: bytes
    epoch: int
    wire: bytes
    duplicate: bool = False

    def __repr__(self) -> str:
        return (
            f"DescriptorAccepted({short_id(self.identity_key)}… epoch={self.epoch} "
            f"duplicate={self.duplicate})"
        )


class DescriptorRegistry:
    """Verified descriptors held for the current and next epochs, at most one per (node, epoch)."""

    def __init__(self, *, max_nodes: int = MAX_NODES) -> None:
        if not 1 <= max_nodes <= MAX_NODES:
            raise ValueError(f"max_nodes must be between 1 and {MAX_NODES}")
        self.max_nodes = max_nodes
        self._held: dict[bytes, dict[int, SignedDescriptor]] = {}
        self._key_owner: dict[bytes, bytes] = {}
        self._rejected = 0

    # -- uploads ----------------------------------------------------------------------------

    def submit(self, data: bytes, current_epoch: int) -> DescriptorAccepted:
        """Check an upload against every rule above; accept it or raise DescriptorRejected."""
        try:
            return self._submit(data, current_epoch)
        except DescriptorRejected:
            self._rejected += 1
            raise

    def _submit(self, data: bytes, current_epoch: int) -> DescriptorAccepted:
        if len(data) > MAX_UPLOAD_BYTES:
            raise DescriptorRejected(
                413, f"descriptor is {len(data)} bytes, limit {MAX_UPLOAD_BYTES}"
            )
        try:
            signed = parse_signed_descriptor(data)
        except SignatureError as exc:
            raise DescriptorRejected(403, str(exc)) from None
        except DescriptorError as exc:
            raise DescriptorRejected(400, str(exc)) from None
        desc = signed.descriptor
        try:
            check_descriptor_epoch(desc, current_epoch)
        except DescriptorError as exc:
            raise DescriptorRejected(400, str(exc)) from None
        node = desc.identity_key
        mine = self._held.get(node, {})
        held = mine.get(desc.epoch)
        if held is not None:
            if held.wire == signed.wire:
                return DescriptorAccepted(node, desc.epoch, signed.wire, duplicate=True)
            raise DescriptorRejected(
                409,
                f"a different descriptor of node {short_id(node)} for epoch {desc.epoch} is "
                f"already registered; upload one for epoch {desc.epoch + 1} to replace it",
            )
        for key in self._claimed_keys(signed):
            owner = self._key_owner.get(key)
            if owner is not None and owner != node:
                raise DescriptorRejected(
                    409, f"a key in this descriptor belongs to another node ({short_id(owner)}…)"
                )
        if not mine and len(self._held) >= self.max_nodes:
            raise DescriptorRejected(
                503, f"registry full ({self.max_nodes} nodes); try again next epoch"
            )
        self._insert(signed)
        return DescriptorAccepted(node, desc.epoch, signed.wire)

    @staticmethod
    def _claimed_keys(signed: SignedDescriptor) -> list[bytes]:
        desc = signed.descriptor
        return [desc.link_key, *(key for _, key in desc.mix_keys)]

    def _insert(self, signed: SignedDescriptor) -> None:
        desc = signed.descriptor
        self._held.setdefault(desc.identity_key, {})[desc.epoch] = signed
        for key in self._claimed_keys(signed):
            self._key_owner[key] = desc.identity_key

    # -- restart and expiry -----------------------------------------------------------------

    def restore(self, wires: Iterable[bytes], current_epoch: int) -> int:
        """Reload persisted descriptors (re-verified); returns how many were kept."""
        kept = 0
        for wire in wires:
            try:
                signed = parse_signed_descriptor(wire)
            except (DescriptorError, SignatureError):
                continue
            desc = signed.descriptor
            if desc.epoch + 1 < current_epoch or desc.epoch > current_epoch + 1:
                continue
            if desc.epoch in self._held.get(desc.identity_key, {}):
                continue
            self._insert(signed)
            kept += 1
        return kept

    def prune(self, current_epoch: int) -> int:
        """Drop descriptors that cover neither the current epoch nor a later one."""
        dropped = 0
        for node in list(self._held):
            epochs = self._held[node]
            for epoch in [e for e in epochs if e + 1 < current_epoch]:
                del epochs[epoch]
                dropped += 1
            if not epochs:
                del self._held[node]
        if dropped:
            self._key_owner = {
                key: node
                for node, epochs in self._held.items()
                for signed in epochs.values()
                for key in self._claimed_keys(signed)
            }
        return dropped

    # -- votes ------------------------------------------------------------------------------

    def descriptors_for(self, epoch: int) -> list[bytes]:
        """The vote for ``epoch``: per node, its latest descriptor with a mix key for ``epoch``.

        Sorted by wire bytes, so the vote is a canonical set.
        """
        chosen: list[bytes] = []
        for epochs in self._held.values():
            covering = [s for s in epochs.values() if s.descriptor.covers_epoch(epoch)]
            if covering:
                chosen.append(max(covering, key=lambda s: s.descriptor.epoch).wire)
        return sorted(chosen)

    def holds_any_for(self, epoch: int) -> bool:
        return any(
            s.descriptor.covers_epoch(epoch)
            for epochs in self._held.values()
            for s in epochs.values()
        )

    def __len__(self) -> int:
        """Distinct nodes held."""
        return len(self._held)

    def statistics(self) -> dict[str, int]:
        return {
            "nodes": len(self._held),
            "descriptors": sum(len(e) for e in self._held.values()),
            "rejected": self._rejected,
        }
