"""Three in-process authorities (hypercorn on loopback, real HTTP between them), one of which
signs a different document: the honest two publish, clients accept only their document."""

from __future__ import annotations

import random
import sqlite3
from typing import Any

import httpx
import pytest
import trio
from helpers import HANG, wait_for_async

from directory.authority import Authority
from directory.service import serve
from directory.votes import Vote
from directory.voting import VotingCore, VotingSchedule
from mixcore.consensus import AuthoritySet, verify_consensus
from mixcore.descriptor import SignedDescriptor, parse_signed_descriptor
from mixcore.epochs import EpochClock
from mixcore.net.directory_client import ConsensusFetcher, upload_descriptor
from mixcore.params import NetworkParams


class OneExtraNode(VotingCore):
    """Misbehaving authority: adds a node nobody else voted for to its document."""

    extra: Any = None  # a FakeNode, signing a descriptor for whichever epoch is counted

    def tally(self, epoch: int, votes: list[Vote]) -> list[SignedDescriptor]:
        return [*super().tally(epoch, votes), parse_signed_descriptor(self.extra.signed(epoch))]


class HeldClock:
    """The authorities' clock, held by the test: it moves only when the test moves it, so a
    step that a loaded machine takes long over never lands in another epoch (the HTTP between
    the authorities is real, and so is the time it takes; only the schedule is held)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_dissenting_authority_is_ignored_over_http(authority_files, make_nodes) -> None:
    length = 6.0
    params = NetworkParams(
        epoch_length=length, genesis_time=1000.0, mean_hop_delay=0.05, layers=2
    )
    clock = EpochClock.from_params(params)
    held = HeldClock(clock.start(0) + 0.01 * length)
    schedule = VotingSchedule(poll_interval=0.05, bootstrap_delay=0.2)
    written = authority_files(3, params, schedule=schedule)
    authorities = AuthoritySet.majority(identity.public for _, _, identity in written)
    urls = [config.url for _, config, _ in written]
    nodes = make_nodes(mixes=2, providers=1)
    sneaky = make_nodes(1, 0)[0]
    OneExtraNode.extra = sneaky
    shutdown = trio.Event()
    running: list[Authority] = []
    with trio.fail_after(HANG):  # a hang, not a slow machine
        async with trio.open_nursery() as nursery:
            for index, (_, config, _) in enumerate(written):
                factory = OneExtraNode if index == 2 else VotingCore
                running.append(
                    await nursery.start(
                        lambda task_status, c=config, f=factory: serve(
                            c, shutdown=shutdown, now=held, core_factory=f,
                            task_status=task_status,
                        )
                    )
                )

            async def upload(wire: bytes, outcomes: list[Any]) -> None:
                outcomes.extend(await upload_descriptor(urls, wire, timeout=HANG))

            # Descriptors for the epoch now running and the next, all accepted: the clock is
            # held, so the epoch cannot move on while they travel.
            registered = clock.epoch_at(held())
            outcomes: list[Any] = []
            async with trio.open_nursery() as uploads:
                for node in nodes:
                    for e in (registered, registered + 1):
                        uploads.start_soon(upload, node.signed(e), outcomes)
            assert outcomes and all(o.accepted for o in outcomes), outcomes
            # The next epoch's vote is due: each authority votes and, once every vote is in
            # (not at a deadline: the clock stays here), counts, signs and publishes.
            held.now = clock.start(registered + 1) - schedule.vote_lead * length + 0.01

            async with httpx.AsyncClient(timeout=HANG) as http:

                async def full_document(url: str, epoch: int) -> bytes | None:
                    response = await http.get(f"{url}/v1/consensus/{epoch}")
                    if response.status_code != 200:
                        return None
                    doc = verify_consensus(response.content, authorities, expected_epoch=epoch)
                    return response.content if len(doc.document.nodes) == 3 else None

                # The first epoch whose document lists the nodes (the current one, which
                # bootstraps from the uploads, or the next).
                async def listing() -> tuple[int, list[bytes | None]] | None:
                    for epoch in (registered, registered + 1):
                        got = [await full_document(url, epoch) for url in urls[:2]]
                        if all(got):
                            return epoch, got
                    return None

                target, got = await wait_for_async(
                    listing, what="a document listing the nodes", interval=0.05)
                assert got[0] == got[1]
                verified = verify_consensus(got[0], authorities, expected_epoch=target)
                honest_keys = sorted(identity.public for _, _, identity in written[:2])
                assert list(verified.signers) == honest_keys
                # The dissenter ends up serving the majority's document, not its own.
                async def dissenter_serves() -> bool:
                    response = await http.get(f"{urls[2]}/v1/consensus/{target}")
                    return response.status_code == 200

                await wait_for_async(dissenter_serves, what="the dissenter to serve a document",
                                     interval=0.05)
                served = (await http.get(f"{urls[2]}/v1/consensus/{target}")).content
                assert verify_consensus(served, authorities).body == verified.body
                info = (await http.get(f"{urls[0]}/v1/health")).json()
                # Counted once per dissenting peer and epoch.
                assert info["statistics"]["voting"]["peer_disagreements"] >= 1

            for seed in range(3):
                fetcher = ConsensusFetcher(urls, authorities, clock, rng=random.Random(seed))
                fetched = await fetcher.fetch(target)
                assert sneaky.identity.public not in {
                    e.identity_key for e in fetched.document.nodes
                }
            shutdown.set()
    # Graceful shutdown returned from every serve() and closed the stores.
    for authority in running:
        with pytest.raises(sqlite3.ProgrammingError):
            authority.store.latest_document_epoch()
