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
7. admission (:mod:`directory.admission`), checked right after the signature: in the default
   ``approved`` mode a node the operator did not approve, or one outside the role it was
   approved for, is refused (403); in ``open`` mode a *new* unapproved node is refused (503)
   beyond the caps per source address and per epoch, and beyond the share of the registry
   unapproved nodes may hold;
8. capacity: at most ``max_nodes`` distinct identities. Known identities may always upload (a
   listed node refreshing its descriptor is never refused for room). When full, an approved
   newcomer takes the place of the most recently admitted unapproved node that is *not listed*
   in a published consensus; anyone else gets 503. So the size cap never pushes a listed node
   out, and never keeps an approved node out while strangers hold unlisted places.
   Descriptors that no longer cover the current or a later epoch are pruned every epoch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from directory.admission import Admission, Approval
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
    evicted: tuple[bytes, ...] = ()
    """Unlisted, unapproved nodes dropped to make room for this (approved) one."""

    def __repr__(self) -> str:
        return (
            f"DescriptorAccepted({short_id(self.identity_key)}… epoch={self.epoch} "
            f"duplicate={self.duplicate})"
        )


class DescriptorRegistry:
    """Verified descriptors held for the current and next epochs, at most one per (node, epoch)."""

    def __init__(
        self, *, max_nodes: int = MAX_NODES, admission: Admission | None = None
    ) -> None:
        """``admission=None`` admits every node (for tests of the other rules); an authority
        always passes its configured :class:`~directory.admission.Admission`."""
        if not 1 <= max_nodes <= MAX_NODES:
            raise ValueError(f"max_nodes must be between 1 and {MAX_NODES}")
        self.max_nodes = max_nodes
        self.admission = admission
        self._held: dict[bytes, dict[int, SignedDescriptor]] = {}
        self._key_owner: dict[bytes, bytes] = {}
        self._admitted_at: dict[bytes, int] = {}  # node -> admission sequence number
        self._sequence = 0
        self._listed: frozenset[bytes] = frozenset()
        self._rejected = 0
        self._evicted = 0

    # -- uploads ----------------------------------------------------------------------------

    def submit(
        self, data: bytes, current_epoch: int, *, source: str | None = None
    ) -> DescriptorAccepted:
        """Check an upload against every rule above; accept it or raise DescriptorRejected.

        ``source`` is the uploader's address (open admission counts new nodes per source).
        """
        try:
            return self._submit(data, current_epoch, source)
        except DescriptorRejected:
            self._rejected += 1
            raise

    def _submit(self, data: bytes, current_epoch: int, source: str | None) -> DescriptorAccepted:
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
        if self.admission is not None:
            self.admission.check_approval(desc)
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
        evicted: tuple[bytes, ...] = ()
        if not mine:
            approved = self.admission is not None and self.admission.is_approved(node)
            if self.admission is not None:
                self.admission.check_new(desc, source, current_epoch, self.strangers_held())
            if len(self._held) >= self.max_nodes:
                victim = self._eviction_candidate() if approved else None
                if victim is None:
                    raise DescriptorRejected(
                        503, f"registry full ({self.max_nodes} nodes); try again next epoch"
                    )
                self._drop_nodes([victim])
                self._evicted += 1
                evicted = (victim,)
            if self.admission is not None:
                self.admission.admitted(desc, source, current_epoch)
            self._sequence += 1
            self._admitted_at[node] = self._sequence
        self._insert(signed)
        return DescriptorAccepted(node, desc.epoch, signed.wire, evicted=evicted)

    # -- admission --------------------------------------------------------------------------

    def _approved(self, node: bytes) -> bool:
        return self.admission is None or self.admission.is_approved(node)

    def strangers_held(self) -> int:
        """Held nodes the operator did not approve (admitted under open admission)."""
        if self.admission is None:
            return 0
        return sum(1 for node in self._held if not self.admission.is_approved(node))

    def _eviction_candidate(self) -> bytes | None:
        """The most recently admitted unapproved node that no published consensus lists."""
        candidates = [
            node for node in self._held if not self._approved(node) and node not in self._listed
        ]
        return max(candidates, key=lambda n: self._admitted_at.get(n, 0), default=None)

    def set_listed(self, nodes: Iterable[bytes]) -> None:
        """The nodes of the latest published consensus: their places are never given away."""
        self._listed = frozenset(nodes)

    def set_approvals(self, approvals: Iterable[Approval]) -> list[bytes]:
        """Install a new approved list; drop held nodes it no longer permits (returned)."""
        if self.admission is None:
            return []
        self.admission.set_approvals(approvals)
        gone = [
            node
            for node, epochs in self._held.items()
            if not all(self.admission.permitted(s.descriptor) for s in epochs.values())
        ]
        self._drop_nodes(gone)
        return gone

    def _drop_nodes(self, nodes: Iterable[bytes]) -> None:
        dropped = False
        for node in nodes:
            if self._held.pop(node, None) is not None:
                dropped = True
            self._admitted_at.pop(node, None)
        if dropped:
            self._rebuild_key_owners()

    def _rebuild_key_owners(self) -> None:
        self._key_owner = {
            key: node
            for node, epochs in self._held.items()
            for signed in epochs.values()
            for key in self._claimed_keys(signed)
        }

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
            if self.admission is not None and not self.admission.permitted(desc):
                continue  # revoked (or the mode changed) while the authority was down
            if desc.identity_key not in self._held:
                self._sequence += 1
                self._admitted_at[desc.identity_key] = self._sequence
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
                self._admitted_at.pop(node, None)
        if dropped:
            self._rebuild_key_owners()
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
        stats = {
            "nodes": len(self._held),
            "descriptors": sum(len(e) for e in self._held.values()),
            "rejected": self._rejected,
            "unapproved_nodes": self.strangers_held(),
            "evicted": self._evicted,
        }
        if self.admission is not None:
            stats.update(self.admission.statistics())
        return stats
