"""The network model: clients' three Poisson streams through providers and stratified layers.

Everything is drawn as whole arrays (one row per packet, one column per hop), not one Python
object per packet: the busy benchmark network sends ~300,000 packets a minute.

Path of every packet, with providers: client -> its provider (a pool) -> one random mix per layer
-> exit provider (the recipient's for real packets, the sender's own for loops, a random one for
drops). Each pool holds a packet for an independent Exp(mean_hop_delay) delay; every link adds a
fixed ``link_latency``. The exit provider's own delay and the mailbox pull come after the last
row the observer can link to a packet, so they only add to latency. Without providers the client
sends straight into layer 1 and the last layer hands the packet to the recipient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simulations.config import SimConfig
from simulations.observations import Kind, Observations, Role

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class NetworkRun:
    """One simulated run: the observer's rows and the ground truth per packet."""

    config: SimConfig
    obs: Observations
    send_time: FloatArray
    sender: IntArray
    recipient: IntArray
    """Recipient client, -1 for drops."""
    kind: IntArray
    first_row: IntArray
    last_row: IntArray
    latency_mailbox: FloatArray
    """Send to stored in the exit provider's mailbox (includes that provider's delay)."""
    latency_recipient: FloatArray
    """Send to pulled by the recipient (NaN for drops)."""
    window: tuple[float, float]
    """Send times of the measurement window."""

    @property
    def hops(self) -> int:
        """Links per packet path (rows per packet)."""
        return int(self.last_row[0] - self.first_row[0] + 1) if self.first_row.size else 0


def tail_seconds(cfg: SimConfig) -> float:
    """Traffic simulated after the window so late targets still cross busy pools."""
    return (cfg.mixing_hops + 1) * cfg.link_latency + 12.0 * cfg.mixing_hops * cfg.mean_hop_delay


def node_ids(cfg: SimConfig) -> tuple[int, int, int]:
    """(first provider id, first mix id, node count): clients first, then providers, then mixes."""
    first_provider = cfg.clients
    first_mix = first_provider + cfg.providers
    return first_provider, first_mix, first_mix + cfg.layers * cfg.width


def simulate_network(cfg: SimConfig, rng: np.random.Generator) -> NetworkRun:
    """Draw one run of the network described by ``cfg``."""
    total_time = cfg.warmup + cfg.duration + tail_seconds(cfg)
    first_provider, first_mix, n_nodes = node_ids(cfg)
    rates = np.array([cfg.client_rate, cfg.loop_rate, cfg.drop_rate])
    counts = rng.poisson(rates * cfg.clients * total_time)
    kind = np.repeat(np.arange(3, dtype=np.int64), counts)
    n_pk = kind.size
    # A superposition of independent Poisson streams is Poisson; each point belongs to a
    # uniformly chosen client, which is the same as every client running its own streams.
    send = rng.uniform(0.0, total_time, n_pk)
    sender = rng.integers(0, cfg.clients, n_pk)
    order = np.argsort(send, kind="stable")
    send, sender, kind = send[order], sender[order], kind[order]

    recipient = np.where(kind == Kind.LOOP, sender, -1)
    real = kind == Kind.REAL
    if cfg.clients > 1:
        other = rng.integers(0, cfg.clients - 1, n_pk)
        other = other + (other >= sender)
    else:
        other = sender.copy()
    recipient = np.where(real, other, recipient)

    provider_of = first_provider + np.arange(cfg.clients) % max(cfg.providers, 1)
    mixes = first_mix + np.arange(cfg.layers)[None, :] * cfg.width + rng.integers(
        0, cfg.width, (n_pk, cfg.layers)
    )
    columns: list[IntArray] = [sender]
    if cfg.providers:
        columns.append(provider_of[sender])
    columns.extend(mixes[:, j] for j in range(cfg.layers))
    if cfg.providers:
        exit_node = np.where(
            recipient >= 0,
            provider_of[np.maximum(recipient, 0)],
            first_provider + rng.integers(0, cfg.providers, n_pk),
        )
    else:
        exit_node = np.where(recipient >= 0, recipient, rng.integers(0, cfg.clients, n_pk))
    columns.append(exit_node)
    path = np.stack(columns, axis=1)
    hops = cfg.mixing_hops
    n_links = hops + 1

    delays = rng.exponential(cfg.mean_hop_delay, (n_pk, hops)) if cfg.mean_hop_delay > 0 \
        else np.zeros((n_pk, hops))
    # Hop by hop, so that a departure is computed from the very float of its arrival: with zero
    # delay they must compare equal, or a packet could leave a pool before it entered.
    t_dep = np.empty((n_pk, n_links))
    t_arr = np.empty((n_pk, n_links))
    t_dep[:, 0] = send
    t_arr[:, 0] = send + cfg.link_latency
    for k in range(1, n_links):
        t_dep[:, k] = t_arr[:, k - 1] + delays[:, k - 1]
        t_arr[:, k] = t_dep[:, k] + cfg.link_latency

    role = np.full(n_nodes, Role.MIX, dtype=np.int64)
    role[: cfg.clients] = Role.CLIENT
    role[first_provider:first_mix] = Role.PROVIDER
    corrupt = np.zeros(n_nodes, dtype=bool)
    n_mix = cfg.layers * cfg.width
    n_bad = round(cfg.corrupt_fraction * n_mix)
    if n_bad:
        corrupt[first_mix + rng.choice(n_mix, n_bad, replace=False)] = True

    rows = np.arange(n_pk * n_links, dtype=np.int64).reshape(n_pk, n_links)
    next_row = rows + 1
    next_row[:, -1] = -1
    prev_row = rows - 1
    prev_row[:, 0] = -1
    layer = np.full(n_nodes, -1, dtype=np.int64)
    layer[first_provider:first_mix] = 0
    layer[first_mix:] = 1 + np.arange(cfg.layers * cfg.width) // cfg.width
    obs = Observations(
        t_dep=t_dep.ravel(),
        t_arr=t_arr.ravel(),
        src=path[:, :-1].ravel(),
        dst=path[:, 1:].ravel(),
        node_role=role,
        corrupt=corrupt,
        next_row=next_row.ravel(),
        prev_row=prev_row.ravel(),
        node_layer=layer,
    )

    stored = t_arr[:, -1]
    if cfg.providers and cfg.mean_hop_delay > 0:
        stored = stored + rng.exponential(cfg.mean_hop_delay, n_pk)
    lat_mailbox = stored - send
    phase = rng.uniform(0.0, cfg.pull_interval, cfg.clients)
    if cfg.providers:
        rphase = phase[np.maximum(recipient, 0)]
        pulled = rphase + np.ceil((stored - rphase) / cfg.pull_interval) * cfg.pull_interval
        lat_recipient = np.where(recipient >= 0, pulled + cfg.link_latency - send, np.nan)
    else:
        lat_recipient = np.where(recipient >= 0, lat_mailbox, np.nan)
    return NetworkRun(
        config=cfg,
        obs=obs,
        send_time=send,
        sender=sender,
        recipient=recipient,
        kind=kind,
        first_row=rows[:, 0],
        last_row=rows[:, -1],
        latency_mailbox=lat_mailbox,
        latency_recipient=lat_recipient,
        window=(cfg.warmup, cfg.warmup + cfg.duration),
    )


def pick_targets(run: NetworkRun, count: int, rng: np.random.Generator,
                 senders: tuple[int, ...] | None = None) -> IntArray:
    """Real packets sent inside the window (optionally only by ``senders``), chosen at random."""
    lo, hi = run.window
    ok = (run.kind == Kind.REAL) & (run.send_time >= lo) & (run.send_time < hi)
    if senders is not None:
        ok &= np.isin(run.sender, np.array(senders))
    idx = np.flatnonzero(ok)
    if idx.size > count:
        idx = np.sort(rng.choice(idx, count, replace=False))
    return idx
