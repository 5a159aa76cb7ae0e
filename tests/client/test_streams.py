"""The three Poisson streams over 10^4 virtual seconds, driven by the core's own
``next_deadline()`` / ``poll(now)`` (pure sans-IO time; no trio needed).

Statistical tolerances: a Poisson count over T seconds at rate r has standard deviation
sqrt(r*T), so each count must lie within 4 standard deviations of r*T (a correct implementation
fails one such check with probability ~6e-5; the seeds are fixed, so outcomes are
deterministic). Gaps are checked against Exp(rate) with a Kolmogorov-Smirnov test at p > 0.001;
a negative control shows the same test rejects the fixed-interval pull times.

Packets here come from a stand-in builder (no public-key work): the subject is *when* packets
leave. The strongest check: for one seed the send times and streams are identical whether the
user is idle or keeps the queue full, because timing draws never share a generator with content.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import pytest
from scipy import stats

from client.actions import PacketKind, SendControl, SendPacket
from client.config import ClientConfig
from client.core import ClientCore
from client.errors import QueueFull
from client.transport.streams import StreamKind
from mixcore.control import ControlKind
from mixcore.poisson import PoissonStream

DURATION = 10_000.0
SEED = 20261126


@dataclass
class Run:
    sends: list[tuple[float, StreamKind]] = field(default_factory=list)
    kinds: list[PacketKind] = field(default_factory=list)
    pulls: list[float] = field(default_factory=list)
    queue_full: int = 0
    core: ClientCore | None = None


def drive(kit, *, busy: bool, seed: int = SEED, duration: float = DURATION) -> Run:
    consensus = timing_consensus(kit)
    providers = [d.node_id for d in consensus.providers()]
    core = ClientCore(
        consensus,
        provider=providers[0],
        mailbox=b"A" * 16,
        rng=random.Random(seed),
        now=kit.start,
        sphinx=kit.fake_sphinx(),
        config=ClientConfig(retry_budget=600.0),  # nothing acks here: let budgets run out
    )
    run = Run(core=core)
    end = kit.start + duration
    user = random.Random(seed + 1)
    while (t := core.next_deadline()) <= end:
        if busy and (not run.pulls or run.pulls[-1] != t):
            # a user who keeps typing, about once per pull: 3 fragments a second, more than
            # the payload stream carries, so the queue stays full (QueueFull)
            try:
                core.send_message(providers[1], b"B" * 16, user.randbytes(3000), t,
                                  seal_key=bytes(range(32)))
            except QueueFull:
                run.queue_full += 1
        for action in core.poll(t):
            if isinstance(action, SendPacket):
                run.sends.append((t, action.stream))
                run.kinds.append(action.kind)
            elif isinstance(action, SendControl) and action.kind is ControlKind.PULL_REQUEST:
                run.pulls.append(t)
    return run


_TIMING: dict[str, object] = {}


def timing_consensus(kit):
    """The test network with the default client rates (2 + 0.5 + 0.5 packets/s)."""
    if "doc" not in _TIMING:
        params = kit.consensus.params.replace(payload_rate=2.0, loop_rate=0.5, drop_rate=0.5)
        _TIMING["doc"] = kit.make_consensus(kit.nodes, params)
    return _TIMING["doc"]


@pytest.fixture(scope="module")
def idle(kit) -> Run:
    return drive(kit, busy=False)


@pytest.fixture(scope="module")
def busy(kit) -> Run:
    return drive(kit, busy=True)


def rates(kit) -> dict[StreamKind, float]:
    p = timing_consensus(kit).params
    return {
        StreamKind.PAYLOAD: p.payload_rate,
        StreamKind.LOOP: p.loop_rate,
        StreamKind.DROP: p.drop_rate,
    }


def within_poisson_tolerance(count: int, rate: float) -> bool:
    expected = rate * DURATION
    return abs(count - expected) <= 4 * math.sqrt(expected)


def test_each_stream_rate_matches_its_parameter(kit, idle: Run, busy: Run) -> None:
    for run in (idle, busy):
        for kind, rate in rates(kit).items():
            count = sum(1 for _, s in run.sends if s is kind)
            assert within_poisson_tolerance(count, rate), (kind, count, rate * DURATION)


def test_inter_send_gaps_are_exponential(kit, idle: Run, busy: Run) -> None:
    for run in (idle, busy):
        for kind, rate in rates(kit).items():
            times = np.array([t for t, s in run.sends if s is kind])
            gaps = np.diff(times)
            assert len(gaps) > 1000
            result = stats.kstest(gaps, "expon", args=(0, 1 / rate))
            assert result.pvalue > 1e-3, (kind, result)
        # the union the observer sees is Poisson at the total rate
        total = sum(rates(kit).values())
        gaps = np.diff(np.array([t for t, _ in run.sends]))
        assert stats.kstest(gaps, "expon", args=(0, 1 / total)).pvalue > 1e-3


def test_the_ks_test_has_power(kit, idle: Run) -> None:
    # negative control: fixed-interval pulls with the same mean are clearly not exponential
    gaps = np.diff(np.array(idle.pulls))
    assert np.allclose(gaps, timing_consensus(kit).params.pull_interval)
    assert stats.kstest(gaps, "expon", args=(0, gaps.mean())).pvalue < 1e-6


def test_busy_and_idle_users_send_at_identical_times(idle: Run, busy: Run) -> None:
    # the busy user really was busy: almost every payload slot carried a real fragment
    pairs = zip(busy.sends, busy.kinds, strict=True)
    payload = [k for (_, s), k in pairs if s is StreamKind.PAYLOAD]
    assert payload.count(PacketKind.REAL) > 0.95 * len(payload)
    assert busy.queue_full > 0
    assert PacketKind.REAL not in idle.kinds
    # ...and yet the observable schedule is the same, send for send
    assert len(busy.sends) == len(idle.sends)
    assert busy.sends == idle.sends
    assert busy.pulls == idle.pulls


def test_a_different_seed_gives_a_different_schedule(kit, idle: Run) -> None:
    # guards the identity check above against a schedule that ignores the rng entirely
    other = drive(kit, busy=False, seed=SEED + 7, duration=100.0)
    assert other.sends[:50] != idle.sends[:50]


def test_busy_client_memory_stays_bounded(busy: Run) -> None:
    assert busy.core is not None
    footprint = busy.core.memory_footprint()
    config = busy.core.config
    assert footprint["queue"] <= config.max_pending_fragments
    assert footprint["surbs"] <= config.max_pending_fragments * config.surbs_per_fragment
    assert footprint["timers"] <= config.max_pending_fragments * config.surbs_per_fragment
    assert footprint["retired_surbs"] <= config.max_retired_surbs
    assert footprint["finished_messages"] <= config.max_finished_messages
    statistics = busy.core.statistics()
    assert statistics.messages_undeliverable > 0  # nothing acks: budgets run out
    assert statistics.retransmissions > 0


def test_zero_rate_stream_never_fires() -> None:
    stream = PoissonStream(0.0, random.Random(1), 5.0)
    assert stream.next_time == math.inf
    stream.advance()
    assert stream.next_time == math.inf
    stream.set_rate(2.0, 10.0)
    assert 10.0 < stream.next_time < math.inf
