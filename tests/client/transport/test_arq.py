"""The per-fragment ARQ table and the retransmission timeout formula."""

from __future__ import annotations

import random
import statistics

import pytest

from client.errors import ArqProtocolError
from client.paths import PathSelector
from client.transport.arq import (
    TRANSITIONS,
    ArqInput,
    FragmentState,
    extra_delay_mean,
    next_state,
    retransmit_timeout,
)


def test_every_pair_outside_the_table_is_a_protocol_error() -> None:
    for state in FragmentState:
        for event in ArqInput:
            if (state, event) in TRANSITIONS:
                assert next_state(state, event) is TRANSITIONS[(state, event)]
            else:
                with pytest.raises(ArqProtocolError, match=state.value):
                    next_state(state, event)


def test_final_states_are_final() -> None:
    for state in (FragmentState.ACKED, FragmentState.FAILED):
        assert not any(s is state for s, _ in TRANSITIONS)


def test_timeout_formula(kit) -> None:
    params = kit.consensus.params
    selector = PathSelector(kit.consensus, random.Random(1))
    a, b = (d.node_id for d in kit.consensus.providers()[:2])
    forward, back = selector.route(a, b), selector.route(b, a)
    # the exit holds the ACK for an exponential delay: its mean is allowed for
    base = (forward.total_delay + back.total_delay + params.mean_hop_delay + params.pull_interval
            + 2.0)
    exact = retransmit_timeout(
        forward, back, params, transit_allowance=2.0, extra_mean=0.0, rng=random.Random(0)
    )
    assert exact == pytest.approx(base)
    rng = random.Random(2)
    mean = extra_delay_mean(params)
    assert mean == pytest.approx(2 * params.layers * params.mean_hop_delay + params.pull_interval)
    extras = [
        retransmit_timeout(
            forward, back, params, transit_allowance=2.0, extra_mean=mean, rng=rng
        ) - base
        for _ in range(4000)
    ]
    assert min(extras) >= 0
    # randomized: the extra is Exp(mean), so its spread is as large as its mean
    assert statistics.fmean(extras) == pytest.approx(mean, rel=0.1)
    assert statistics.stdev(extras) == pytest.approx(mean, rel=0.1)
