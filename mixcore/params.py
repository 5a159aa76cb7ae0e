"""Network parameters: one validated, immutable object every node and client agrees on.

The consensus document carries these, so a client's cover traffic and a node's expectations come
from one signed source. Rates are per second and delays are seconds, as their names say; the
Loopix paper's lambda (rates) and 1/mu (mean delay) appear only here in prose:

* ``payload_rate`` is lambda_P, ``loop_rate`` lambda_L, ``drop_rate`` lambda_D,
  ``mix_loop_rate`` lambda_M (Loopix section 3);
* ``mean_hop_delay`` is 1/mu, the mean of the exponential delay a sender picks for each hop.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from mixcore.encoding import (
    expect_float,
    expect_int,
    expect_list,
    expect_str,
    pack,
    unpack_canonical,
)
from mixcore.errors import DecodeError, ParamsError

PARAMS_VERSION = 2
"""2 added ``sphinx_suite`` (the last element); a version-1 array no longer decodes."""

#: The Sphinx suites a network may name (``mixcore.sphinx`` implements each). v1 is sphinxmix's
#: construction over NIST P-256, byte for byte; v2 is ours over X25519 (docs/protocol.md §3).
SPHINX_SUITE_V1 = "sphinx-v1-p256"
SPHINX_SUITE_V2 = "sphinx-v2-x25519"
SPHINX_SUITES = (SPHINX_SUITE_V1, SPHINX_SUITE_V2)
DEFAULT_SPHINX_SUITE = SPHINX_SUITE_V2

#: 2026-01-01T00:00:00Z: epoch 0 starts here unless a network says otherwise.
DEFAULT_GENESIS = 1_767_225_600.0

MAX_LAYERS = 8
MIN_BODY_LEN = 256
#: A cell (packet + 4 bytes of framing + 16 bytes of AEAD tag) must fit one Noise message.
MAX_BODY_LEN = 60_000
MAX_PULL_BATCH = 64


@dataclass(frozen=True, slots=True)
class NetworkParams:
    """Parameters of one mix network. Construct, then trust: ``__post_init__`` validates."""

    layers: int = 3
    """Mix layers between the two providers (Loopix recommends >= 3)."""
    body_len: int = 2048
    """Bytes of the Sphinx body (the payload capacity is slightly less, see ``mixcore.sphinx``)."""
    payload_rate: float = 2.0
    """Packets per second of the client's payload stream (real or drop when idle)."""
    loop_rate: float = 0.5
    """Packets per second of the client's loop cover stream."""
    drop_rate: float = 0.5
    """Packets per second of the client's drop cover stream."""
    mix_loop_rate: float = 0.5
    """Packets per second of each mix's and provider's own loop stream."""
    mean_hop_delay: float = 0.2
    """Mean of the exponential per-hop delay in seconds."""
    epoch_length: float = 3600.0
    """Seconds per epoch (key rotation and consensus period)."""
    genesis_time: float = DEFAULT_GENESIS
    """Unix time at which epoch 0 starts."""
    pull_interval: float = 1.0
    """Seconds between a client's mailbox pulls."""
    pull_batch: int = 8
    """Items per pull response (always exactly this many, padded with dummies)."""
    sphinx_suite: str = DEFAULT_SPHINX_SUITE
    """The Sphinx suite every packet of this network uses; nodes refuse (and count) others."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "float":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ParamsError(f.name, f"expected a number, got {type(value).__name__}")
                value = float(value)
                if not math.isfinite(value):
                    raise ParamsError(f.name, "must be finite")
                object.__setattr__(self, f.name, value)
            elif f.type == "str":
                if not isinstance(value, str):
                    raise ParamsError(f.name, f"expected text, got {type(value).__name__}")
            elif isinstance(value, bool) or not isinstance(value, int):
                raise ParamsError(f.name, f"expected an integer, got {type(value).__name__}")
        self._check_range("layers", 1, MAX_LAYERS)
        self._check_range("body_len", MIN_BODY_LEN, MAX_BODY_LEN)
        if self.payload_rate <= 0:
            raise ParamsError("payload_rate", "must be > 0 packets/s")
        for name in ("loop_rate", "drop_rate", "mix_loop_rate", "mean_hop_delay"):
            if getattr(self, name) < 0:
                raise ParamsError(name, "must be >= 0")
        if self.epoch_length < 1.0:
            raise ParamsError("epoch_length", "must be at least 1 second")
        if self.genesis_time < 0:
            raise ParamsError("genesis_time", "must be >= 0 (Unix time)")
        if self.pull_interval <= 0:
            raise ParamsError("pull_interval", "must be > 0 seconds")
        self._check_range("pull_batch", 1, MAX_PULL_BATCH)
        if self.sphinx_suite not in SPHINX_SUITES:
            known = ", ".join(SPHINX_SUITES)
            suite = self.sphinx_suite
            raise ParamsError("sphinx_suite", f"unknown suite {suite!r}; known: {known}")
        if self.mean_hop_delay * 10 > self.epoch_length:
            raise ParamsError(
                "mean_hop_delay", "must be under a tenth of epoch_length (keys rotate per epoch)"
            )

    def _check_range(self, name: str, lo: int, hi: int) -> None:
        value = getattr(self, name)
        if not lo <= value <= hi:
            raise ParamsError(name, f"must be between {lo} and {hi}, got {value}")

    @property
    def max_hops(self) -> int:
        """Sphinx hops of a full path: entry provider, one mix per layer, exit provider."""
        return self.layers + 2

    @property
    def key_grace(self) -> float:
        """Default seconds a node keeps using the previous epoch's key (a quarter epoch, at
        most 10 minutes)."""
        return min(self.epoch_length / 4, 600.0)

    @property
    def max_hop_delay(self) -> float:
        """Default longest per-hop delay: half the key grace, so a packet held the longest at
        every hop still meets a key that can open it. Nodes refuse longer delays and senders
        redraw them, so both sides derive the same bound from the consensus."""
        return self.key_grace / 2

    def replace(self, **changes: Any) -> NetworkParams:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON config files and ``--json`` output."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkParams:
        """Build from a dict (e.g. a JSON config); unknown keys are an error, not ignored."""
        if not isinstance(data, dict):
            raise ParamsError("params", "expected a mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ParamsError(unknown[0], "unknown parameter")
        return cls(**data)

    def encode(self) -> bytes:
        """Canonical bytes, as embedded in the consensus document."""
        return pack(self.to_wire())

    def to_wire(self) -> list[Any]:
        return [PARAMS_VERSION, *(getattr(self, f.name) for f in dataclasses.fields(self))]

    @classmethod
    def decode(cls, data: bytes) -> NetworkParams:
        return cls.from_wire(unpack_canonical(data))

    @classmethod
    def from_wire(cls, obj: Any) -> NetworkParams:
        fields = dataclasses.fields(cls)
        items = expect_list(obj, len(fields) + 1, "params")
        expect_int(items[0], "params version", lo=PARAMS_VERSION, hi=PARAMS_VERSION)
        values: dict[str, Any] = {}
        for f, raw in zip(fields, items[1:], strict=True):
            if f.type == "float":
                values[f.name] = expect_float(raw, f"params.{f.name}")
            elif f.type == "str":
                values[f.name] = expect_str(raw, f"params.{f.name}", max_len=64)
            else:
                values[f.name] = expect_int(raw, f"params.{f.name}", lo=0, hi=1 << 32)
        try:
            return cls(**values)
        except ParamsError as exc:
            raise DecodeError(str(exc)) from None
