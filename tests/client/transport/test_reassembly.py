"""Reassembly: any order, duplicates dropped, exactly-once delivery, expiry, bounded memory.
Hypothesis drives the state machine with interleaved, shuffled, duplicated fragments of several
messages plus junk, and checks it against a simple model."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from client.fragments import Fragment, new_message_id, split_message
from client.transport.reassembly import Outcome, Reassembler

SIZE = 40  # 17 bytes per chunk: small fragments make many of them


def reassembler(**overrides) -> Reassembler:
    options = {
        "max_fragments": 64,
        "max_partial_messages": 16,
        "max_partial_bytes": 1 << 20,
        "partial_ttl": 100.0,
        "delivered_ttl": 1000.0,
        "max_delivered_ids": 1000,
    }
    options.update(overrides)
    return Reassembler(**options)


def test_out_of_order_with_duplicates_delivers_once() -> None:
    data = bytes(range(200))
    fragments = list(split_message(data, SIZE, 64, new_message_id()))
    stream = fragments + fragments[::2]
    random.Random(3).shuffle(stream)
    r = reassembler()
    outcomes = [r.add(f, 1.0) for f in stream]
    complete = [o for o in outcomes if o.outcome is Outcome.COMPLETE]
    assert len(complete) == 1
    assert complete[0].data == data
    late = [o.outcome for o in outcomes[outcomes.index(complete[0]) + 1 :]]
    assert set(late) <= {Outcome.ALREADY_DELIVERED}
    before = [o.outcome for o in outcomes[: outcomes.index(complete[0])]]
    assert set(before) <= {Outcome.PARTIAL, Outcome.DUPLICATE}
    assert r.partial_messages == 0 and r.partial_bytes == 0


def test_inconsistent_and_oversized_counts_are_dropped() -> None:
    r = reassembler(max_fragments=4)
    mid = new_message_id()
    assert r.add(Fragment(mid, 0, 3, b"a"), 0).outcome is Outcome.PARTIAL
    assert r.add(Fragment(mid, 1, 4, b"b"), 0).outcome is Outcome.INCONSISTENT
    assert r.add(Fragment(new_message_id(), 0, 5, b"c"), 0).outcome is Outcome.TOO_MANY_FRAGMENTS


def test_incomplete_messages_expire() -> None:
    r = reassembler(partial_ttl=10.0, delivered_ttl=20.0)
    mid = new_message_id()
    r.add(Fragment(mid, 0, 2, b"a"), 0.0)
    assert r.next_expiry() == 10.0
    assert r.expire(9.9) == 0
    assert r.expire(10.0) == 1
    assert r.partial_messages == 0 and r.partial_bytes == 0
    # the late second half starts a new partial message, which expires in turn
    assert r.add(Fragment(mid, 1, 2, b"b"), 11.0).outcome is Outcome.PARTIAL
    assert r.expire(21.0) == 1


def test_delivered_ids_are_forgotten_after_their_ttl() -> None:
    r = reassembler(partial_ttl=10.0, delivered_ttl=20.0)
    fragment = Fragment(new_message_id(), 0, 1, b"x")
    assert r.add(fragment, 0.0).outcome is Outcome.COMPLETE
    assert r.add(fragment, 19.0).outcome is Outcome.ALREADY_DELIVERED
    r.expire(20.0)
    assert r.remembered_ids == 0


def test_flood_of_partials_evicts_the_oldest_and_stays_bounded() -> None:
    r = reassembler(max_partial_messages=8, max_partial_bytes=100)
    first = new_message_id()
    r.add(Fragment(first, 0, 2, b"x" * 10), 0.0)
    for i in range(100):
        r.add(Fragment(new_message_id(), 0, 2, b"y" * 10), float(i))
        assert r.partial_messages <= 8
        assert r.partial_bytes <= 100
    assert r.evicted == 101 - 8
    # the first was evicted: its second half does not complete anything
    assert r.add(Fragment(first, 1, 2, b"z"), 200.0).outcome is Outcome.PARTIAL


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="delivered_ttl"):
        reassembler(partial_ttl=10.0, delivered_ttl=5.0)


messages = st.lists(st.binary(max_size=120), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(messages, st.randoms(use_true_random=False), st.integers(0, 3))
def test_every_message_exactly_once_in_any_order(
    payloads: list[bytes], rnd: random.Random, copies: int
) -> None:
    split = [split_message(p, SIZE, 64, new_message_id()) for p in payloads]
    stream = [f for fragments in split for f in fragments]
    stream += [rnd.choice(stream) for _ in range(copies * len(stream))]
    rnd.shuffle(stream)
    r = reassembler()
    delivered: dict[bytes, bytes] = {}
    for fragment in stream:
        result = r.add(fragment, 0.0)
        if result.outcome is Outcome.COMPLETE:
            assert fragment.message_id not in delivered
            delivered[fragment.message_id] = result.data  # type: ignore[assignment]
    assert delivered == {f[0].message_id: p for f, p in zip(split, payloads, strict=True)}
    assert r.partial_messages == 0 and r.partial_bytes == 0


class ReassemblyMachine(RuleBasedStateMachine):
    """Fragments of a few messages arrive in any order, some twice, with junk and time passing;
    the model: a message is delivered once, exactly when its last missing fragment arrives
    before its partial state expires."""

    def __init__(self) -> None:
        super().__init__()
        self.r = reassembler(partial_ttl=50.0, delivered_ttl=500.0, max_fragments=8)
        self.now = 0.0
        self.pending: list[Fragment] = []
        self.payloads: dict[bytes, bytes] = {}
        self.delivered: set[bytes] = set()

    @rule(data=st.binary(max_size=100))
    def new_message(self, data: bytes) -> None:
        fragments = split_message(data, SIZE, 64, new_message_id())
        if len(fragments) <= 8:
            self.payloads[fragments[0].message_id] = data
            self.pending.extend(fragments)

    @precondition(lambda self: self.pending)
    @rule(pick=st.integers(0, 10**6), keep=st.booleans())
    def arrive(self, pick: int, keep: bool) -> None:
        fragment = self.pending[pick % len(self.pending)]
        if not keep:  # kept ones may arrive again: duplicates
            self.pending.remove(fragment)
        result = self.r.add(fragment, self.now)
        mid = fragment.message_id
        if result.outcome is Outcome.COMPLETE:
            assert mid not in self.delivered
            assert result.data == self.payloads[mid]
            self.delivered.add(mid)
        elif mid in self.delivered:
            assert result.outcome is Outcome.ALREADY_DELIVERED

    @rule(junk=st.binary(min_size=SIZE, max_size=SIZE))
    def junk(self, junk: bytes) -> None:
        try:
            fragment = Fragment.decode(junk, SIZE)
        except Exception:  # the decoder's business; see test_fragments
            return
        self.r.add(fragment, self.now)

    @rule(dt=st.floats(0, 30))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.r.expire(self.now)

    @invariant()
    def bounded(self) -> None:
        assert self.r.partial_messages <= 16
        assert self.r.partial_bytes <= 1 << 20
        assert self.r.next_expiry() > self.now  # nothing overdue survives expire()


TestReassemblyMachine = ReassemblyMachine.TestCase
TestReassemblyMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
