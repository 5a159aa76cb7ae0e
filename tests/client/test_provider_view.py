"""What a corrupt provider and an observer of a client's link can learn, attacked as they would
(issue 13 items 1, 2, 3 and 10), on the in-memory network of real Sphinx nodes.

* The exit provider stores sealed items: real fragments (first messages, 1:1 and group texts,
  receipts, all produced by real messengers) and loops must be equal-length strings that no
  per-bit statistic or trained classifier separates better than chance.
* What returns to a client's own mailbox (SURB-ACKs) must not depend on how much it sends: a
  busy client and an idle one get the same number per interval, within a Poisson bound.
* The pull acknowledgement leaves at the pull time, whatever the batch held.
* An idle client's own loops, delivered twice, never show up as messages or as junk.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from client.actions import SendControl, SendPacket
from client.config import ClientConfig
from client.core import ClientCore
from client.e2e.identity import UserIdentity
from client.fragments import Fragment, LoopItem, decode_item
from client.mailbox_seal import seal
from client.messenger.messenger import Envelope, Messenger
from client.storage import KdfParams, Store
from mixcore.control import ControlKind, ItemType, PullRequest
from mixcore.payload import DROP_MAILBOX
from mixcore.sphinx import PathHop, Sphinx, Surb, SurbKeys

#: Argon2id far below the floor the store enforces; only tests may ask for it.
FAST_KDF = KdfParams(memory_kib=32, iterations=1, insecure_for_tests=True)

RUN = 300.0  # virtual seconds of traffic


class LabellingSphinx:
    """The real Sphinx, remembering for the test (never for the provider) what each SURB was
    built for: the forward packet made right after it says where it went."""

    def __init__(self, sphinx: Sphinx) -> None:
        self._sphinx = sphinx
        self.geometry = sphinx.geometry
        self.purpose: dict[bytes, str] = {}
        self._pending: SurbKeys | None = None
        self.owner_of: dict[bytes, bytes] = {}  # SURB id -> the sender's own mailbox

    def create_surb(
        self, path: Sequence[PathHop], delays: Sequence[float], mailbox: bytes
    ) -> tuple[Surb, SurbKeys]:
        surb, keys = self._sphinx.create_surb(path, delays, mailbox)
        self._pending = keys
        self.owner_of[keys.surb_id] = mailbox
        return surb, keys

    def create_forward(
        self, path: Sequence[PathHop], delays: Sequence[float], mailbox: bytes, payload: bytes
    ) -> bytes:
        if self._pending is not None:
            own = self.owner_of[self._pending.surb_id]
            kind = "decoy" if mailbox == DROP_MAILBOX else "loop" if mailbox == own else "real"
            self.purpose[self._pending.surb_id] = kind
            self._pending = None
        return self._sphinx.create_forward(path, delays, mailbox, payload)

    def __getattr__(self, name: str):
        return getattr(self._sphinx, name)


@dataclass
class World:
    net: object
    sphinx: LabellingSphinx
    handles: dict[str, object]
    messengers: dict[str, Messenger]
    sent_kinds: Counter[str] = field(default_factory=Counter)


def _messenger(root: Path, name: str, handle, net) -> Messenger:
    store = Store.create(root / f"{name}.db", "pw", kdf=FAST_KDF)
    store.save_identity(UserIdentity.generate())
    return Messenger(store, provider=handle.provider, mailbox=handle.mailbox,
                     mailbox_key=handle.core.mailbox_public, clock=lambda: net.now)


def _hand_over(handle, envelopes: list[Envelope], now: float) -> None:
    for env in envelopes:
        handle.core.send_message(env.provider, env.mailbox, env.data, now,
                                 seal_key=env.mailbox_key)


@pytest.fixture(scope="module")
def world(kit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Alice writes continuously (first messages, 1:1 and group texts) to Bob and Carol, who
    answer with receipts; Dave only runs his cover. Rates: payload 1/s, loops 1/s."""
    root = tmp_path_factory.mktemp("provider-view")
    params = kit.consensus.params.replace(payload_rate=1.0, loop_rate=1.0, drop_rate=0.2)
    net = kit.network(kit.make_consensus(kit.nodes, params), seed=11, max_latency=0.05)
    sphinx = LabellingSphinx(net.sphinx)
    net.sphinx = sphinx
    p = [d.node_id for d in net.consensus.providers()]
    config = ClientConfig(max_pending_fragments=10_000)
    handles = {
        name: net.add_client(name, provider, seed=i, config=config)
        for i, (name, provider) in enumerate(
            [("alice", p[0]), ("bob", p[1]), ("carol", p[1]), ("dave", p[2])]
        )
    }
    messengers = {n: _messenger(root, n, handles[n], net) for n in ("alice", "bob", "carol")}
    alice = messengers["alice"]
    for a, b in (("alice", "bob"), ("alice", "carol"), ("bob", "carol")):
        messengers[a].add_contact(messengers[b].card.to_text(), b)
        messengers[b].add_contact(messengers[a].card.to_text(), a)
    w = World(net, sphinx, handles, messengers)
    rng = random.Random(3)
    _hand_over(handles["alice"], alice.send_text("bob", "hello bob"), net.now)  # first messages
    _hand_over(handles["alice"], alice.send_text("carol", "hello carol"), net.now)
    _hand_over(handles["alice"], alice.create_group("g", ["bob", "carol"]), net.now)
    w.sent_kinds.update(first=2, group=2)
    seen = {n: 0 for n in handles}
    while net.now < kit.start + RUN:
        net.run_until(net.now + 5.0)
        queued = handles["alice"].core.statistics().fragments_queued
        while queued < 15:  # keep Alice's payload slots busy: 1:1 and group texts
            body = "x" * rng.choice([10, 200, 1500, 2500])
            if rng.random() < 0.3:
                envs = alice.send_group("g", body)
                w.sent_kinds["group"] += len(envs)
            else:
                envs = alice.send_text(rng.choice(["bob", "carol"]), body)
                w.sent_kinds["1:1"] += len(envs)
            _hand_over(handles["alice"], envs, net.now)
            queued = handles["alice"].core.statistics().fragments_queued
        for name, m in messengers.items():  # receipts (and nothing else) go back
            received = handles[name].received
            for event in received[seen[name]:]:
                replies = m.receive(event.data) or []
                if name != "alice":
                    w.sent_kinds["receipt"] += len(replies)
                _hand_over(handles[name], replies, net.now)
            seen[name] = len(received)
    yield w
    for m in messengers.values():
        m.store.close()


def _owner(world: World, mailbox: bytes):
    return next(h for h in world.handles.values() if h.mailbox == mailbox)


def _bits(items: list[bytes]) -> np.ndarray:
    return np.unpackbits(np.frombuffer(b"".join(items), dtype=np.uint8).reshape(len(items), -1),
                         axis=1).astype(np.float64)


def _assert_indistinguishable(a: list[bytes], b: list[bytes], what: str) -> None:
    """Three attacks on two classes of equal-length items; each must do no better than chance.

    1. A field: any bit position constant within one class (a version, a count, a length, a
       key's masked top bit). With n >= 100 items, a uniform bit is constant with p = 2^-99.
    2. Per-bit frequencies: |z| of the two classes' frequency difference at every bit position,
       below 5.5 (Bonferroni over ~13,000 positions: false alarm p < 1e-3).
    3. A trained classifier (nearest class mean over all bits) on half the items, tested on the
       other half (balanced): accuracy within 0.5 + 3.5 standard errors.
    """
    assert len(a) >= 100 and len(b) >= 100, (what, len(a), len(b))
    assert len({len(x) for x in a + b}) == 1, f"{what}: lengths differ"
    bits_a, bits_b = _bits(a), _bits(b)
    for name, rows in (("first", bits_a), ("second", bits_b)):
        constant = np.flatnonzero(rows.min(axis=0) == rows.max(axis=0))
        assert constant.size == 0, f"{what}: bits {constant[:8]} are constant in the {name} class"
    se = math.sqrt(0.25 / len(bits_a) + 0.25 / len(bits_b))
    worst = float(np.abs(bits_a.mean(axis=0) - bits_b.mean(axis=0)).max() / se)
    assert worst < 5.5, f"{what}: a bit position separates the classes (|z| = {worst:.1f})"
    n = min(len(bits_a), len(bits_b)) // 2
    mean_a, mean_b = bits_a[:n].mean(axis=0), bits_b[:n].mean(axis=0)
    test = np.vstack([bits_a[n : 2 * n], bits_b[n : 2 * n]])
    says_a = ((test - mean_a) ** 2).sum(axis=1) < ((test - mean_b) ** 2).sum(axis=1)
    right = int(says_a[:n].sum()) + int((~says_a[n:]).sum())
    accuracy = right / (2 * n)
    assert accuracy < 0.5 + 3.5 * math.sqrt(0.25 / (2 * n)), f"{what}: accuracy {accuracy:.3f}"


def test_a_corrupt_provider_cannot_tell_real_fragments_from_loops(world: World) -> None:
    """Every MESSAGE item any provider stored, labelled by opening it with its owner's key
    (which the provider does not have): first messages, 1:1 and group fragments, receipts, and
    loops."""
    assert min(world.sent_kinds[k] for k in ("first", "1:1", "group", "receipt")) >= 2
    by_label: dict[str, list[bytes]] = {"real": [], "loop": []}
    for _t, mailbox, kind, _sid, data in world.net.stored:
        if kind is ItemType.MESSAGE:
            owner = _owner(world, mailbox)
            item = decode_item(owner.core.mailbox_key.open(data), owner.core.fragment_len)
            label = "loop" if isinstance(item, LoopItem) else "real"
            assert isinstance(item, LoopItem | Fragment)
            by_label[label].append(data)
    assert {len(x) for x in by_label["real"]} == {world.handles["alice"].core.item_len}
    _assert_indistinguishable(by_label["real"], by_label["loop"], "real fragments vs loops")


def test_a_corrupt_provider_cannot_tell_the_acks_of_real_fragments_from_decoys_and_loops(
    world: World,
) -> None:
    by_purpose: dict[str, list[bytes]] = {"real": [], "decoy": [], "loop": []}
    for _t, _mailbox, kind, surb_id, body in world.net.stored:
        if kind is ItemType.REPLY:
            by_purpose[world.sphinx.purpose[surb_id]].append(surb_id + body)
    _assert_indistinguishable(by_purpose["real"], by_purpose["decoy"], "ACKs: real vs decoy")
    _assert_indistinguishable(by_purpose["real"], by_purpose["loop"], "ACKs: real vs loop")


def test_what_returns_to_a_clients_mailbox_does_not_depend_on_how_much_it_sends(
    world: World, kit
) -> None:
    """Alice's payload slots carried real fragments almost all the time, Dave's none; both got
    one SURB-ACK per payload slot and per loop."""
    alice, dave = world.handles["alice"], world.handles["dave"]
    a_stats, d_stats = alice.core.statistics(), dave.core.statistics()
    assert a_stats.packets_sent["real"] > 0.8 * a_stats.stream_events["payload"]
    assert d_stats.packets_sent["real"] == 0
    start, end = kit.start + 20.0, kit.start + RUN - 20.0  # steady state, ACKs back in time
    acks = Counter(
        mailbox for t, mailbox, kind, _s, _d in world.net.stored
        if kind is ItemType.REPLY and start <= t < end
    )
    n_a, n_d = acks[alice.mailbox], acks[dave.mailbox]
    expected = (1.0 + 1.0) * (end - start)  # (payload + loop rate) x time, nothing lost
    for n in (n_a, n_d):
        assert abs(n - expected) < 4 * math.sqrt(expected), (n, expected)
    assert abs(n_a - n_d) < 4 * math.sqrt(n_a + n_d), (n_a, n_d)


def test_the_pull_ack_leaves_at_the_pull_time_whatever_the_batch_held(kit) -> None:
    """Two cores on one seed; one's batches carry mail, the other's only dummies. The times of
    their PULL_ACK cells are identical, and each leaves with the next PULL_REQUEST."""
    times: dict[bool, list[float]] = {}
    for with_mail in (True, False):
        core = ClientCore(kit.consensus, provider=kit.consensus.providers()[0].node_id,
                          mailbox=b"M" * 16, rng=random.Random(5), now=kit.start,
                          sphinx=kit.fake_sphinx())
        acks: list[float] = []
        t = kit.start
        while len(acks) < 20:
            t = core.next_deadline()
            actions = core.poll(t)
            kinds = [a.kind for a in actions if isinstance(a, SendControl)]
            if ControlKind.PULL_ACK in kinds:
                acks.append(t)
                assert kinds[kinds.index(ControlKind.PULL_ACK) + 1] is ControlKind.PULL_REQUEST
            for a in actions:
                if isinstance(a, SendControl) and a.kind is ControlKind.PULL_REQUEST:
                    seq = PullRequest.decode(a.body).seq
                    real = []
                    if with_mail:
                        mid = seq.to_bytes(16, "big")
                        item = Fragment(mid, 0, 1, b"hi").encode(core.fragment_len)
                        real = [(ItemType.MESSAGE, bytes(16), seal(core.mailbox_public, item))]
                    for body in kit.batch_items(seq, kit.consensus.params.pull_batch, real,
                                                first_id=seq * 100):
                        out = core.receive_control(ControlKind.PULL_ITEM, body, t)
                        assert not any(isinstance(x, SendControl | SendPacket) for x in out)
        times[with_mail] = acks
    assert times[True] == times[False]


def test_an_idle_clients_loops_delivered_twice_never_become_messages_or_junk(kit) -> None:
    """Ten minutes of virtual time; every loop that comes back is put into the mailbox again
    (a provider re-serving, or a replay). Nothing reaches the inbox; duplicates are counted
    as such, never as undecryptable or forged items."""
    params = kit.consensus.params.replace(payload_rate=0.2, loop_rate=1.0, drop_rate=0.1)
    net = kit.network(kit.make_consensus(kit.nodes, params), seed=4, max_latency=0.05)
    p = [d.node_id for d in net.consensus.providers()]
    dave = net.add_client("dave", p[0], seed=9)
    end = kit.start + 600.0
    replayed, copies = 0, 0
    while net.now < end:
        net.run_until(net.now + 10.0)
        for _t, mailbox, kind, sid, data in net.stored[replayed:]:
            if kind is ItemType.MESSAGE and mailbox == dave.mailbox:
                copies += 1
                net.mailboxes[mailbox].append((10**9 + copies, kind, sid, data))
        replayed = len(net.stored)
    assert copies > 200
    stats = dave.core.statistics()
    assert dave.received == []
    assert stats.loops_returned > 400
    assert stats.drops.get("unexpected_loop", 0) >= stats.loops_returned // 2
    assert set(stats.drops) <= {"unexpected_loop"}, stats.drops
