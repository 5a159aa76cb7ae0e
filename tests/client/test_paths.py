"""Path choice: stratified shape, sender-chosen delays, current-consensus nodes only, failure
marks until the next consensus."""

from __future__ import annotations

import random
import statistics

import pytest

from client.errors import NoRouteError
from client.paths import PathSelector


def test_route_shape_and_delays(kit) -> None:
    doc = kit.consensus
    selector = PathSelector(doc, random.Random(1))
    a, b = (d.node_id for d in doc.providers()[:2])
    mix_delays = []
    used: set[bytes] = set()
    for _ in range(3000):
        route = selector.route(a, b)
        ids = [h.node_id for h in route.hops]
        assert ids[0] == a and ids[-1] == b
        assert [doc.layer_of(i) for i in ids] == [0, 1, 2, 3, 0]
        for hop in route.hops:
            assert hop.mix_key == doc.node_by_id(hop.node_id).mix_key(doc.epoch)
        assert len(route.delays) == len(route.hops) - 1
        assert route.delays[0] == 0.0  # the entry provider does not delay
        mix_delays.extend(route.delays[1:])
        used.update(ids[1:-1])
        assert route.total_delay == pytest.approx(sum(route.delays))
    every_mix = {d.node_id for i in (1, 2, 3) for d in doc.mixes_in_layer(i)}
    assert used == every_mix  # uniform choice reaches every mix
    mean = doc.params.mean_hop_delay
    # 9000 Exp draws: the sample mean is within 5 standard errors (mean/sqrt(n)) of the mean
    assert abs(statistics.fmean(mix_delays) - mean) < 5 * mean / len(mix_delays) ** 0.5


def test_delays_are_truncated_at_the_node_bound(kit) -> None:
    selector = PathSelector(kit.consensus, random.Random(2), max_hop_delay=0.06)
    a = kit.consensus.providers()[0].node_id
    delays = [d for _ in range(500) for d in selector.route(a, a).delays]
    assert max(delays) <= 0.06


def test_failed_mix_is_avoided_until_the_next_consensus(kit) -> None:
    doc = kit.consensus
    selector = PathSelector(doc, random.Random(3))
    a = doc.providers()[0].node_id
    layer1 = [d.node_id for d in doc.mixes_in_layer(1)]
    selector.mark_failed(layer1[0])
    assert selector.failed == {layer1[0]}
    for _ in range(300):
        assert layer1[0] not in [h.node_id for h in selector.route(a, a).hops]
    selector.update(doc)  # a new document: the mark is forgotten
    assert selector.failed == frozenset()
    seen = {selector.route(a, a).hops[1].node_id for _ in range(300)}
    assert layer1[0] in seen


def test_a_fully_failed_layer_falls_back_rather_than_sending_nothing(kit) -> None:
    doc = kit.consensus
    selector = PathSelector(doc, random.Random(4))
    for d in doc.mixes_in_layer(2):
        selector.mark_failed(d.node_id)
    a = doc.providers()[0].node_id
    route = selector.route(a, a)
    assert doc.layer_of(route.hops[2].node_id) == 2
    assert selector.fallbacks == 1


def test_only_nodes_of_the_current_document(kit) -> None:
    doc = kit.consensus
    # a later document without one mix per layer and without the third provider
    dropped = {doc.mixes_in_layer(i)[0].node_id for i in (1, 2, 3)}
    dropped.add(doc.providers()[2].node_id)
    smaller = kit.make_consensus([n for n in kit.nodes if n.node_id not in dropped])
    selector = PathSelector(doc, random.Random(5))
    selector.update(smaller)
    a = smaller.providers()[0].node_id
    for _ in range(300):
        assert not dropped & {h.node_id for h in selector.route(a, a).hops}
        assert selector.random_provider() not in dropped
    with pytest.raises(NoRouteError):
        selector.route(a, doc.providers()[2].node_id)
    selector.mark_failed(b"\x99" * 32)  # not in the document: ignored
    assert selector.failed == frozenset()


def test_empty_layer_is_no_route(kit) -> None:
    layer3 = {d.node_id for d in kit.consensus.mixes_in_layer(3)}
    providers_and_two_mixes = [n for n in kit.nodes if n.role.name == "PROVIDER"][:1] + [
        n for n in kit.nodes if n.role.name == "MIX"
    ][:2]
    doc = kit.make_consensus(providers_and_two_mixes)
    assert doc.empty_layers() == (3,)
    selector = PathSelector(doc, random.Random(6))
    a = doc.providers()[0].node_id
    with pytest.raises(NoRouteError, match="layer 3 is empty"):
        selector.route(a, a)
    assert layer3  # (the full document had them)
