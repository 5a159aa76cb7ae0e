"""A mix node's or provider's configuration file (JSON), with defaults derived from the params.

Everything an operator sets lives in one file next to the node's keys; a bad value fails at load
with the field named, never later in the middle of traffic.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mixcore.consensus import AuthorityRef, AuthoritySet
from mixcore.descriptor import check_host, check_name
from mixcore.errors import DescriptorError, MixnetError, ParamsError
from mixcore.files import write_atomic
from mixcore.params import NetworkParams
from mixcore.process import connection_budget
from mixcore.topology import NodeRole

CONFIG_NAME = "node.json"
MAX_WORKERS = 256


class ConfigError(MixnetError):
    """The node configuration file is missing, malformed or inconsistent."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str
    role: NodeRole
    data_dir: Path
    listen_host: str
    listen_port: int
    authorities: tuple[AuthorityRef, ...]
    threshold: int
    params: NetworkParams
    public_host: str = ""
    """Host written into the descriptor; defaults to ``listen_host``."""
    key_grace: float = 0.0
    """Seconds a previous epoch's key keeps working (0: a quarter epoch, at most 600 s)."""
    max_hop_delay: float = 0.0
    """Longest per-hop delay accepted (0: half the key grace)."""
    pool_capacity: int = 100_000
    peak_rate: float = 1000.0
    """Packets/s the replay filter is sized for, over an epoch plus grace."""
    replay_fp_rate: float = 1e-6
    mailbox_ttl: float = 7 * 24 * 3600.0
    max_items_per_mailbox: int = 10_000
    link_backlog: int = 2000
    handshake_timeout: float = 10.0
    stats_interval: float = 1.0
    replay_save_interval: float = 30.0
    metrics_port: int = 0
    """Serve Prometheus metrics on 127.0.0.1:PORT when non-zero."""
    workers: int | None = None
    """Worker processes that peel Sphinx layers (None: the machine's cores minus one, at least
    one; 0: peel in the node process itself, as tests and small testnets may)."""
    hop_queue: int = 4096
    """Packets that may wait for a worker; more are dropped and counted (``hop_queue_full``)."""
    max_connections: int = 0
    """Inbound connections held at once (0: half the descriptor limit, at most 4096)."""
    max_connections_per_source: int = 64
    """Inbound connections from one address (IPv6: one /64); consensus nodes are exempt."""
    peer_reserve: int = 64
    """The last places of ``max_connections``, kept for consensus nodes' addresses."""
    idle_timeout: float = 120.0
    """A link that carries nothing for this long is closed (clients and nodes send cover
    traffic all the time, so only a dead or hostile peer goes quiet)."""
    client_packet_rate: float = 0.0
    """Packets/s one client link may send (0: 5x the params' client send rates)."""
    client_packet_burst: float = 0.0
    """Packets a client link may send at once (0: 10 s at ``client_packet_rate``)."""
    mailbox_item_rate: float = 10.0
    """Items/s stored into one mailbox, sustained; more are refused (the senders retry)."""
    mailbox_item_burst: float = 600.0
    max_mailboxes: int = 100_000
    mailbox_idle_ttl: float = 0.0
    """A mailbox whose owner has not connected for this long, and that holds nothing, is
    freed (0: ``mailbox_ttl``; never shorter)."""
    registrations_per_source: int = 8
    """New mailboxes per address (IPv6: per /64) per ``registration_window``."""
    registrations_per_window: int = 0
    """New mailboxes in all per window (0: derived so that a flood can never fill
    ``max_mailboxes`` before idle ones are freed: max_mailboxes * window / (2 * idle ttl))."""
    registration_window: float = 3600.0
    trace_path: Path | None = None
    """Record every link event (time, from, to, size) to this file, for the local testnet's
    traffic analysis (``mixnet simulate trace``). It writes exactly the metadata a mix must
    never keep: never set it on a node of a real network (``mixnet mixnode run --trace``)."""

    def __post_init__(self) -> None:
        try:
            check_name(self.name)
            check_host(self.listen_host)
            if self.public_host:
                check_host(self.public_host)
        except DescriptorError as exc:
            raise ConfigError(str(exc)) from None
        if not 0 <= self.listen_port <= 65535:
            raise ConfigError("listen_port must be between 0 and 65535")
        if not self.authorities:
            raise ConfigError("at least one authority is needed")
        try:
            AuthoritySet(tuple(a.identity_key for a in self.authorities), self.threshold)
        except ParamsError as exc:
            raise ConfigError(str(exc)) from None
        grace = self.effective_grace
        if not 0 < grace < self.params.epoch_length:
            raise ConfigError("key_grace must be > 0 and shorter than an epoch")
        if not 0 < self.effective_max_hop_delay <= grace:
            raise ConfigError("max_hop_delay must be > 0 and at most the key grace")
        if self.workers is not None and (
            isinstance(self.workers, bool) or not isinstance(self.workers, int)
            or not 0 <= self.workers <= MAX_WORKERS
        ):
            raise ConfigError(f"workers must be null or an integer in 0..{MAX_WORKERS}")
        for name in (
            "pool_capacity", "max_items_per_mailbox", "link_backlog", "hop_queue",
            "max_connections_per_source", "max_mailboxes", "registrations_per_source",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in ("max_connections", "peer_reserve", "registrations_per_window"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        for name in (
            "peak_rate", "mailbox_ttl", "handshake_timeout", "stats_interval", "idle_timeout",
            "mailbox_item_rate", "mailbox_item_burst", "registration_window",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0")
        for name in ("client_packet_rate", "client_packet_burst", "mailbox_idle_ttl"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        if self.mailbox_idle_ttl and self.mailbox_idle_ttl < self.mailbox_ttl:
            raise ConfigError("mailbox_idle_ttl must be at least mailbox_ttl")
        if not 0 < self.replay_fp_rate < 1:
            raise ConfigError("replay_fp_rate must be in (0, 1)")

    @property
    def effective_grace(self) -> float:
        return self.key_grace or self.params.key_grace

    @property
    def effective_max_hop_delay(self) -> float:
        return self.max_hop_delay or self.params.max_hop_delay

    def connection_limit(self, nofile: int) -> int:
        """``max_connections``, or the budget for ``nofile`` descriptors when it is 0."""
        return self.max_connections or connection_budget(nofile)

    @property
    def effective_client_packet_rate(self) -> float:
        p = self.params
        return self.client_packet_rate or 5.0 * (p.payload_rate + p.loop_rate + p.drop_rate)

    @property
    def effective_client_packet_burst(self) -> float:
        return self.client_packet_burst or 10.0 * self.effective_client_packet_rate

    @property
    def effective_mailbox_idle_ttl(self) -> float:
        return self.mailbox_idle_ttl or self.mailbox_ttl

    @property
    def effective_registrations_per_window(self) -> int:
        if self.registrations_per_window:
            return self.registrations_per_window
        derived = self.max_mailboxes * self.registration_window
        return max(16, int(derived / (2 * self.effective_mailbox_idle_ttl)))

    @property
    def effective_workers(self) -> int:
        """Hop worker processes to run: ``workers``, or the cores minus one (at least one)."""
        if self.workers is not None:
            return self.workers
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        return max(1, cores - 1)

    @property
    def advertised_host(self) -> str:
        return self.public_host or self.listen_host

    @property
    def replay_capacity(self) -> int:
        window = self.params.epoch_length + 2 * self.effective_grace
        return max(10_000, int(self.peak_rate * window))

    @property
    def authority_set(self) -> AuthoritySet:
        return AuthoritySet(tuple(a.identity_key for a in self.authorities), self.threshold)

    # -- files ------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "role":
                value = value.value
            elif f.name == "data_dir" or (f.name == "trace_path" and value is not None):
                value = str(value)
            elif f.name == "authorities":
                value = [a.to_json() for a in value]
            elif f.name == "params":
                value = value.to_dict()
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], *, base: Path | None = None) -> NodeConfig:
        if not isinstance(data, dict):
            raise ConfigError("config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field {unknown[0]!r}")
        try:
            values = dict(data)
            values["role"] = NodeRole(data["role"])
            data_dir = Path(data["data_dir"])
            if not data_dir.is_absolute() and base is not None:
                data_dir = base / data_dir
            values["data_dir"] = data_dir
            if data.get("trace_path") is not None:
                trace = Path(data["trace_path"])
                if not trace.is_absolute() and base is not None:
                    trace = base / trace
                values["trace_path"] = trace
            values["authorities"] = tuple(AuthorityRef.from_json(a) for a in data["authorities"])
            values["params"] = NetworkParams.from_dict(data["params"])
            return cls(**values)
        except ConfigError:
            raise
        except ParamsError as exc:
            raise ConfigError(str(exc)) from None
        except KeyError as exc:
            raise ConfigError(f"missing config field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"malformed config: {exc}") from None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(self.to_json(), indent=2) + "\n").encode())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NodeConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        return cls.from_json(data, base=path.parent)
