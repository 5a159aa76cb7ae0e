"""A provider's server shell in process, on a virtual clock, over in-memory streams: whatever
one connection meets stays in that connection (issue 13 item 5), a slow authority delays no
upkeep (issue 15 item 5), and a client link can neither deliver into a mailbox (issue 15 item
6) nor outrun its packet rate, nor register mailboxes beyond the limits.

Real processes for what is about processes are in ``test_hostile_provider.py``.
"""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from mixcore.consensus import AuthorityRef, build_consensus
from mixcore.control import ControlKind, ItemType, PullAck, PullItem, PullRequest
from mixcore.errors import DecodeError, LinkClosed, LinkError, PacketError
from mixcore.keys import IdentityKey, LinkKey, save_identity_key, save_link_key
from mixcore.net.link import Link, open_link_over_stream
from mixcore.params import NetworkParams
from mixcore.payload import MailboxPayload
from mixcore.routing import mailbox_address
from mixcore.sphinx import Sphinx, SphinxGeometry
from mixcore.topology import NodeRole
from mixnode.config import NodeConfig
from mixnode.mailbox import MailboxFull
from mixnode.server import IDENTITY_FILE, LINK_FILE, MixNode
from mixnode.view import EpochView

PARAMS = NetworkParams(epoch_length=600.0, genesis_time=1000.0, mean_hop_delay=0.05,
                       pull_batch=3)
SX = Sphinx(SphinxGeometry.from_params(PARAMS))
AUTHORITY = AuthorityRef("http://authority.invalid", IdentityKey.generate().public)


def make_node(tmp_path: Path, *, http: httpx.AsyncClient | None = None, **settings: Any) -> MixNode:
    data = tmp_path / "provider"
    data.mkdir(exist_ok=True)
    if not (data / IDENTITY_FILE).exists():
        save_identity_key(data / IDENTITY_FILE, IdentityKey.generate())
        save_link_key(data / LINK_FILE, LinkKey.generate())
    config = NodeConfig(
        name="provider", role=NodeRole.PROVIDER, data_dir=data, listen_host="127.0.0.1",
        listen_port=0, authorities=(AUTHORITY,), threshold=1, params=PARAMS, **settings,
    )
    node = MixNode(config, http=http)
    # Virtual time 0 is a moment inside epoch 0.
    node.runtime.time_offset = PARAMS.genesis_time + 10.0 - trio.current_time()
    node.ensure_mix_keys(node.runtime.now())
    return node


async def connect(node: MixNode, nursery: trio.Nursery, key: LinkKey) -> Link:
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(node.handle_connection, server)
    return await open_link_over_stream(
        client, local_key=key, remote_static=node.link_key.public,
        body_size=SX.geometry.packet_len,
    )


async def pull(link: Link, seq: int) -> list[PullItem]:
    await link.send_cell(ControlKind.PULL_REQUEST, PullRequest(seq).encode())
    items = []
    with trio.fail_after(10):
        while len(items) < PARAMS.pull_batch:
            kind, body = await link.receive_cell()
            assert kind == ControlKind.PULL_ITEM
            items.append(PullItem.decode(body))
    return items


ERRORS = [
    MailboxFull("provider hosts its maximum number of mailboxes"),
    sqlite3.OperationalError("database or disk is full"),
    sqlite3.DatabaseError("database disk image is malformed"),
    OSError(24, "Too many open files"),
    PacketError("bad packet"),
    ValueError("a bug"),
    KeyError("a bug"),
    RuntimeError("a bug"),
    trio.BrokenResourceError(),
    trio.TooSlowError(),
    MemoryError(),
    DecodeError("bad cell body"),
    LinkError("link broke"),
]


def _inject(node: MixNode, where: str, error: BaseException) -> None:
    def fail(*_args: object, **_kwargs: object) -> Any:
        raise error

    assert node.mailbox is not None
    target = {"register": node.mailbox, "packet": node.runtime, "pull": node.runtime,
              "ack": node.runtime}[where]
    name = {"register": "register", "packet": "handle_packet", "pull": "pull_response",
            "ack": "acknowledge"}[where]
    setattr(target, name, fail)


@pytest.mark.parametrize("where", ["register", "packet", "pull", "ack"])
async def test_any_error_in_one_connection_closes_only_that_connection(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, where: str
) -> None:
    """Each exception type the handler can meet, raised where it would be: the connection that
    met it closes, is counted, and the provider keeps serving the client it served."""
    node = make_node(tmp_path, registrations_per_source=100)
    assert node.mailbox is not None
    saved = {name: getattr(target, name) for target, name in [
        (node.mailbox, "register"), (node.runtime, "handle_packet"),
        (node.runtime, "pull_response"), (node.runtime, "acknowledge")]}

    def restore() -> None:
        assert node.mailbox is not None
        node.mailbox.register = saved["register"]  # type: ignore[method-assign]
        for name in ("handle_packet", "pull_response", "acknowledge"):
            setattr(node.runtime, name, saved[name])

    async with trio.open_nursery() as nursery:
        async with await connect(node, nursery, LinkKey.generate()) as link:  # being served
            await pull(link, 0)
            for seq, error in enumerate(ERRORS, 1):
                _inject(node, where, error)
                with trio.fail_after(10):
                    try:
                        async with await connect(node, nursery, LinkKey.generate()) as bad:
                            if where == "packet":
                                await bad.send_packet(bytes(SX.geometry.packet_len))
                            elif where == "pull":
                                await bad.send_cell(ControlKind.PULL_REQUEST,
                                                    PullRequest(1).encode())
                            elif where == "ack":
                                await bad.send_cell(ControlKind.PULL_ACK,
                                                    PullAck(1, (5,)).encode())
                            await bad.receive_cell()  # the provider closes this link
                    except LinkClosed:
                        pass
                restore()
                # The provider still serves the client it served.
                assert len(await pull(link, seq)) == PARAMS.pull_batch
                name = type(error).__name__
                if where == "register" and isinstance(error, MailboxFull):
                    assert node.counts["registrations_refused_full"] == 1  # a refusal
                elif not isinstance(error, LinkError | DecodeError):
                    assert node.counts[f"connection_error_{name}"] == 1, name
            async with await connect(node, nursery, LinkKey.generate()) as fresh:  # and new ones
                assert len(await pull(fresh, 1)) == PARAMS.pull_batch
        nursery.cancel_scope.cancel()
    assert node.connections.active == 0  # every place was given back


def _dripping_transport() -> httpx.MockTransport:
    class Drip(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[override]
            while True:
                yield b"."
                await trio.sleep(2.0)

    async def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Drip())

    return httpx.MockTransport(handle)


async def test_a_slow_authority_never_delays_upkeep(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Issue 15 item 5: upkeep waited 50 s instead of 4 s behind a slow authority."""
    async with httpx.AsyncClient(transport=_dripping_transport()) as http:
        node = make_node(tmp_path, http=http, stats_interval=1.0)
        writes: list[float] = []
        write_stats = node.write_stats

        def recording_write() -> None:
            writes.append(trio.current_time())
            write_stats()

        node.write_stats = recording_write  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.run_upkeep)
            nursery.start_soon(node.run_registration)
            await trio.sleep(30.0)
            nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(writes)]
    assert len(writes) >= 28 and max(gaps) <= 1.0 + 1e-6, gaps
    assert not node.uploaded_epochs  # the authority never answered in full


def _install_view(node: MixNode, make_network: Any) -> Any:
    """A consensus with this provider in it, three mixes and another provider."""
    kit = make_network(mixes=3, providers=1, params=PARAMS)
    me = kit.nodes[-1]
    me.identity = node.identity
    me.link = node.link_key
    epoch = node.clock.epoch_at(node.runtime.now())
    me.mix_keys = {e: node.keyring.get(e) for e in (epoch, epoch + 1)}
    document = build_consensus(epoch, PARAMS, [n.signed_descriptor(epoch) for n in kit.nodes])
    view = EpochView.from_document(document)
    node.runtime.install_view(view)
    return kit, view


async def test_a_strangers_one_hop_packets_never_reach_a_mailbox(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, make_network: Any
) -> None:
    """Issue 15 item 6: one-hop packets on a client link went straight into the mailbox."""
    node = make_node(tmp_path)
    _, view = _install_view(node, make_network)
    me = view.hops[node.identity.public]
    bob, mallory = LinkKey.generate(), LinkKey.generate()
    bob_mailbox = mailbox_address(bob.public)
    async with trio.open_nursery() as nursery:
        async with await connect(node, nursery, bob) as bob_link:
            await pull(bob_link, 1)  # Bob's mailbox exists
            surb, _ = SX.create_surb([me], [], mailbox_address(mallory.public))
            payload = MailboxPayload(surb, b"junk").encode(SX.geometry)
            async with await connect(node, nursery, mallory) as mallory_link:
                for _ in range(50):
                    junk = SX.create_forward([me], [], bob_mailbox, payload)
                    await mallory_link.send_packet(junk)
                # (a SURB reply aimed at Bob's mailbox, handed over on a client link, too)
                surb, _ = SX.create_surb([me], [], bob_mailbox)
                await mallory_link.send_packet(SX.package_reply(surb, b"junk reply"))
                await pull(mallory_link, 1)  # the provider has handled what came before
            assert [i.item_type for i in await pull(bob_link, 2)] == [ItemType.DUMMY] * 3
        nursery.cancel_scope.cancel()
    stats = node.runtime.statistics()
    assert stats["dropped"]["client_delivery"] == 51
    assert stats.get("stored_messages", 0) == 0 and stats.get("stored_replies", 0) == 0


async def test_a_client_link_is_held_to_its_packet_rate(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    node = make_node(tmp_path, client_packet_rate=10.0, client_packet_burst=20.0)
    handled: list[float] = []
    node.runtime.handle_packet = lambda *a, **k: handled.append(trio.current_time())  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        async with await connect(node, nursery, LinkKey.generate()) as link:
            for _ in range(100):  # a burst far above the rate
                await link.send_packet(bytes(SX.geometry.packet_len))
            await pull(link, 1)
            assert len(handled) == 20  # the burst, the rest dropped and counted
            await trio.sleep(1.5)
            for _ in range(100):
                await link.send_packet(bytes(SX.geometry.packet_len))
            await pull(link, 2)
        nursery.cancel_scope.cancel()
    assert len(handled) == 20 + 15  # 1.5 s at 10/s refilled 15 places (never beyond 20)
    assert node.counts["client_rate_limited"] == 200 - 35


async def test_new_mailboxes_are_limited_per_source_and_per_window(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    node = make_node(tmp_path, registrations_per_source=3, registrations_per_window=5,
                     registration_window=100.0, max_mailboxes=1000)
    registered, refused = 0, 0
    async with trio.open_nursery() as nursery:
        for _ in range(8):
            try:
                async with await connect(node, nursery, LinkKey.generate()) as link:
                    await pull(link, 1)
                    registered += 1
            except LinkClosed:
                refused += 1
        assert (registered, refused) == (3, 5)  # all from one (unknown) source
        assert node.counts["registrations_refused_per_source"] == 5
        await trio.sleep(100.0)  # the next window
        for _ in range(3):
            async with await connect(node, nursery, LinkKey.generate()) as link:
                await pull(link, 1)
        nursery.cancel_scope.cancel()
    assert node.mailbox is not None and node.mailbox.statistics().mailboxes == 6
