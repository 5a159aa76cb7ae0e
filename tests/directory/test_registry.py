"""Descriptor acceptance rules of the registry (sans-IO)."""

from __future__ import annotations

import pytest

from directory.errors import DescriptorRejected
from directory.registry import MAX_UPLOAD_BYTES, DescriptorRegistry
from mixcore.descriptor import DESCRIPTOR_SIGNING_DOMAIN, parse_signed_descriptor
from mixcore.encoding import pack
from mixcore.keys import IdentityKey

EPOCH = 100


def rejected(registry: DescriptorRegistry, data: bytes, epoch: int = EPOCH) -> DescriptorRejected:
    with pytest.raises(DescriptorRejected) as info:
        registry.submit(data, epoch)
    assert "\n" not in str(info.value)
    return info.value


def test_accepts_current_and_next_epoch_and_is_idempotent(make_nodes) -> None:
    node = make_nodes(1, 0)[0]
    registry = DescriptorRegistry()
    first = registry.submit(node.signed(EPOCH), EPOCH)
    assert (first.epoch, first.duplicate) == (EPOCH, False)
    assert registry.submit(node.signed(EPOCH + 1), EPOCH).epoch == EPOCH + 1
    assert registry.submit(node.signed(EPOCH), EPOCH).duplicate
    assert len(registry) == 1
    assert registry.statistics()["descriptors"] == 2


def test_forged_signature_is_403(make_nodes) -> None:
    node = make_nodes(1, 0)[0]
    body = node.descriptor(EPOCH).encode()
    forger = IdentityKey.generate()
    forged = pack([body, forger.sign(DESCRIPTOR_SIGNING_DOMAIN + body)])
    error = rejected(DescriptorRegistry(), forged)
    assert error.status == 403
    assert "signature" in error.reason


def test_tampered_body_is_403(make_nodes) -> None:
    node = make_nodes(1, 0)[0]
    signed = parse_signed_descriptor(node.signed(EPOCH))
    other_body = node.descriptor(EPOCH, port=9).encode()
    assert rejected(DescriptorRegistry(), pack([other_body, signed.signature])).status == 403


@pytest.mark.parametrize("epoch", [EPOCH - 1, EPOCH - 50, EPOCH + 2])
def test_descriptor_outside_the_epoch_window_is_400(make_nodes, epoch: int) -> None:
    node = make_nodes(1, 0)[0]
    error = rejected(DescriptorRegistry(), node.signed(epoch))
    assert error.status == 400
    assert error.reason.startswith("epoch:")


def test_replayed_old_descriptor_is_refused_after_the_epoch_moved_on(make_nodes) -> None:
    node = make_nodes(1, 0)[0]
    registry = DescriptorRegistry()
    old = node.signed(EPOCH)
    registry.submit(old, EPOCH)
    registry.prune(EPOCH + 2)
    assert rejected(registry, old, EPOCH + 2).status == 400


@pytest.mark.parametrize(
    "data", [b"", b"\x00", b"\x92\xc4\x01x\xc4\x01y", pack([1, 2]), pack(["a"] * 3)]
)
def test_malformed_is_400(data: bytes) -> None:
    assert rejected(DescriptorRegistry(), data).status == 400


def test_oversized_is_413() -> None:
    assert rejected(DescriptorRegistry(), b"\x00" * (MAX_UPLOAD_BYTES + 1)).status == 413


def test_a_second_different_descriptor_for_the_same_epoch_is_409_and_the_next_epoch_wins(
    make_nodes,
) -> None:
    node = make_nodes(1, 0)[0]
    registry = DescriptorRegistry()
    registry.submit(node.signed(EPOCH), EPOCH)
    assert rejected(registry, node.signed(EPOCH, port=4444)).status == 409
    newer = node.signed(EPOCH + 1, port=4444)
    registry.submit(newer, EPOCH)
    assert registry.descriptors_for(EPOCH + 1) == [newer]
    # The epoch-EPOCH descriptor still serves EPOCH itself.
    assert registry.descriptors_for(EPOCH) == [node.signed(EPOCH)]


def test_a_node_cannot_claim_another_nodes_keys(make_nodes) -> None:
    victim, attacker = make_nodes(2, 0)
    registry = DescriptorRegistry()
    registry.submit(victim.signed(EPOCH), EPOCH)
    # Under its own identity, listing the victim's link key or one of its mix keys: 409.
    stolen_link = attacker.signed(EPOCH, link_key=victim.link_key)
    assert rejected(registry, stolen_link).status == 409
    stolen_mix = attacker.signed(
        EPOCH,
        mix_keys=((EPOCH, attacker.mix_key(EPOCH)), (EPOCH + 1, victim.mix_key(EPOCH + 1))),
    )
    assert rejected(registry, stolen_mix).status == 409
    # Under the victim's identity, with its own keys: the signature cannot verify.
    body = victim.descriptor(EPOCH + 1, link_key=attacker.link_key).encode()
    impersonation = pack([body, attacker.identity.sign(DESCRIPTOR_SIGNING_DOMAIN + body)])
    assert rejected(registry, impersonation).status == 403
    assert registry.descriptors_for(EPOCH + 1) == [victim.signed(EPOCH)]


def test_full_registry_refuses_new_nodes_but_not_known_ones(make_nodes) -> None:
    a, b, c = make_nodes(3, 0)
    registry = DescriptorRegistry(max_nodes=2)
    registry.submit(a.signed(EPOCH), EPOCH)
    registry.submit(b.signed(EPOCH), EPOCH)
    assert rejected(registry, c.signed(EPOCH)).status == 503
    registry.submit(a.signed(EPOCH + 1), EPOCH)  # a known node may still refresh
    # Two epochs later b's descriptor has expired, which frees its place.
    registry.prune(EPOCH + 2)
    assert len(registry) == 1
    registry.submit(c.signed(EPOCH + 2), EPOCH + 2)


def test_vote_holds_each_nodes_latest_descriptor_covering_the_epoch(make_nodes) -> None:
    a, b = make_nodes(2, 0)
    registry = DescriptorRegistry()
    registry.submit(a.signed(EPOCH), EPOCH)
    registry.submit(a.signed(EPOCH + 1), EPOCH)
    registry.submit(b.signed(EPOCH), EPOCH)
    assert registry.descriptors_for(EPOCH + 1) == sorted([a.signed(EPOCH + 1), b.signed(EPOCH)])
    assert registry.descriptors_for(EPOCH + 2) == [a.signed(EPOCH + 1)]
    assert registry.holds_any_for(EPOCH) and not registry.holds_any_for(EPOCH + 3)


def test_restore_reverifies_and_drops_expired(make_nodes) -> None:
    a, b = make_nodes(2, 0)
    registry = DescriptorRegistry()
    kept = registry.restore([a.signed(EPOCH), b.signed(EPOCH - 5), b"junk"], EPOCH)
    assert kept == 1
    assert registry.descriptors_for(EPOCH) == [a.signed(EPOCH)]
