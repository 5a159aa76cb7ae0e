"""The one stratified order, as nodes check it, clients route along it and loops follow it."""

from __future__ import annotations

import pytest

from mixcore.descriptor import NodeDescriptor
from mixcore.keys import IdentityKey, LinkKey
from mixcore.sphinx import MixPrivateKey
from mixcore.topology import (
    PROVIDER_LAYER,
    NodeRole,
    Topology,
    cycle_from,
    expected_next_layer,
    mix_layers,
)


@pytest.mark.parametrize("num_layers", [1, 2, 3, 5])
def test_following_the_rule_visits_every_layer_once_and_returns(num_layers: int) -> None:
    seen = [PROVIDER_LAYER]
    while len(seen) == 1 or seen[-1] != PROVIDER_LAYER:
        seen.append(expected_next_layer(seen[-1], num_layers))
    assert seen == [PROVIDER_LAYER, *range(1, num_layers + 1), PROVIDER_LAYER]
    assert mix_layers(num_layers) == list(range(1, num_layers + 1))


def test_a_loop_from_a_mix_goes_round_to_it() -> None:
    assert cycle_from(2, 3) == [3, PROVIDER_LAYER, 1]
    assert cycle_from(3, 3) == [PROVIDER_LAYER, 1, 2]
    assert cycle_from(1, 1) == [PROVIDER_LAYER]
    assert cycle_from(PROVIDER_LAYER, 3) == [1, 2, 3]


@pytest.mark.parametrize(("layer", "num_layers"), [(4, 3), (-1, 3), (0, 0)])
def test_a_layer_outside_the_network_is_refused(layer: int, num_layers: int) -> None:
    with pytest.raises(ValueError, match="layer"):
        cycle_from(layer, num_layers)


def test_topology_applies_the_same_rule_and_lists_members() -> None:
    topology = Topology({b"p": 0, b"a": 1, b"b": 2, b"c": 1}, num_layers=2)
    assert [topology.expected_next_layer(x) for x in (0, 1, 2)] == [1, 2, PROVIDER_LAYER]
    assert topology.members(1) == [b"a", b"c"]
    assert topology.members(3) == []


def test_one_role_enum_reads_config_words_and_keeps_the_descriptor_wire_codes() -> None:
    assert NodeRole("mix") is NodeRole.MIX and NodeRole("provider") is NodeRole.PROVIDER
    with pytest.raises(ValueError):
        NodeRole("client")
    keys = MixPrivateKey.generate().public
    for role, code in ((NodeRole.MIX, 1), (NodeRole.PROVIDER, 2)):
        desc = NodeDescriptor(
            identity_key=IdentityKey.generate().public,
            link_key=LinkKey.generate().public,
            role=role,
            layer=0,
            host="127.0.0.1",
            port=1,
            epoch=5,
            mix_keys=((5, keys), (6, keys)),
            name="n",
        )
        assert desc.to_wire()[3] == code  # what older nodes and authorities read
        assert NodeDescriptor.from_wire(desc.to_wire()).role is role
