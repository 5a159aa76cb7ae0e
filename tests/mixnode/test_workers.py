"""Hop workers: the frames they speak, bounded queues, and real worker processes under attack.

The promises are about processes, so the last tests run real ``python -m mixnode.workers``
processes under a real node runtime: a worker SIGKILLed in the middle of a load is replaced, no
packet is forwarded twice (replays go to whichever worker, the node's one filter drops them), and
the only packets lost are those the dead worker held, counted. No test waits on wall time: they
wait for counts, with a generous deadline only as a guard against a hang.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import HANG
from hypothesis import given, settings
from hypothesis import strategies as st

from mixcore.epochs import EpochClock
from mixcore.hop import HOP_REASONS, unwrap
from mixcore.params import SPHINX_SUITE_V1
from mixcore.sphinx import Deliver, MixPrivateKey, PathHop, Relay, Sphinx, SphinxGeometry, SurbReply
from mixcore.topology import NodeRole
from mixnode.keyring import KeyRing
from mixnode.runtime import NodeRuntime, RuntimeSettings
from mixnode.unwrap import (
    BATCH,
    KEYS,
    RESULTS,
    FrameError,
    WorkerCore,
    decode_batch,
    decode_results,
    encode_batch,
    encode_keys,
    encode_results,
    frame,
    split_frames,
)
from mixnode.view import EpochView
from mixnode.workers import HopWorkers

SX = Sphinx()
G = SX.geometry
OFFSET = 100.0


# ---------------------------------------------------------------------------------------------
# Frames (sans-IO)


results_strategy = st.lists(
    st.one_of(
        st.sampled_from(HOP_REASONS),
        st.tuples(
            st.integers(0, 2**32 - 1),
            st.builds(
                Relay, st.binary(min_size=16, max_size=16), st.binary(min_size=32, max_size=32),
                st.floats(0, 1e4), st.binary(min_size=G.packet_len, max_size=G.packet_len),
            ),
        ),
        st.tuples(
            st.integers(0, 2**32 - 1),
            st.builds(
                Deliver, st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16),
                st.binary(max_size=G.payload_capacity),
            ),
        ),
        st.tuples(
            st.integers(0, 2**32 - 1),
            st.builds(
                SurbReply, st.binary(min_size=16, max_size=16),
                st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16),
                st.binary(min_size=G.body_len, max_size=G.body_len),
            ),
        ),
    ),
    max_size=6,
)


@settings(max_examples=40, deadline=None)
@given(batch_id=st.integers(0, 2**32 - 1), results=results_strategy)
def test_results_round_trip(batch_id: int, results: list[Any]) -> None:
    body = encode_results(batch_id, results)
    assert decode_results(body, G.packet_len, G.body_len) == (batch_id, results)
    with pytest.raises(FrameError):
        decode_results(body + b"\x00", G.packet_len, G.body_len)
    if body[6:]:
        with pytest.raises(FrameError):
            decode_results(body[:-1], G.packet_len, G.body_len)


@settings(max_examples=30, deadline=None)
@given(
    batch_id=st.integers(0, 2**32 - 1),
    live=st.lists(st.integers(0, 2**32 - 1), max_size=3),
    retired=st.lists(st.integers(0, 2**32 - 1), max_size=3),
    count=st.integers(0, 4),
)
def test_batches_round_trip_and_frames_split_at_any_chunking(
    batch_id: int, live: list[int], retired: list[int], count: int
) -> None:
    packets = [os.urandom(G.packet_len) for _ in range(count)]
    body = encode_batch(batch_id, live, retired, packets)
    assert decode_batch(body, G.packet_len) == (batch_id, live, retired, packets)
    with pytest.raises(FrameError):
        decode_batch(body + b"x", G.packet_len)
    stream = frame(BATCH, body) + frame(RESULTS, b"r")
    buffer, got = bytearray(), []
    for i in range(0, len(stream), 997):
        buffer += stream[i : i + 997]
        got += split_frames(buffer)
    assert got == [(BATCH, body), (RESULTS, b"r")] and not buffer


def test_worker_core_peels_like_the_node_and_refuses_garbage() -> None:
    keys = {7: MixPrivateKey.generate(), 8: MixPrivateKey.generate()}
    hops = [PathHop(bytes([i]) * 32, keys[7].public if i == 0 else keys[8].public)
            for i in range(2)]
    packets = [SX.create_forward(hops, [0.5], bytes(16), b"p%d" % i) for i in range(3)]
    no_key = b"\x02" + os.urandom(31) + b"\x00" + os.urandom(G.packet_len - 33)
    packets.append(no_key)  # canonical alpha, but no key of ours fits
    packets.append(os.urandom(G.packet_len - 1) + b"\x00")  # garbage
    core = WorkerCore(Sphinx(G))
    assert core.handle(KEYS, encode_keys(keys)) is None
    reply = core.handle(BATCH, encode_batch(1, [8, 7], [], packets))
    assert reply is not None
    (kind, body), = split_frames(bytearray(reply))
    assert kind == RESULTS
    batch_id, results = decode_results(body, G.packet_len, G.body_len)
    assert batch_id == 1
    live = [(8, keys[8]), (7, keys[7])]
    assert results == [unwrap(SX, live, [], p) for p in packets]
    assert [r if isinstance(r, str) else r[0] for r in results][:4] == [7, 7, 7, "bad_mac"]
    assert results[4] in {"malformed", "wrong_suite"}
    with pytest.raises(FrameError):
        core.handle(RESULTS, b"")
    with pytest.raises(FrameError):
        core.handle(BATCH, b"\x00\x01")


# ---------------------------------------------------------------------------------------------
# A node runtime with hop workers


class Node:
    """One mix's runtime (first layer of the kit's network), its sends recorded."""

    def __init__(self, kit: Any, tmp: Path, *, geometry: SphinxGeometry = G) -> None:
        self.kit = kit
        self.view = EpochView.from_document(kit.document(0))
        self.me = self.view.layer_members(1)[0]
        self.next = self.view.layer_members(2)[0]
        self.sent: list[bytes] = []
        node = kit.by_id(self.me)
        ring = KeyRing(EpochClock(0.0, kit.params.epoch_length), grace=10.0)
        for epoch, key in node.mix_keys.items():
            ring.add(epoch, key)
        self.runtime = NodeRuntime(
            settings=RuntimeSettings(
                role=NodeRole.MIX, node_id=self.me, max_hop_delay=120.0, pool_capacity=100_000,
                replay_capacity=100_000, replay_fp_rate=1e-6, mix_loop_rate=0.0,
                mean_hop_delay=0.5, pull_batch=4,
            ),
            sphinx=Sphinx(geometry), keyring=ring, send=self._send, rng=random.Random(1),
            replay_dir=tmp / "replay", time_offset=OFFSET - trio.current_time(),
        )
        self.runtime.install_view(self.view)
        self._changed = trio.Event()

    def _send(self, _next_node: bytes, packet: bytes) -> bool:
        self.sent.append(packet)
        self._changed.set()
        return True

    def _notify(self, fn: Callable[..., None]) -> Callable[..., None]:
        def wrapped(*args: Any) -> None:
            fn(*args)
            self._changed.set()

        return wrapped

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, checking after every send and every batch a worker
        answers; the deadline only guards against a hang, it paces nothing."""
        with trio.fail_after(HANG):
            while not condition():
                self._changed = trio.Event()
                await self._changed.wait()

    def packets(self, n: int) -> list[bytes]:
        path = [self.view.hops[i] for i in (self.me, self.next)]
        return [SX.create_forward(path, [0.0], bytes(16), b"") for _ in range(n)]

    def workers(self, count: int, **kw: Any) -> HopWorkers:
        hops = HopWorkers(
            count=count, geometry=self.runtime.sphinx.geometry, keyring=self.runtime.keyring,
            now=self.runtime.now, on_results=self._notify(self.runtime.on_hop_results),
            on_lost=self._notify(self.runtime.on_hop_lost), **kw,
        )
        self.runtime.hops = hops
        return hops

    def accounted(self) -> int:
        return self.runtime.processor.received

    def drops(self, reason: str) -> int:
        return self.runtime.statistics()["dropped"].get(reason, 0)  # type: ignore[union-attr]


async def test_a_flood_queues_a_fixed_number_and_the_excess_is_dropped_and_counted(
    make_network: Callable[..., Any], tmp_path: Path
) -> None:
    """Workers not started at all (the worst case: nothing drains): the queue holds exactly
    its capacity, every other packet is dropped and counted, and the books balance."""
    node = Node(make_network(mixes=3, providers=1), tmp_path)
    node.workers(2, queue_capacity=50)
    flood = node.packets(5)
    for i in range(1000):
        node.runtime.handle_packet(flood[i % 5])
    stats = node.runtime.statistics()
    assert stats["workers"]["queued"] == 50  # type: ignore[index]
    assert node.drops("hop_queue_full") == 950
    assert stats["workers"]["queue_full"] == 950  # type: ignore[index]
    assert stats["packets_in"] == 950  # the 50 queued are not decided yet


@pytest.mark.slow
async def test_a_worker_killed_under_load_is_replaced_and_nothing_is_forwarded_twice(
    make_network: Callable[..., Any], tmp_path: Path
) -> None:
    node = Node(make_network(mixes=3, providers=1), tmp_path)
    hops = node.workers(2, queue_capacity=100_000, batch_size=32)
    unique = node.packets(600)
    offered = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(node.runtime.run_pool)
        await nursery.start(hops.run)
        victim = hops.pids[0]
        assert victim is not None
        # Every packet twice (a replay attack), the copies interleaved with the originals.
        stream = [p for pair in zip(unique, unique, strict=True) for p in pair]
        for packet in stream[:400]:
            node.runtime.handle_packet(packet)
            offered += 1
        await node.wait_until(lambda: hops.counts["packets"] > 0)
        os.kill(victim, signal.SIGKILL)  # under load: batches are in flight
        for packet in stream[400:]:
            node.runtime.handle_packet(packet)
            offered += 1
        await node.wait_until(lambda: node.accounted() == offered)
        await node.wait_until(lambda: len(node.sent) == node.runtime.counts["pooled"])
        nursery.cancel_scope.cancel()
    stats = node.runtime.statistics()
    assert hops.counts["restarts"] >= 1
    assert hops.pids[0] != victim
    assert len(node.sent) == len(set(node.sent)), "a packet was forwarded twice"
    lost = node.drops("worker_lost")
    assert lost == hops.counts["lost"]
    assert lost <= 2 * 32 * 2  # only what the dead worker held: in_flight x batch_size (x2 ends)
    # Each unique packet is forwarded at most once; the other copy is a replay unless a copy
    # was lost with the worker.
    assert len(node.sent) + node.drops("replay") + lost == offered
    assert len(node.sent) >= len(unique) - lost
    assert stats["packets_in"] == offered
    # The replacement works: packets submitted after the kill were peeled.
    assert hops.counts["packets"] + lost == offered


@pytest.mark.slow
async def test_workers_run_suite_v1_too(make_network: Callable[..., Any], tmp_path: Path) -> None:
    """The suite travels to the worker on its command line: a v1 network's node peels v1."""
    from mixcore.params import NetworkParams

    params = NetworkParams(epoch_length=1000.0, genesis_time=0.0, sphinx_suite=SPHINX_SUITE_V1)
    kit = make_network(mixes=3, providers=1, params=params)
    for n in kit.nodes:
        n.mix_keys = {e: MixPrivateKey.generate(SPHINX_SUITE_V1) for e in (0, 1)}
    v1 = SphinxGeometry.from_params(params)
    node = Node(kit, tmp_path, geometry=v1)
    hops = node.workers(1)
    path = [node.view.hops[i] for i in (node.me, node.next)]
    packets = [Sphinx(v1).create_forward(path, [0.0], bytes(16), b"") for _ in range(5)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(node.runtime.run_pool)
        await nursery.start(hops.run)
        for packet in packets:
            node.runtime.handle_packet(packet)
        await node.wait_until(lambda: len(node.sent) == 5)
        nursery.cancel_scope.cancel()
    assert all(len(p) == v1.packet_len for p in node.sent)


@pytest.mark.slow
async def test_tags_a_crashed_node_acted_on_are_there_in_its_next_life(
    make_network: Callable[..., Any], tmp_path: Path
) -> None:
    """A node with a real worker forwards packets and dies without saving anything (as after a
    SIGKILL: no filter save, no close); a new node on the same data directory, with a new
    worker, is sent the same packets: every one is a replay, none goes out again."""
    kit = make_network(mixes=3, providers=1)
    first = Node(kit, tmp_path)
    hops = first.workers(1, batch_size=8)  # several batches, each journaled in one write
    packets = first.packets(40)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(first.runtime.run_pool)
        await nursery.start(hops.run)
        for packet in packets:
            first.runtime.handle_packet(packet)
        await first.wait_until(lambda: len(first.sent) == len(packets))
        nursery.cancel_scope.cancel()  # and nothing saved or closed
    second = Node(kit, tmp_path)
    hops = second.workers(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(second.runtime.run_pool)
        await nursery.start(hops.run)
        for packet in packets:
            second.runtime.handle_packet(packet)
        await second.wait_until(lambda: second.accounted() == len(packets))
        nursery.cancel_scope.cancel()
    assert second.drops("replay") == len(packets)
    assert second.sent == []
