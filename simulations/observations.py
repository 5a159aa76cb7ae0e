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

    @property
    def n_rows(self) -> int:
        return int(self.t_dep.size)

    @property
    def n_nodes(self) -> int:
        return int(self.node_role.size)

    def mixing_in(self) -> BoolArray:
        """Rows that enter a pool: into a mix, or from a client into its (entry) provider."""
        src_role = self.node_role[self.src]
        dst_role = self.node_role[self.dst]
        return (dst_role == Role.MIX) | ((dst_role == Role.PROVIDER) & (src_role == Role.CLIENT))

    def mixing_out(self) -> BoolArray:
        """Rows that leave a pool: out of a mix, or from a provider into the first mix layer."""
        src_role = self.node_role[self.src]
        dst_role = self.node_role[self.dst]
        return (src_role == Role.MIX) | ((src_role == Role.PROVIDER) & (dst_role == Role.MIX))

    def delivered(self) -> BoolArray:
        """Rows that end a packet's visible journey: a mix handing it to the exit provider (or,
        without providers, to the recipient). Mailbox pulls after that are padded, fixed-size
        batches at fixed times, so they carry no per-packet signal and end the adversary's view.
        """
        src_role = self.node_role[self.src]
        dst_role = self.node_role[self.dst]
        return (src_role == Role.MIX) & (dst_role != Role.MIX)

    def injected(self) -> BoolArray:
        """Rows that start a packet: a client sending into the network."""
        src_role = self.node_role[self.src]
        dst_role = self.node_role[self.dst]
        return (src_role == Role.CLIENT) & (dst_role != Role.CLIENT)
