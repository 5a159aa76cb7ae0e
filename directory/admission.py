"""Which nodes an authority lets into its registry: operator approval, or capped open admission.

Sans-IO: the registry asks :meth:`Admission.check` about every *new* node (one the registry
does not hold yet) with the upload's source address and the epoch, and tells
:meth:`Admission.admitted` when it took one. Loading and saving the approved list is in
:mod:`directory.approvals`.

Two modes (``docs/directory.md`` compares them with Katzenpost's and Tor's rules):

* ``approved`` (the default): only node identity keys the operator approved
  (``mixnet directory approve KEY --role mix|provider``) are held, each in the role it was
  approved for. Since a descriptor enters the consensus only when a majority of all
  authorities voted for its exact bytes, a node is listed only when a majority of the
  authorities' operators approved it. Anyone else gets ``403``, however many keys they make.
* ``open`` (test networks): any node is admitted, but at most ``per_source`` new nodes per
  source address and ``per_epoch`` new nodes in all per epoch, and never more than
  ``max_strangers`` unapproved nodes at once, so approved nodes always find room. Approved
  nodes are admitted in open mode too, without those caps.

Sources are IPv4 addresses, or the /64 network of an IPv6 address (:mod:`mixcore.sources`).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from directory.errors import DescriptorRejected
from mixcore.descriptor import NodeDescriptor
from mixcore.keys import short_id
from mixcore.sources import source_key
from mixcore.topology import NodeRole


class AdmissionMode(enum.StrEnum):
    APPROVED = "approved"
    OPEN = "open"


@dataclass(frozen=True, slots=True)
class Approval:
    """An operator's approval of one node identity key, for one role (and maybe one layer)."""

    identity_key: bytes
    role: NodeRole
    layer: int | None = None
    """A mix approved for a layer may only *request* that layer (or 0, "authorities choose").
    The consensus still deals mixes into layers every epoch (``mixcore.consensus``)."""

    def allows(self, descriptor: NodeDescriptor) -> str | None:
        """Why ``descriptor`` goes beyond this approval, or None."""
        if descriptor.role is not self.role:
            return f"approved as a {self.role.name.lower()}, not a {descriptor.role.name.lower()}"
        if self.layer is not None and descriptor.layer not in (0, self.layer):
            return f"approved for layer {self.layer}, not layer {descriptor.layer}"
        return None


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """The ``admission`` section of ``authority.json``."""

    mode: AdmissionMode = AdmissionMode.APPROVED
    per_source: int = 4
    """Open mode: new nodes admitted per source address per epoch."""
    per_epoch: int = 64
    """Open mode: new nodes admitted per epoch, from all sources together."""
    max_strangers: int = 0
    """Open mode: unapproved nodes held at once (0: half of the registry's ``max_nodes``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.mode, AdmissionMode):
            object.__setattr__(self, "mode", AdmissionMode(self.mode))
        for name in ("per_source", "per_epoch", "max_strangers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"admission.{name}: expected a whole number >= 0")
        if self.per_source < 1 or self.per_epoch < 1:
            raise ValueError("admission.per_source and per_epoch must be at least 1")

    def to_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode.value,
            "per_source": self.per_source,
            "per_epoch": self.per_epoch,
            "max_strangers": self.max_strangers,
        }


class Admission:
    """The admission rule of one authority (see the module docs)."""

    def __init__(
        self,
        settings: AdmissionSettings | None = None,
        approvals: Iterable[Approval] = (),
        *,
        max_nodes: int,
    ) -> None:
        self.settings = settings or AdmissionSettings()
        self.max_nodes = max_nodes
        self._approved: dict[bytes, Approval] = {}
        self.set_approvals(approvals)
        self._epoch: int | None = None
        self._by_source: Counter[str] = Counter()
        self._this_epoch = 0
        self.refused: Counter[str] = Counter()

    @property
    def mode(self) -> AdmissionMode:
        return self.settings.mode

    @property
    def max_strangers(self) -> int:
        return self.settings.max_strangers or max(1, self.max_nodes // 2)

    def set_approvals(self, approvals: Iterable[Approval]) -> None:
        self._approved = {a.identity_key: a for a in approvals}

    @property
    def approvals(self) -> Mapping[bytes, Approval]:
        return self._approved

    def is_approved(self, identity_key: bytes) -> bool:
        return identity_key in self._approved

    def permitted(self, descriptor: NodeDescriptor) -> bool:
        """May this node be held at all under the current approvals (ignoring the caps)?"""
        approval = self._approved.get(descriptor.identity_key)
        if approval is not None:
            return approval.allows(descriptor) is None
        return self.mode is AdmissionMode.OPEN

    def check_approval(self, descriptor: NodeDescriptor) -> None:
        """Refuse (403) a node the operator did not approve, or one beyond its approval."""
        approval = self._approved.get(descriptor.identity_key)
        node = short_id(descriptor.identity_key)
        if approval is not None:
            why = approval.allows(descriptor)
            if why is not None:
                self.refused["beyond_approval"] += 1
                raise DescriptorRejected(403, f"node {node}… is {why}")
            return
        if self.mode is AdmissionMode.APPROVED:
            self.refused["not_approved"] += 1
            raise DescriptorRejected(
                403,
                f"node {node}… is not approved by this authority "
                f"(its operator runs: mixnet directory approve {descriptor.identity_key.hex()} "
                f"--role {descriptor.role.name.lower()})",
            )

    def check_new(
        self, descriptor: NodeDescriptor, source: str | None, epoch: int, strangers_held: int
    ) -> None:
        """Refuse (503) an unapproved newcomer beyond the open-admission caps."""
        if self.is_approved(descriptor.identity_key):
            return
        self._roll(epoch)
        key = source_key(source)
        if strangers_held >= self.max_strangers:
            self.refused["strangers_full"] += 1
            raise DescriptorRejected(
                503, f"open admission is full ({self.max_strangers} unapproved nodes)"
            )
        if self._by_source[key] >= self.settings.per_source:
            self.refused["per_source"] += 1
            raise DescriptorRejected(
                503,
                f"{self.settings.per_source} new nodes from this address this epoch already; "
                "try again next epoch",
            )
        if self._this_epoch >= self.settings.per_epoch:
            self.refused["per_epoch"] += 1
            raise DescriptorRejected(
                503, f"{self.settings.per_epoch} new nodes this epoch already; try next epoch"
            )

    def admitted(self, descriptor: NodeDescriptor, source: str | None, epoch: int) -> None:
        """A new node was taken: count it against its source and the epoch."""
        if self.is_approved(descriptor.identity_key):
            return
        self._roll(epoch)
        self._by_source[source_key(source)] += 1
        self._this_epoch += 1

    def _roll(self, epoch: int) -> None:
        if epoch != self._epoch:
            self._epoch = epoch
            self._by_source.clear()
            self._this_epoch = 0

    def statistics(self) -> dict[str, int]:
        return {
            "approved": len(self._approved),
            **{f"refused_{k}": v for k, v in sorted(self.refused.items())},
        }
