"""The network model: clients' three Poisson streams through providers and stratified layers.

Everything is drawn as whole arrays (one row per packet, one column per hop), not one Python
object per packet: the busy benchmark network sends ~300,000 packets a minute.

Path of every client packet, with providers: client -> its provider (a pool) -> one random mix
per layer -> exit provider (the recipient's for real packets, the sender's own for loops, a
random one for drops). Each mix holds a packet for an independent Exp(mean_hop_delay) delay, a
provider for Exp(provider_delay) (by default the same; 0 as our network is built); every link
adds a fixed ``link_latency``. The exit provider's own delay and the mailbox pull come after
the last row the observer can link to a packet, so they only add to latency. Without providers
the client sends straight into layer 1 and the last layer hands the packet to the recipient.

What the model adds when asked (each draws from its own generator, so a run without it is the
same, bit for bit, as before it existed):

* **payload stream** (``message_rate``): the ``client_rate`` stream is the Loopix payload stream;
  real messages arrive at ``message_rate`` into a queue and each slot sends the next one, or
  else drop cover;
* **mix loops** (``mix_loop_rate``): every mix and provider sends loops, Poisson, through every
  other layer and back to itself (``mixnode/view.py``'s ``loop_path``): a mix at layer l visits
  l+1..L, a provider (which relays at once), 1..l-1; a provider visits 1..L;
* **corrupt providers** (``corrupt_providers``): they reveal their links (entry side) and, for
  every delivery into them, the mailbox owner and whether it is drop cover (exit side);
* **pulls as built**: every ``pull_interval`` after a random phase a client fetches at most
  ``pull_batch`` items, oldest first; the rest wait (``latency_recipient``).

**Why one module of ~410 lines:** the whole traffic model (three streams, routes, delays, loops)
drawn as arrays in one pass, so that each column's meaning is stated once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from simulations.config import SimConfig
from simulations.observations import Kind, Observations, Role

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class NetworkRun:
    """One simulated run: the observer's rows and the ground truth per client packet."""

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
    """Send to pulled by the recipient (NaN for drops), batch limits included."""
    window: tuple[float, float]
    """Send times of the measurement window."""
    queue_wait: FloatArray | None = None
    """Payload stream only: seconds a real message waited for its slot (NaN for others)."""
    loop_first_row: IntArray | None = None
    """Mix loops: first row of each (rows follow the client packets'), its length in rows."""
    loop_links: int = 0

    @property
    def hops(self) -> int:
        """Links per client packet path (rows per packet)."""
        return int(self.last_row[0] - self.first_row[0] + 1) if self.first_row.size else 0

    @property
    def n_client_rows(self) -> int:
        return int(self.first_row.size * self.hops)


def tail_seconds(cfg: SimConfig) -> float:
    """Traffic simulated after the window so late targets still cross busy pools."""
    hold = max(cfg.mean_hop_delay, cfg.provider_hold)
    return (cfg.mixing_hops + 1) * cfg.link_latency + 12.0 * cfg.mixing_hops * hold


def node_ids(cfg: SimConfig) -> tuple[int, int, int]:
    """(first provider id, first mix id, node count): clients first, then providers, then mixes."""
    first_provider = cfg.clients
    first_mix = first_provider + cfg.providers
    return first_provider, first_mix, first_mix + cfg.layers * cfg.width


def simulate_network(cfg: SimConfig, rng: np.random.Generator) -> NetworkRun:
    """Draw one run of the network described by ``cfg``."""
    # Generators for the optional parts, spawned first: spawning does not move ``rng``.
    rng_payload, rng_loops, rng_bad = rng.spawn(3)
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
    queue_wait = None
    if cfg.message_rate is not None:
        kind, queue_wait = payload_stream(cfg, send, sender, kind, total_time=total_time,
                                           rng=rng_payload)

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

    if cfg.mean_hop_delay > 0 or (cfg.providers and cfg.provider_hold > 0):
        delays = rng.exponential(1.0, (n_pk, hops))
        scale = np.full(hops, cfg.mean_hop_delay)
        if cfg.providers:
            scale[0] = cfg.provider_hold
        delays *= scale
    else:
        delays = np.zeros((n_pk, hops))
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
    if cfg.corrupt_providers:
        corrupt[first_provider + rng_bad.choice(cfg.providers, cfg.corrupt_providers,
                                                replace=False)] = True
    layer = np.full(n_nodes, -1, dtype=np.int64)
    layer[first_provider:first_mix] = 0
    layer[first_mix:] = 1 + np.arange(n_mix) // cfg.width

    rows = np.arange(n_pk * n_links, dtype=np.int64).reshape(n_pk, n_links)
    next_row = rows + 1
    next_row[:, -1] = -1
    prev_row = rows - 1
    prev_row[:, 0] = -1
    parts: dict[str, list[npt.NDArray[Any]]] = {
        "t_dep": [t_dep.ravel()], "t_arr": [t_arr.ravel()], "src": [path[:, :-1].ravel()],
        "dst": [path[:, 1:].ravel()], "next_row": [next_row.ravel()],
        "prev_row": [prev_row.ravel()],
    }
    n_rows = n_pk * n_links
    flags = {"relay": [np.zeros(n_rows, dtype=bool)], "fresh": [np.zeros(n_rows, dtype=bool)],
             "absorbed": [np.zeros(n_rows, dtype=bool)]}
    loop_first = None
    loop_links = 0
    if cfg.mix_loop_rate > 0:
        loops = mix_loops(cfg, total_time, n_rows, rng_loops)
        if loops is not None:
            for name, value in loops.items():
                if name in parts:
                    parts[name].append(value)
                elif name in flags:
                    flags[name].append(value)
            loop_first = loops["first"]
            loop_links = int(loops["links"][0])
    # One part (no mix loops): the arrays as they are, not a copy of 10^6 rows each.
    obs_arrays = {name: value[0] if len(value) == 1 else np.concatenate(value)
                  for name, value in parts.items()}
    flag_arrays = {name: value[0] if len(value) == 1 else np.concatenate(value)
                   for name, value in flags.items()}
    total_rows = obs_arrays["t_dep"].size
    known_cover = None
    revealed = None
    if cfg.corrupt_providers:
        # What a corrupt exit provider learns of each delivery into it: the mailbox owner, and
        # whether it is drop cover (the drop mailbox is a fixed address).
        into = corrupt[obs_arrays["dst"]] & (role[obs_arrays["dst"]] == Role.PROVIDER) & (
            role[obs_arrays["src"]] == Role.MIX) & ~flag_arrays["relay"]
        known_cover = np.zeros(total_rows, dtype=bool)
        revealed = np.full(total_rows, -1, dtype=np.int64)
        last = rows[:, -1]
        hit = into[last]
        known_cover[last[hit & (kind == Kind.DROP)]] = True
        mail = hit & (recipient >= 0)
        revealed[last[mail]] = recipient[mail]
    home = np.full(n_nodes, -1, dtype=np.int64)
    if cfg.providers:
        home[: cfg.clients] = provider_of
    obs = Observations(
        t_dep=obs_arrays["t_dep"],
        t_arr=obs_arrays["t_arr"],
        src=obs_arrays["src"],
        dst=obs_arrays["dst"],
        node_role=role,
        corrupt=corrupt,
        next_row=obs_arrays["next_row"],
        prev_row=obs_arrays["prev_row"],
        node_layer=layer,
        relay=flag_arrays["relay"] if loop_first is not None else None,
        fresh=flag_arrays["fresh"] if loop_first is not None else None,
        absorbed=flag_arrays["absorbed"] if loop_first is not None else None,
        known_cover=known_cover,
        revealed_recipient=revealed,
        home_provider=home,
    )

    stored = t_arr[:, -1]
    if cfg.providers and cfg.provider_hold > 0:
        stored = stored + rng.exponential(cfg.provider_hold, n_pk)
    lat_mailbox = stored - send
    phase = rng.uniform(0.0, cfg.pull_interval, cfg.clients)
    if cfg.providers:
        pulled = pull_times(cfg, stored, recipient, phase)
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
        queue_wait=queue_wait,
        loop_first_row=loop_first,
        loop_links=loop_links,
    )


def payload_stream(cfg: SimConfig, send: FloatArray, sender: IntArray, kind: IntArray, *,
                   total_time: float, rng: np.random.Generator) -> tuple[IntArray, FloatArray]:
    """Fill each client's payload slots (its ``REAL`` packets) from a FIFO queue of messages
    arriving at ``message_rate``; empty slots become drop cover. Returns the new kinds and each
    real packet's wait in the queue.

    The queue before slot k holds ``Q_{k-1} + a_k`` messages (``a_k``: arrivals since the last
    slot), and ``Q_k = max(Q_{k-1} + a_k - 1, 0)``: Lindley's recursion, solved with a running
    minimum of the cumulative sums, so every client's queue is a few array operations."""
    assert cfg.message_rate is not None
    kind = kind.copy()
    wait = np.full(kind.size, np.nan)
    slots = np.flatnonzero(kind == Kind.REAL)
    by_client = slots[np.argsort(sender[slots], kind="stable")]
    bounds = np.searchsorted(sender[by_client], np.arange(cfg.clients + 1))
    n_msgs = rng.poisson(cfg.message_rate * total_time, cfg.clients)
    for c in range(cfg.clients):
        mine = by_client[bounds[c]: bounds[c + 1]]
        if mine.size == 0:
            continue
        t_slot = send[mine]
        arrivals = np.sort(rng.uniform(0.0, total_time, int(n_msgs[c])))
        a = np.diff(np.searchsorted(arrivals, t_slot, side="right"), prepend=0)
        step = np.cumsum(a - 1)
        after = step - np.minimum(np.minimum.accumulate(step), 0)
        before = np.concatenate([[0], after[:-1]])
        carries = before + a > 0
        kind[mine[~carries]] = Kind.DROP
        sent = mine[carries]
        # FIFO: the m-th real slot carries the m-th message.
        wait[sent] = send[sent] - arrivals[: sent.size]
    return kind, wait


def mix_loops(cfg: SimConfig, total_time: float, row0: int,
              rng: np.random.Generator) -> dict[str, IntArray] | None:
    """Rows of every mix's and provider's loops, as ``loop_path`` builds them: a mix at layer l
    visits one random mix of each of layers l+1..L, a random provider (which relays at once:
    its hop delay is 0), layers 1..l-1, and comes back; a provider visits layers 1..L. Each mix
    on the way holds the loop for Exp(mean_hop_delay). The origin sends it at once and consumes
    it on return, so its first row is no departure of the origin's pool and its last no arrival.
    """
    first_provider, first_mix, _ = node_ids(cfg)
    origins: list[int] = []
    plans: list[list[int]] = []  # per origin: the visited layers, 0 for a provider
    for layer in range(1, cfg.layers + 1):
        visit = list(range(layer + 1, cfg.layers + 1)) + ([0] if cfg.providers else []) + \
            list(range(1, layer))
        for j in range(cfg.width):
            origins.append(first_mix + (layer - 1) * cfg.width + j)
            plans.append(visit)
    for p in range(cfg.providers):
        origins.append(first_provider + p)
        plans.append(list(range(1, cfg.layers + 1)))
    if not plans or not plans[0]:
        return None  # a single mix and no provider: a loop would go nowhere
    m = len(plans[0])
    counts = rng.poisson(cfg.mix_loop_rate * total_time, len(origins))
    n = int(counts.sum())
    if n == 0:
        return None
    origin = np.repeat(np.array(origins, dtype=np.int64), counts)
    plan = np.repeat(np.array(plans, dtype=np.int64), counts, axis=0)
    t0 = rng.uniform(0.0, total_time, n)
    hops = np.where(plan > 0,
                    first_mix + (plan - 1) * cfg.width + rng.integers(0, cfg.width, (n, m)),
                    first_provider + rng.integers(0, max(cfg.providers, 1), (n, m)))
    nodes = np.concatenate([origin[:, None], hops, origin[:, None]], axis=1)
    hold = np.where(plan > 0, 1.0, 0.0) * (rng.exponential(cfg.mean_hop_delay, (n, m))
                                           if cfg.mean_hop_delay > 0 else 0.0)
    links = m + 1
    t_dep = np.empty((n, links))
    t_arr = np.empty((n, links))
    t_dep[:, 0] = t0
    t_arr[:, 0] = t0 + cfg.link_latency
    for k in range(1, links):
        t_dep[:, k] = t_arr[:, k - 1] + hold[:, k - 1]
        t_arr[:, k] = t_dep[:, k] + cfg.link_latency
    rows = row0 + np.arange(n * links, dtype=np.int64).reshape(n, links)
    nxt = rows + 1
    nxt[:, -1] = -1
    prv = rows - 1
    prv[:, 0] = -1
    fresh = np.zeros((n, links), dtype=bool)
    fresh[:, 0] = True
    absorbed = np.zeros((n, links), dtype=bool)
    absorbed[:, -1] = True
    relay = np.zeros((n, links), dtype=bool)
    relay[:, :-1] = plan == 0  # the row into a relaying provider
    return {
        "t_dep": t_dep.ravel(), "t_arr": t_arr.ravel(), "src": nodes[:, :-1].ravel(),
        "dst": nodes[:, 1:].ravel(), "next_row": nxt.ravel(), "prev_row": prv.ravel(),
        "fresh": fresh.ravel(), "absorbed": absorbed.ravel(), "relay": relay.ravel(),
        "first": rows[:, 0], "links": np.array([links]),
    }


def pull_times(cfg: SimConfig, stored: FloatArray, recipient: IntArray,
               phase: FloatArray) -> FloatArray:
    """When each stored item is pulled: client c pulls at ``phase[c] + k * pull_interval`` and
    gets at most ``pull_batch`` items, oldest first (``mixnode/runtime.py``'s pull_response).
    Items per pull follow Lindley's recursion on the pull counts; NaN for drops."""
    out = np.full(stored.size, np.nan)
    mine_all = np.flatnonzero(recipient >= 0)
    order = mine_all[np.lexsort((stored[mine_all], recipient[mine_all]))]
    bounds = np.searchsorted(recipient[order], np.arange(cfg.clients + 1))
    step = cfg.pull_interval
    for c in range(cfg.clients):
        items = order[bounds[c]: bounds[c + 1]]
        if items.size == 0:
            continue
        t = stored[items]
        # Index of the first pull at or after each item.
        first = np.ceil((t - phase[c]) / step).astype(np.int64)
        first = np.maximum(first, 0)
        n_pulls = int(first.max()) + items.size // cfg.pull_batch + 2
        arrivals = np.bincount(first, minlength=n_pulls)
        cum_in = np.cumsum(arrivals)
        # Served by pull k: Lindley, Q_k = max(Q_{k-1} + arrivals_k - batch, 0).
        s = np.cumsum(arrivals - cfg.pull_batch)
        backlog = s - np.minimum(np.minimum.accumulate(s), 0)
        served = cum_in - backlog
        # The m-th item (oldest first) leaves at the first pull with served >= m + 1.
        k = np.searchsorted(served, np.arange(1, items.size + 1), side="left")
        out[items] = phase[c] + k * step
    return out


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
