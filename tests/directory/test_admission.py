"""Admission at the authorities, attacked as the Sybil flood of issue 15 did: thousands of fake
descriptors must never own the directory, displace listed nodes or keep an approved latecomer
out; a node is listed only when a majority of the authorities approves it.

In process, on a virtual clock (the authority's ``now``), through the real HTTP app (httpx's
ASGI transport, one transport per fake source address).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest

from directory import voting
from directory.admission import AdmissionMode, AdmissionSettings, Approval
from directory.app import create_app
from directory.approvals import load_approvals, save_approvals
from directory.authority import Authority
from directory.config import AuthorityConfig, PeerConfig, config_from_dict, load_config
from directory.errors import DirectoryConfigError
from directory.registry import DescriptorRegistry
from directory.store import DirectoryStore
from directory.votes import make_vote
from directory.voting import FetchKind, VotingCore, VotingSchedule
from mixcore.consensus import (
    AuthoritySet,
    assemble_signed_document,
    build_consensus,
    sign_document,
    verify_consensus,
)
from mixcore.errors import MixnetError
from mixcore.keys import IdentityKey, save_identity_key
from mixcore.params import NetworkParams
from mixcore.topology import NodeRole
from mixnet.cli import main

LENGTH = 10.0
EPOCH = 7
PARAMS = NetworkParams(epoch_length=LENGTH, genesis_time=0.0, mean_hop_delay=0.1, layers=1)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_authority(
    tmp_path: Path, clock: Clock, admission: AdmissionSettings, *, max_nodes: int = 1024
) -> Authority:
    identity = IdentityKey.generate()
    save_identity_key(tmp_path / "identity.key", identity)
    config = AuthorityConfig(
        name="solo",
        identity_key_file=tmp_path / "identity.key",
        listen_host="127.0.0.1",
        listen_port=1,
        url="http://127.0.0.1:1",
        data_dir=tmp_path,
        params=PARAMS,
        admission=admission,
        max_nodes=max_nodes,
    )
    return Authority(config, identity, DirectoryStore(config.database_path), now=clock)


def approve(authority: Authority, nodes, role: NodeRole | None = None) -> None:
    """What ``mixnet directory approve`` does: add to the approvals file on disk."""
    path = authority.config.approvals_path
    approvals = load_approvals(path)
    approvals += [Approval(n.identity.public, role or n.role) for n in nodes]
    save_approvals(path, approvals)


async def post_from(authority: Authority, source: str, data: bytes) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(authority), client=(source, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://authority") as http:
        return await http.post("/v1/descriptor", content=data)


def publish(authority: Authority, clock: Clock, epoch: int) -> set[bytes]:
    """Run the lone authority's schedule until ``epoch``'s document; the node ids it lists."""
    while authority.document(epoch) is None:
        assert clock.now < (epoch + 1) * LENGTH, f"no document for epoch {epoch}"
        authority.tick()
        clock.now += 0.1
    document = authority.document(epoch)
    assert document is not None
    authorities = AuthoritySet.majority([authority.identity.public])
    verified = verify_consensus(document, authorities, expected_epoch=epoch)
    return {entry.identity_key for entry in verified.document.nodes}


async def test_default_admission_refuses_every_unapproved_node(tmp_path, make_nodes) -> None:
    clock = Clock(EPOCH * LENGTH + 1.0)
    authority = make_authority(tmp_path, clock, AdmissionSettings())
    assert authority.config.admission.mode is AdmissionMode.APPROVED
    honest = make_nodes(3, 1)
    approve(authority, honest)
    for node in honest:
        assert (await post_from(authority, "198.51.100.7", node.signed(EPOCH))).status_code == 200
    flood = make_nodes(200, 0)  # distinct keys: rule 6 cannot stop them
    for index, node in enumerate(flood):
        response = await post_from(authority, f"10.0.{index // 250}.{index % 250}",
                                   node.signed(EPOCH))
        assert response.status_code == 403
        assert "not approved" in response.text and "mixnet directory approve" in response.text
    assert len(authority.registry) == 4
    listed = publish(authority, clock, EPOCH + 1)
    assert listed == {n.identity.public for n in honest}
    # A node approved as a mix cannot list itself as a provider (or the reverse).
    turncoat = make_nodes(1, 0)[0]
    approve(authority, [turncoat], role=NodeRole.PROVIDER)
    response = await post_from(authority, "198.51.100.8", turncoat.signed(EPOCH + 1))
    assert response.status_code == 403 and "approved as a provider" in response.text


async def test_an_open_flood_never_displaces_listed_nodes_or_an_approved_latecomer(
    tmp_path, make_nodes
) -> None:
    """The issue's attack against a test network's open admission: distinct fake descriptors
    from many addresses, more than the registry holds (strangers may fill all of it here)."""
    clock = Clock(EPOCH * LENGTH + 1.0)
    admission = AdmissionSettings(AdmissionMode.OPEN, per_source=2, per_epoch=40, max_strangers=24)
    authority = make_authority(tmp_path, clock, admission, max_nodes=24)
    early = make_nodes(4, 1)  # strangers (open admission) that get listed before the flood
    for index, node in enumerate(early):
        response = await post_from(authority, f"198.51.100.{index + 1}", node.signed(EPOCH))
        assert response.status_code == 200
    listed_ids = {n.identity.public for n in early}
    assert publish(authority, clock, EPOCH) == listed_ids

    # One address feeds at most per_source new nodes per epoch.
    one_source = make_nodes(5, 0)
    codes = [(await post_from(authority, "203.0.113.5", n.signed(EPOCH))).status_code
             for n in one_source]
    assert codes == [200, 200, 503, 503, 503]

    flood = make_nodes(240, 0)
    statuses: dict[int, int] = {}
    for index, node in enumerate(flood):
        response = await post_from(authority, f"10.{index // 200}.{index % 200}.9",
                                   node.signed(EPOCH))
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    assert len(authority.registry) == 24  # full: 5 listed, 2 + 17 fakes
    assert statuses == {200: 17, 503: 240 - 17}

    # An operator approves latecomers mid-flood: each takes an unlisted fake's place.
    latecomers = make_nodes(3, 0)
    approve(authority, latecomers)
    for node in latecomers:
        response = await post_from(authority, "198.51.100.9", node.signed(EPOCH))
        assert response.status_code == 200, response.text
    # Listed nodes refresh their descriptors while the registry is full.
    for index, node in enumerate(early):
        response = await post_from(authority, f"198.51.100.{index + 1}", node.signed(EPOCH + 1))
        assert response.status_code == 200, response.text
    for index, node in enumerate(make_nodes(60, 0)):
        assert (await post_from(authority, f"10.9.{index}.1", node.signed(EPOCH + 1))) \
            .status_code == 503
    listed = publish(authority, clock, EPOCH + 1)
    assert listed_ids <= listed, "a listed node was pushed out"
    assert {n.identity.public for n in latecomers} <= listed
    assert len(listed) == 24
    stats = authority.statistics()["registry"]
    assert stats["evicted"] == 3 and stats["refused_strangers_full"] > 0
    assert stats["refused_per_source"] == 3


def test_the_consensus_size_cap_keeps_listed_nodes_first(make_nodes, monkeypatch) -> None:
    """More majority-voted nodes than the consensus holds: the ones listed in the previous
    document stay, whatever keys the newcomers ground to sort first."""
    monkeypatch.setattr(voting, "MAX_NODES", 4)
    identities = [IdentityKey.generate() for _ in range(3)]
    authorities = AuthoritySet.majority(i.public for i in identities)
    core = VotingCore(identity=identities[0], authorities=authorities, params=PARAMS,
                      registry=DescriptorRegistry())
    nodes = sorted(make_nodes(8, 0), key=lambda n: n.identity.public)
    incumbents = nodes[4:]  # the other four, the newcomers, have the smallest keys
    previous = core.tally(EPOCH - 1, [
        make_vote(EPOCH - 1, i, [n.signed(EPOCH - 1) for n in incumbents]) for i in identities
    ])
    body = build_consensus(EPOCH - 1, PARAMS, previous).encode()
    core.restore_document(EPOCH - 1, assemble_signed_document(
        body, [sign_document(body, i) for i in identities]))
    wires = [n.signed(EPOCH) for n in nodes]
    chosen = core.tally(EPOCH, [make_vote(EPOCH, i, wires) for i in identities])
    assert {s.identity_key for s in chosen} == {n.identity.public for n in incumbents}


def _run(authorities: list[Authority], clock: Clock, until: float) -> None:
    """Drive lone-process authorities together, answering each one's fetches from its peers."""
    index = {a.identity.public: a for a in authorities}
    while clock.now < until:
        for authority in authorities:
            authority.tick()
            core = authority.core
            for fetch in core.wanted(clock.now):
                peer = index[fetch.authority_key]
                serve, handle = {
                    FetchKind.VOTE: (peer.vote, core.on_vote),
                    FetchKind.SIGNATURE: (peer.signature, core.on_signature),
                    FetchKind.DOCUMENT: (peer.document, core.on_document),
                }[fetch.kind]
                data = serve(fetch.epoch)
                if data is not None:
                    with contextlib.suppress(MixnetError):
                        authority.apply(handle(fetch.authority_key, fetch.epoch, data, clock.now))
        clock.now += 0.1


def test_a_node_is_listed_only_when_a_majority_approves_it(tmp_path, make_nodes) -> None:
    clock = Clock(EPOCH * LENGTH + 1.0)
    identities = [IdentityKey.generate() for _ in range(3)]
    authorities = []
    for i, identity in enumerate(identities):
        folder = tmp_path / f"a{i}"
        folder.mkdir()
        save_identity_key(folder / "identity.key", identity)
        peers = tuple(
            PeerConfig(f"a{j}", identities[j].public, f"http://127.0.0.1:{9000 + j}")
            for j in range(3) if j != i
        )
        config = AuthorityConfig(
            name=f"a{i}", identity_key_file=folder / "identity.key", listen_host="127.0.0.1",
            listen_port=9000 + i, url=f"http://127.0.0.1:{9000 + i}", data_dir=folder,
            params=PARAMS, peers=peers, schedule=VotingSchedule(poll_interval=0.1),
        )
        authorities.append(
            Authority(config, identity, DirectoryStore(config.database_path), now=clock)
        )
    by_all, by_two, by_one = make_nodes(3, 0)
    approve(authorities[0], [by_all, by_two, by_one])
    approve(authorities[1], [by_all, by_two])
    approve(authorities[2], [by_all])
    for authority in authorities:
        for node in (by_all, by_two, by_one):
            with contextlib.suppress(MixnetError):
                authority.submit_descriptor(node.signed(EPOCH + 1), "198.51.100.3")
    _run(authorities, clock, (EPOCH + 1) * LENGTH)
    documents = {a.document(EPOCH + 1) for a in authorities}
    assert len(documents) == 1 and None not in documents
    verified = verify_consensus(documents.pop(), AuthoritySet.majority(identities_public(
        identities)), expected_epoch=EPOCH + 1)
    listed = {e.identity_key for e in verified.document.nodes}
    assert listed == {by_all.identity.public, by_two.identity.public}


def identities_public(identities: list[IdentityKey]) -> list[bytes]:
    return [i.public for i in identities]


async def test_revoking_drops_a_held_node_from_the_next_vote(tmp_path, make_nodes) -> None:
    clock = Clock(EPOCH * LENGTH + 1.0)
    authority = make_authority(tmp_path, clock, AdmissionSettings())
    keep, drop = make_nodes(2, 0)
    approve(authority, [keep, drop])
    for node in (keep, drop):
        assert (await post_from(authority, "198.51.100.4", node.signed(EPOCH))).status_code == 200
    save_approvals(authority.config.approvals_path,
                   [a for a in load_approvals(authority.config.approvals_path)
                    if a.identity_key != drop.identity.public])
    assert publish(authority, clock, EPOCH + 1) == {keep.identity.public}
    assert authority.store.descriptors(EPOCH) == [keep.signed(EPOCH)]


def test_cli_approve_and_revoke(tmp_path, capsys, make_nodes) -> None:
    assert main(["directory", "init", "--dir", str(tmp_path / "a"), "--name", "a",
                 "--listen", "127.0.0.1:7999", "--json"]) == 0
    capsys.readouterr()
    config_path = tmp_path / "a" / "authority.json"
    mix, provider = make_nodes(1, 1)[1], make_nodes(0, 1)[0]
    key = mix.identity.public.hex()
    assert main(["directory", "approve", "--config", str(config_path), key, "--role", "mix",
                 "--layer", "2", "--json"]) == 0
    listing = tmp_path / "list.txt"
    listing.write_text(f"# providers\n{provider.identity.public.hex()} provider\n")
    assert main(["directory", "approve", "--config", str(config_path), "--file", str(listing),
                 "--json"]) == 0
    config = load_config(config_path)
    assert config.admission.mode is AdmissionMode.APPROVED
    approvals = {a.identity_key: a for a in load_approvals(config.approvals_path)}
    assert approvals[mix.identity.public].layer == 2
    assert approvals[provider.identity.public].role is NodeRole.PROVIDER
    assert oct(config.approvals_path.stat().st_mode & 0o777) == "0o600"
    assert main(["directory", "revoke", "--config", str(config_path), key, "--json"]) == 0
    assert [a.identity_key for a in load_approvals(config.approvals_path)] == [
        provider.identity.public
    ]
    capsys.readouterr()
    assert main(["directory", "approve", "--config", str(config_path), "nothex",
                 "--role", "mix"]) == 1
    assert "identity key" in capsys.readouterr().err
    assert main(["directory", "init", "--dir", str(tmp_path / "b"), "--name", "b",
                 "--listen", "127.0.0.1:7998", "--open-admission", "--json"]) == 0
    assert load_config(tmp_path / "b" / "authority.json").admission.mode is AdmissionMode.OPEN


@pytest.mark.parametrize("bad", [{"mode": "everyone"}, {"per_source": 0}, {"nope": 1}])
def test_bad_admission_settings_are_one_line_errors(tmp_path, bad) -> None:
    data = {"version": 1, "name": "a", "listen": "127.0.0.1:1", "url": "http://127.0.0.1:1",
            "admission": bad}
    with pytest.raises(DirectoryConfigError, match="admission"):
        config_from_dict(data, tmp_path)
