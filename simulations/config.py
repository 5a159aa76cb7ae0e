"""One set of simulation parameters, shared by every scenario, the CLI and the benchmark.

Defaults come from ``mixcore.params.NetworkParams`` (the deployed network's parameters), so a
simulation with no flags answers "how anonymous is the default network?". Rates are per second
and delays are seconds, as everywhere in the project.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mixcore.errors import ParamsError
from mixcore.params import NetworkParams

_DEFAULTS = NetworkParams()


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Parameters of one simulated run (validated on construction)."""

    clients: int = 20
    client_rate: float = _DEFAULTS.payload_rate
    """Payload-stream packets per second per client (Loopix lambda_P). Every slot is real unless
    ``message_rate`` is set."""
    message_rate: float | None = None
    """Real messages per second per client offered to the payload stream (queued, each sent in
    the next free slot; other slots carry drop cover, as Loopix and our client do). None: every
    payload slot is real, the model's original reading."""
    loop_rate: float = _DEFAULTS.loop_rate
    """Loop cover packets per second per client (lambda_L)."""
    drop_rate: float = _DEFAULTS.drop_rate
    """Drop cover packets per second per client (lambda_D)."""
    layers: int = _DEFAULTS.layers
    width: int = 3
    """Mixes per layer."""
    providers: int = 2
    """0: clients send straight into layer 1 and the last layer delivers to the recipient."""
    mean_hop_delay: float = _DEFAULTS.mean_hop_delay
    provider_delay: float | None = None
    """Mean holding delay at providers. None: ``mean_hop_delay`` (providers mix, as in the Loopix
    paper); 0: as our network is built (``client/paths.py``: providers hold for 0)."""
    link_latency: float = 0.005
    """Fixed one-way latency of every link, seconds."""
    duration: float = 30.0
    """Seconds of the measurement window (targets are sent inside it)."""
    warmup: float = 5.0
    """Seconds of traffic before the window, so pools are at their steady state."""
    corrupt_fraction: float = 0.0
    """Share of the mixes (not providers) that reveal their input-output links."""
    corrupt_providers: int = 0
    """Providers that reveal their links: which client sent what into which first mix (entry),
    and which mailbox each delivery goes to and which are drop cover (exit)."""
    seed: int = 1
    runs: int = 1
    targets: int = 50
    """Target messages the adversary tracks per run."""
    pull_interval: float = _DEFAULTS.pull_interval
    pull_batch: int = _DEFAULTS.pull_batch
    """Items a pull returns at most (the rest wait for the next pull), as providers answer."""
    mix_loop_rate: float = _DEFAULTS.mix_loop_rate
    """Loop packets per second each mix sends to itself (lambda_M): the (n-1) alarm."""
    contacts: int = 3
    """Statistical disclosure: how many recipients the target sender writes to."""
    rounds: int = 2000
    """Statistical disclosure: observation rounds (of ``pull_interval`` seconds) at most."""

    def __post_init__(self) -> None:
        ints = {"clients": 1, "layers": 1, "width": 1, "providers": 0, "runs": 1, "targets": 1,
                "contacts": 1, "rounds": 1, "corrupt_providers": 0, "pull_batch": 1}
        for name, lo in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ParamsError(name, f"must be an integer >= {lo}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ParamsError("seed", "must be an integer >= 0")
        for name in ("client_rate", "loop_rate", "drop_rate", "mean_hop_delay", "link_latency",
                     "warmup", "mix_loop_rate"):
            if not getattr(self, name) >= 0:
                raise ParamsError(name, "must be >= 0")
        if not self.duration > 0:
            raise ParamsError("duration", "must be > 0 seconds")
        if not self.pull_interval > 0:
            raise ParamsError("pull_interval", "must be > 0 seconds")
        for name in ("message_rate", "provider_delay"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ParamsError(name, "must be >= 0")
        if self.corrupt_providers > self.providers:
            raise ParamsError("corrupt_providers", "cannot exceed providers")
        if not 0.0 <= self.corrupt_fraction <= 1.0:
            raise ParamsError("corrupt_fraction", "must be between 0 and 1")
        if self.client_rate + self.loop_rate + self.drop_rate <= 0:
            raise ParamsError("client_rate", "clients must send something")

    @property
    def provider_hold(self) -> float:
        """Mean delay a provider holds a packet for."""
        return self.mean_hop_delay if self.provider_delay is None else self.provider_delay

    @property
    def mixing_hops(self) -> int:
        """Pools a packet crosses with both sides observed: the entry provider and the layers."""
        return self.layers + (1 if self.providers else 0)

    def replace(self, **changes: Any) -> SimConfig:
        """A copy with some fields changed (validated again): how sweeps vary one parameter."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every parameter, for the ``parameters`` object of ``--json``."""
        return dataclasses.asdict(self)


def coerce(name: str, text: str) -> int | float | None:
    """Parse a sweep value for field ``name`` with that field's type."""
    kinds = {f.name: f.type for f in dataclasses.fields(SimConfig)}
    if name not in kinds:
        raise ParamsError(name, "unknown simulation parameter")
    if "None" in str(kinds[name]) and text.strip().lower() in ("none", "default"):
        return None
    try:
        return int(text) if kinds[name] == "int" else float(text)
    except ValueError:
        raise ParamsError(name, f"not a number: {text!r}") from None
