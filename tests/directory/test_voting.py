"""The sans-IO vote and consensus state machine: counting rule, determinism, signing once,
and whole networks of cores exchanging answers in virtual time."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterable

import pytest

from directory.registry import DescriptorRegistry
from directory.votes import (
    SignatureAnnouncement,
    Vote,
    VoteError,
    body_digest,
    make_vote,
    parse_signature_announcement,
    parse_vote,
)
from directory.voting import (
    BodySigned,
    DocumentPublished,
    FetchKind,
    PeerDisagrees,
    SigningRefused,
    VotingCore,
    VotingSchedule,
)
from mixcore.consensus import (
    AuthoritySet,
    ConsensusThresholdError,
    assemble_signed_document,
    build_consensus,
    split_signed_document,
    verify_consensus,
)
from mixcore.descriptor import SignedDescriptor, parse_signed_descriptor
from mixcore.errors import MixnetError, ParamsError
from mixcore.keys import IdentityKey
from mixcore.params import NetworkParams

LENGTH = 10.0
PARAMS = NetworkParams(epoch_length=LENGTH, genesis_time=0.0, mean_hop_delay=0.1, layers=2)
EPOCH = 5


def make_cores(
    count: int, *, factories: dict[int, Callable[..., VotingCore]] | None = None
) -> tuple[list[VotingCore], AuthoritySet]:
    identities = [IdentityKey.generate() for _ in range(count)]
    authorities = AuthoritySet.majority(i.public for i in identities)
    cores = []
    for index, identity in enumerate(identities):
        factory = (factories or {}).get(index, VotingCore)
        cores.append(
            factory(
                identity=identity,
                authorities=authorities,
                params=PARAMS,
                registry=DescriptorRegistry(),
                schedule=VotingSchedule(poll_interval=0.1),
            )
        )
    return cores, authorities


def upload(cores: Iterable[VotingCore], wires: Iterable[bytes], epoch: int) -> None:
    for core in cores:
        for wire in wires:
            core.registry.submit(wire, epoch)


def run(
    cores: list[VotingCore],
    start: float,
    end: float,
    *,
    down: frozenset[int] = frozenset(),
    step: float = 0.1,
) -> list[list[object]]:
    """Drive every live core from ``start`` to ``end``, answering its fetches from its peers."""
    index = {core.identity.public: i for i, core in enumerate(cores)}
    events: list[list[object]] = [[] for _ in cores]
    t = start
    while t < end:
        for i, core in enumerate(cores):
            if i in down:
                continue
            events[i] += core.tick(t)
            for fetch in core.wanted(t):
                j = index[fetch.authority_key]
                if j in down:
                    continue
                peer = cores[j]
                source = {
                    FetchKind.VOTE: (peer.vote, core.on_vote),
                    FetchKind.SIGNATURE: (peer.signature, core.on_signature),
                    FetchKind.DOCUMENT: (peer.document, core.on_document),
                }
                serve, handle = source[fetch.kind]
                data = serve(fetch.epoch)
                if data is None:
                    continue
                with contextlib.suppress(MixnetError):
                    events[i] += handle(fetch.authority_key, fetch.epoch, data, t)
        t += step
    return events


def signed_wires(nodes: list, epoch: int) -> list[bytes]:
    return [n.signed(epoch) for n in nodes]


# -- the counting rule ------------------------------------------------------------------------


def test_included_only_with_votes_from_more_than_half_of_all_configured(make_nodes) -> None:
    cores, _ = make_cores(4)
    a, b = make_nodes(2, 0)
    wa, wb = a.signed(EPOCH), b.signed(EPOCH)
    ids = [c.identity for c in cores]
    votes = [
        make_vote(EPOCH, ids[0], [wa, wb]),
        make_vote(EPOCH, ids[1], [wa, wb]),
        make_vote(EPOCH, ids[2], [wa]),
    ]
    chosen = cores[0].tally(EPOCH, votes)
    assert [s.wire for s in chosen] == [wa]  # 3 of 4 for a; 2 of 4 is not a majority
    # Only two authorities reachable: two votes out of four configured include nothing.
    assert cores[0].tally(EPOCH, votes[:2]) == []
    # A repeated vote from one authority counts once; unknown authorities not at all.
    stranger = make_vote(EPOCH, IdentityKey.generate(), [wb])
    assert [s.wire for s in cores[0].tally(EPOCH, [*votes, votes[1], stranger])] == [wa]


def test_counts_exact_bytes(make_nodes) -> None:
    cores, _ = make_cores(3)
    node = make_nodes(1, 0)[0]
    v1 = node.signed(EPOCH)
    v2 = node.signed(EPOCH, port=1234)
    ids = [c.identity for c in cores]
    split = [make_vote(EPOCH, ids[0], [v1]), make_vote(EPOCH, ids[1], [v2])]
    assert cores[0].tally(EPOCH, split) == []
    agree = [*split, make_vote(EPOCH, ids[2], [v1])]
    assert [s.wire for s in cores[0].tally(EPOCH, agree)] == [v1]


def test_majority_voted_descriptors_without_a_key_for_the_epoch_are_dropped(make_nodes) -> None:
    cores, _ = make_cores(3)
    node = make_nodes(1, 0)[0]
    old = node.signed(EPOCH - 1)  # keys for EPOCH - 1 and EPOCH only
    votes = [make_vote(EPOCH + 1, c.identity, [old]) for c in cores]
    assert cores[0].tally(EPOCH + 1, votes) == []


def test_identical_bodies_from_permuted_inputs(make_nodes) -> None:
    nodes = make_nodes(mixes=7, providers=2)
    wires = signed_wires(nodes, EPOCH)
    bodies = set()
    for seed in range(4):
        cores, _ = make_cores(3)
        rng = random.Random(seed)
        votes = [make_vote(EPOCH, c.identity, rng.sample(wires, len(wires))) for c in cores]
        rng.shuffle(votes)
        chosen: list[SignedDescriptor] = cores[0].tally(EPOCH, votes)
        rng.shuffle(chosen)
        bodies.add(build_consensus(EPOCH, PARAMS, chosen).encode())
        registry = DescriptorRegistry()
        for wire in rng.sample(wires, len(wires)):
            registry.submit(wire, EPOCH)
        assert registry.descriptors_for(EPOCH) == sorted(wires)
    assert len(bodies) == 1


# -- signing once ---------------------------------------------------------------------------


def test_refuses_to_sign_a_second_different_body(make_nodes) -> None:
    cores, _ = make_cores(1)
    core = cores[0]
    node = make_nodes(1, 0)[0]
    earlier = build_consensus(EPOCH + 1, PARAMS, []).encode()
    _, signature = core.identity.public, core.identity.sign(b"mixnet-consensus-v1\x00" + earlier)
    # After a restart: the store says we signed the empty document, but our vote (restored
    # too) now counts to a document with one node.
    core.restore_signature(EPOCH + 1, earlier, signature)
    vote = make_vote(EPOCH + 1, core.identity, [node.signed(EPOCH)])
    core.restore_vote(EPOCH + 1, core.identity.public, vote.wire)
    events = core.tick(core.consensus_time(EPOCH + 1))
    refused = [e for e in events if isinstance(e, SigningRefused)]
    assert len(refused) == 1 and refused[0].signed_digest == body_digest(earlier)
    assert not any(isinstance(e, BodySigned) for e in events)
    ann = parse_signature_announcement(
        core.signature(EPOCH + 1) or b"", epoch=EPOCH + 1, authority_key=core.identity.public
    )
    assert ann.signature == signature and ann.valid_for(earlier)
    # What it publishes is the body it signed first, not the new one.
    doc = core.document(EPOCH + 1)
    assert doc is not None and split_signed_document(doc)[0] == earlier


# -- votes and signature announcements ------------------------------------------------------


def test_vote_parsing_rejects_wrong_epoch_authority_and_signature(make_nodes) -> None:
    key = IdentityKey.generate()
    node = make_nodes(1, 0)[0]
    vote = make_vote(EPOCH, key, [node.signed(EPOCH)])
    assert parse_vote(vote.wire, epoch=EPOCH, authority_key=key.public).descriptors == (
        node.signed(EPOCH),
    )
    with pytest.raises(VoteError, match="epoch"):
        parse_vote(vote.wire, epoch=EPOCH + 1, authority_key=key.public)
    with pytest.raises(VoteError, match="authority"):
        parse_vote(vote.wire, epoch=EPOCH, authority_key=IdentityKey.generate().public)
    tampered = bytearray(vote.wire)
    tampered[-1] ^= 1
    with pytest.raises(VoteError, match="signature"):
        parse_vote(bytes(tampered), epoch=EPOCH, authority_key=key.public)
    with pytest.raises(VoteError, match="malformed"):
        parse_vote(b"\x90", epoch=EPOCH, authority_key=key.public)
    assert isinstance(vote, Vote) and "Vote(" in repr(vote)


def test_signature_announcement_is_bound_to_its_body() -> None:
    key = IdentityKey.generate()
    body = build_consensus(EPOCH, PARAMS, []).encode()
    other = build_consensus(EPOCH + 1, PARAMS, []).encode()
    ann = SignatureAnnouncement(
        EPOCH, key.public, body_digest(body), key.sign(b"mixnet-consensus-v1\x00" + body)
    )
    parsed = parse_signature_announcement(ann.encode(), epoch=EPOCH, authority_key=key.public)
    assert parsed.valid_for(body) and not parsed.valid_for(other)
    with pytest.raises(VoteError):
        parse_signature_announcement(ann.encode(), epoch=EPOCH + 1, authority_key=key.public)
    with pytest.raises(VoteError):
        parse_signature_announcement(b"\xc0", epoch=EPOCH, authority_key=key.public)


def test_schedule_is_validated() -> None:
    with pytest.raises(ParamsError):
        VotingSchedule(vote_lead=0.2, consensus_lead=0.3)
    with pytest.raises(ParamsError):
        VotingSchedule(bootstrap_delay=0.9)
    with pytest.raises(ParamsError):
        VotingSchedule(poll_interval=0)


# -- networks of cores in virtual time ------------------------------------------------------


def documents(cores: list[VotingCore], epoch: int, live: Iterable[int]) -> list[bytes | None]:
    return [cores[i].document(epoch) for i in live]


def test_three_authorities_publish_identical_documents_epoch_after_epoch(make_nodes) -> None:
    cores, authorities = make_cores(3)
    nodes = make_nodes(mixes=4, providers=1)
    upload(cores, signed_wires(nodes, EPOCH) + signed_wires(nodes, EPOCH + 1), EPOCH)
    # Bootstrap: no document for EPOCH yet, so they run the procedure for it at once.
    start = EPOCH * LENGTH + 0.5
    run(cores, start, start + 0.1 * LENGTH + 0.2 * LENGTH + 0.3)
    for epoch in (EPOCH,):
        docs = documents(cores, epoch, range(3))
        assert docs[0] is not None and docs[0] == docs[1] == docs[2]
    run(cores, start + 3.3, (EPOCH + 1) * LENGTH + 0.1)
    for epoch in (EPOCH, EPOCH + 1):
        docs = documents(cores, epoch, range(3))
        assert docs[0] is not None and docs[0] == docs[1] == docs[2]
        verified = verify_consensus(docs[0], authorities, expected_epoch=epoch)
        assert len(verified.signers) == 3 and len(verified.document.nodes) == 5
    # Published ahead of time: before EPOCH + 1 started, the document for it was out.
    assert all(c.latest_published() == EPOCH + 1 for c in cores)


def test_one_authority_down_the_others_publish_with_the_threshold(make_nodes) -> None:
    cores, authorities = make_cores(3)
    nodes = make_nodes(mixes=2, providers=1)
    upload(cores[:2], signed_wires(nodes, EPOCH), EPOCH)
    events = run(cores, EPOCH * LENGTH + 4.0, (EPOCH + 1) * LENGTH, down=frozenset({2}))
    docs = documents(cores, EPOCH + 1, range(2))
    assert docs[0] is not None and docs[0] == docs[1]
    verified = verify_consensus(docs[0], authorities, expected_epoch=EPOCH + 1)
    assert len(verified.signers) == 2 and len(verified.document.nodes) == 3
    # They waited for the missing vote until the deadline, not longer.
    signed_at = [e for e in events[0] if isinstance(e, BodySigned)]
    assert signed_at and cores[2].document(EPOCH + 1) is None
    # The third comes back during EPOCH + 1: it adopts the document and signs the next one.
    upload(cores, signed_wires(nodes, EPOCH + 1), EPOCH + 1)
    run(cores, (EPOCH + 1) * LENGTH + 1.0, (EPOCH + 2) * LENGTH)
    assert cores[2].document(EPOCH + 1) == docs[0]
    nxt = documents(cores, EPOCH + 2, range(3))
    assert nxt[0] is not None and nxt[0] == nxt[1] == nxt[2]
    assert len(verify_consensus(nxt[0], authorities).signers) == 3


class ExtraDescriptorCore(VotingCore):
    """A misbehaving authority that slips one descriptor of its own into every document."""

    extra: bytes = b""

    def tally(self, epoch: int, votes: list[Vote]) -> list[SignedDescriptor]:
        return [*super().tally(epoch, votes), parse_signed_descriptor(self.extra)]


def test_an_authority_signing_a_different_document_is_ignored(make_nodes) -> None:
    cores, authorities = make_cores(3, factories={2: ExtraDescriptorCore})
    nodes = make_nodes(mixes=3, providers=1)
    sneaky = make_nodes(1, 0)[0]
    sneaky.index = 99
    cores[2].extra = sneaky.signed(EPOCH)  # type: ignore[attr-defined]
    upload(cores, signed_wires(nodes, EPOCH), EPOCH)
    events = run(cores, EPOCH * LENGTH + 4.0, (EPOCH + 1) * LENGTH)
    honest = documents(cores, EPOCH + 1, range(2))
    assert honest[0] is not None and honest[0] == honest[1]
    verified = verify_consensus(honest[0], authorities, expected_epoch=EPOCH + 1)
    assert sorted(verified.signers) == sorted(c.identity.public for c in cores[:2])
    assert sneaky.identity.public not in {e.identity_key for e in verified.document.nodes}
    assert any(isinstance(e, PeerDisagrees) for e in events[0])
    # The odd one out cannot reach the threshold with its own body; it adopts the majority's.
    assert cores[2].document(EPOCH + 1) == honest[0]
    lone = cores[2].signature(EPOCH + 1)
    assert lone is not None


def test_a_lone_authority_cannot_publish_its_own_body(make_nodes) -> None:
    cores, authorities = make_cores(3, factories={1: ExtraDescriptorCore, 2: ExtraDescriptorCore})
    sneaky = make_nodes(1, 0)[0]
    cores[1].extra = cores[2].extra = sneaky.signed(EPOCH)  # type: ignore[attr-defined]
    run(cores, EPOCH * LENGTH + 4.0, (EPOCH + 1) * LENGTH)
    # Two colluding authorities are a majority: that document is the one published. The honest
    # one never gets a threshold for its own body, and cannot forge one.
    assert cores[0].document(EPOCH + 1) == cores[1].document(EPOCH + 1)
    body_0 = cores[0].signature(EPOCH + 1)
    assert body_0 is not None
    single = cores[0]._signed[EPOCH + 1]
    with pytest.raises(ConsensusThresholdError):
        verify_consensus(
            assemble_signed_document(single[0], [(cores[0].identity.public, single[1])]),
            authorities,
        )


def test_bootstrap_waits_for_descriptors_then_publishes_quickly(make_nodes) -> None:
    cores, _ = make_cores(3)
    start = EPOCH * LENGTH + 0.5
    run(cores, start, start + 2.0)
    assert all(c.vote(EPOCH) is None for c in cores)  # nothing to vote for yet
    nodes = make_nodes(mixes=2, providers=1)
    upload(cores, signed_wires(nodes, EPOCH), EPOCH)
    # Published within the bootstrap delay plus a few polls: all votes were in, so nobody
    # waited for the counting deadline (another 0.2 epoch later).
    events = run(cores, start + 2.0, start + 2.0 + 0.1 * LENGTH + 0.5)
    published = [e for e in events[0] if isinstance(e, DocumentPublished) and e.epoch == EPOCH]
    assert published
    assert cores[0].document(EPOCH) == cores[1].document(EPOCH) == cores[2].document(EPOCH)


def test_next_deadline_and_wanted_follow_the_schedule() -> None:
    cores, _ = make_cores(3)
    core = cores[0]
    early = EPOCH * LENGTH + 1.0
    assert core.next_deadline(early) == core.vote_time(EPOCH + 1)
    assert {f.kind for f in core.wanted(early)} == {FetchKind.VOTE, FetchKind.DOCUMENT}
    assert all(f.epoch == EPOCH for f in core.wanted(early))
    core.tick(core.vote_time(EPOCH + 1))
    assert core.vote(EPOCH + 1) is not None
    assert core.next_deadline(core.vote_time(EPOCH + 1)) == core.consensus_time(EPOCH + 1)
    assert core.epoch_at(-5.0) == -1
