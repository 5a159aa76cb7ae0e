"""What a global passive observer records: one row per packet per link, plus the ground truth.

The simulated network and a trace recorded from a real testnet are both turned into this one
shape, so the adversary code never knows which it is looking at. A row is one transmission on one
link (``src`` node to ``dst`` node, leaving at ``t_dep`` and arriving at ``t_arr``). The observer
sees every row but not which rows belong to the same packet: ``next_row``/``prev_row`` are the
ground truth, used only to score the adversary and to model corrupt mixes, which reveal their own
input-output links.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class Role(IntEnum):
    """The part a node plays; it decides which of its rows the adversary treats as mixed."""

    CLIENT = 0
    PROVIDER = 1
    MIX = 2


class Kind(IntEnum):
    """Ground-truth packet kind. The observer cannot tell them apart (same size, same timing)."""

    REAL = 0
    LOOP = 1
    DROP = 2
    MIX_LOOP = 3
    """A mix's or provider's own loop (its rows follow the client packets' rows)."""


@dataclass(frozen=True, slots=True)
class Observations:
    """Link rows of a run and the node table. Arrays are indexed by row or by node id."""

    t_dep: FloatArray
    t_arr: FloatArray
    src: IntArray
    dst: IntArray
    node_role: IntArray
    corrupt: BoolArray
    next_row: IntArray
    prev_row: IntArray
    node_names: list[str] = field(default_factory=list)
    node_layer: IntArray | None = None
    relay: BoolArray | None = None
    fresh: BoolArray | None = None
    absorbed: BoolArray | None = None
    known_cover: BoolArray | None = None
    revealed_recipient: IntArray | None = None
    home_provider: IntArray | None = None
    """Per node: the provider a client pulls from (-1 for other nodes, or without providers)."""
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    """Per-row roles and layers of each row's two nodes, computed once (the adversary asks for
    them many times; fresh pages cost more than the lookups)."""

    def roles(self) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int8]]:
        """(role of each row's source, role of its destination), as small integers."""
        if "roles" not in self._cache:
            role = self.node_role.astype(np.int8)
            self._cache["roles"] = (role[self.src], role[self.dst])
        return self._cache["roles"]  # type: ignore[no-any-return]

    def layers(self) -> tuple[IntArray, IntArray]:
        """(layer of each row's source, layer of its destination); needs ``node_layer``."""
        assert self.node_layer is not None
        if "layers" not in self._cache:
            layer = self.node_layer.astype(np.int16) if self.node_layer.size and \
                int(np.abs(self.node_layer).max()) < 2**15 else self.node_layer
            self._cache["layers"] = (layer[self.src], layer[self.dst])
        return self._cache["layers"]  # type: ignore[no-any-return]

    @property
    def n_rows(self) -> int:
        return int(self.t_dep.size)

    @property
    def n_nodes(self) -> int:
        return int(self.node_role.size)

    def mixing_in(self) -> BoolArray:
        """Rows that enter a pool: into a mix, or from a client into its (entry) provider."""
        src_role, dst_role = self.roles()
        from_client = (dst_role == Role.PROVIDER) & (src_role == Role.CLIENT)
        rows: BoolArray = (dst_role == Role.MIX) | from_client
        return rows

    def mixing_out(self) -> BoolArray:
        """Rows that leave a pool: out of a mix, or from a provider into the first mix layer."""
        src_role, dst_role = self.roles()
        into_mixes = (src_role == Role.PROVIDER) & (dst_role == Role.MIX)
        rows: BoolArray = (src_role == Role.MIX) | into_mixes
        return rows

    def delivered(self) -> BoolArray:
        """Rows that end a packet's visible journey: a mix handing it to the exit provider (or,
        without providers, to the recipient). Mailbox pulls after that are padded, fixed-size
        batches at fixed times, so they carry no per-packet signal and end the adversary's view.
        """
        src_role, dst_role = self.roles()
        rows: BoolArray = (src_role == Role.MIX) & (dst_role != Role.MIX)
        return rows

    def flag(self, name: str) -> BoolArray:
        """One of the optional per-row flags, all False when the run did not set it."""
        value = getattr(self, name)
        return np.zeros(self.n_rows, dtype=bool) if value is None else value

    def relay_out(self) -> BoolArray:
        """Rows that continue a relayed row out of the relaying node."""
        out = np.zeros(self.n_rows, dtype=bool)
        if self.relay is not None:
            rows = np.flatnonzero(self.relay & (self.next_row >= 0))
            out[self.next_row[rows]] = True
        return out

    def pool_arrivals(self) -> BoolArray:
        """Rows that join a pool the adversary models (mixing, not relayed, not absorbed)."""
        return self.mixing_in() & ~self.flag("relay") & ~self.flag("absorbed")

    def pool_departures(self) -> BoolArray:
        """Rows that leave a modelled pool (not a node's fresh loop, not a relay's output)."""
        return self.mixing_out() & ~self.flag("fresh") & ~self.relay_out()

    def endpoints(self) -> BoolArray:
        """Deliveries a real packet can end on: not relays, not returning loops, not known cover."""
        return self.delivered() & ~self.flag("relay") & ~self.flag("absorbed") \
            & ~self.flag("known_cover")

    def real_shaped(self) -> BoolArray:
        """Rows a real packet's path may contain, as far as the adversary can tell.

        With ``node_layer`` known, a real path goes client -> (provider ->) layer 1 -> ... ->
        layer L -> exit: each row moves one layer on, or leaves the last layer. Relays, returning
        loops and known cover are not real-shaped.
        """
        ok = ~self.flag("relay") & ~self.flag("absorbed") & ~self.flag("known_cover")
        if self.node_layer is None:
            return ok
        src_l, dst_l = self.layers()
        last = int(self.node_layer.max())
        src_role, dst_role = self.roles()
        step = (dst_l == src_l + 1) & (dst_role != Role.CLIENT)
        from_client = src_role == Role.CLIENT
        exits = (src_role == Role.MIX) & (src_l == last) & (dst_role != Role.MIX)
        rows: BoolArray = ok & (step | from_client | exits)
        return rows

    def injected(self) -> BoolArray:
        """Rows that start a packet: a client sending into the network."""
        src_role, dst_role = self.roles()
        rows: BoolArray = (src_role == Role.CLIENT) & (dst_role != Role.CLIENT)
        return rows
