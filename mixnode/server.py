"""The trio shell of a mix node or provider: sockets, directory, epochs, signals, files.

``serve(config)`` runs everything in one nursery:

* the TCP listener: each accepted connection runs the Noise handshake; nodes of a current
  consensus are served as packet links, and (providers only) any other key is a client whose
  link key owns its mailbox;
* the runtime's pool scheduler and loop sender (``mixnode/runtime.py``);
* the consensus fetcher (``mixcore/net/directory_client.py``), installing a view per epoch;
* descriptor upload to every authority, in its own task (a slow authority delays nothing else);
* epoch upkeep: mix keys for the current and next epoch, erasing keys (and their replay
  filters) after their grace, saving replay filters, expiring mail and idle mailboxes;
* the statistics file ``stats.json`` (and optionally a Prometheus endpoint reading the snapshot
  the loop publishes with it).

Limits (``mixnode/limits.py``), each refusing the newcomer and keeping the node serving what it
serves: connections in all, per source address and with a reserve for consensus nodes; an idle
timeout on every link; per client link a packet rate; per mailbox a storage rate; new mailboxes
per source and per window. Any error while serving one connection closes that connection only,
is counted, and writes at most one log line per kind and minute.

Shutdown (SIGINT/SIGTERM or cancellation) stops accepting, saves the replay filters and the
statistics and closes the mailbox store.

**Why one module of ~630 lines:** it is the node's whole contact with the world, and its tasks
share one nursery, one set of limits and one shutdown order; each task is a short loop. The
decisions are elsewhere: about packets in :mod:`mixnode.core` (driven by
:mod:`mixnode.runtime`), about limits in :mod:`mixnode.limits`, about outbound queues in
:mod:`mixnode.links`, about keys in :mod:`mixnode.keyring`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import signal
import sqlite3
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import trio

from mixcore.consensus import VerifiedConsensus
from mixcore.control import ControlKind, PullAck, PullRequest
from mixcore.descriptor import NodeDescriptor, make_signed_descriptor
from mixcore.epochs import EpochClock
from mixcore.errors import DecodeError, LinkError, MixnetError
from mixcore.files import write_atomic
from mixcore.hop import Arrival
from mixcore.keys import IdentityKey, LinkKey, load_identity_key, load_link_key
from mixcore.link import CellKind, cell_size
from mixcore.loading import load_mix_key, save_mix_key
from mixcore.net.directory_client import ConsensusFetcher, upload_descriptor
from mixcore.net.link import Link, accept_link
from mixcore.process import nofile_limit
from mixcore.ratelog import RateLimitedLog
from mixcore.sphinx import MixPrivateKey, Sphinx, SphinxGeometry
from mixcore.topology import NodeRole
from mixnode.config import NodeConfig
from mixnode.figures import EpochFigures
from mixnode.keyring import KeyRing
from mixnode.limits import ConnectionLimiter, Slot, TokenBucket, WindowCounter
from mixnode.links import OutboundLinks
from mixnode.mailbox import MailboxFull, MailboxStore
from mixnode.metrics import start_metrics_server
from mixnode.runtime import NodeRuntime, RuntimeSettings
from mixnode.view import EpochView, Peer
from mixnode.workers import HopWorkers

log = logging.getLogger("mixnet.mixnode")

IDENTITY_FILE = "identity.key"
LINK_FILE = "link.key"


class MixNode:
    """State shared by the server's tasks."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        rng: random.Random | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        self.rng = rng or random.SystemRandom()
        self.http = http
        """Client for the authorities (one for the node's lifetime; None: one per upload)."""
        data = config.data_dir
        self.identity: IdentityKey = load_identity_key(data / IDENTITY_FILE)
        self.link_key: LinkKey = load_link_key(data / LINK_FILE)
        self.clock = EpochClock.from_params(config.params)
        self.sphinx = Sphinx(SphinxGeometry.from_params(config.params))
        self.keyring = KeyRing(self.clock, config.effective_grace)
        self.mailbox = (
            MailboxStore(
                data / "mailboxes.db",
                ttl=config.mailbox_ttl,
                max_items_per_mailbox=config.max_items_per_mailbox,
                max_mailboxes=config.max_mailboxes,
                idle_ttl=config.effective_mailbox_idle_ttl,
            )
            if config.role is NodeRole.PROVIDER
            else None
        )
        self.port = config.listen_port
        self._cell_size = cell_size(self.sphinx.geometry.packet_len)
        # Link-event tracing exists for the local testnet's traffic-analysis runs only: it
        # writes exactly the metadata a mix must never keep, so it is off unless the config's
        # trace_path (``mixnet mixnode run --trace FILE``) names a file, and it says so loudly.
        trace_path = config.trace_path
        self._trace = open(trace_path, "a", buffering=1) if trace_path else None  # noqa: SIM115
        if self._trace is not None:
            log.warning("trace_path is set: recording link events to %s (testnet use only)",
                        trace_path)
        self.uploaded_epochs: set[int] = set()
        # Per-epoch traffic figures for the descriptor (the clients' anonymity meter).
        self.figures = EpochFigures(self.clock.epoch_at)
        self.links: OutboundLinks | None = None
        self.client_links = 0
        self.counts: dict[str, int] = {"links_accepted": 0, "links_rejected": 0}
        self.refusals = RateLimitedLog(log)
        total = config.connection_limit(nofile_limit())
        self.connections = ConnectionLimiter(
            total=total,
            per_source=config.max_connections_per_source,
            reserve=min(config.peer_reserve, total // 4),
            is_node_address=self._is_node_address,
        )
        window = config.registration_window
        self.registrations_by_source = WindowCounter(config.registrations_per_source, window)
        self.registrations_total = WindowCounter(config.effective_registrations_per_window, window)
        self._node_hosts: tuple[tuple[int, ...], frozenset[str]] = ((), frozenset())
        self.snapshot: dict[str, Any] = {}
        """The latest statistics, published by the event loop for the metrics thread."""
        self.runtime = NodeRuntime(
            settings=RuntimeSettings(
                role=config.role,
                node_id=self.identity.public,
                max_hop_delay=config.effective_max_hop_delay,
                pool_capacity=config.pool_capacity,
                replay_capacity=config.replay_capacity,
                replay_fp_rate=config.replay_fp_rate,
                mix_loop_rate=config.params.mix_loop_rate,
                mean_hop_delay=config.params.mean_hop_delay,
                pull_batch=config.params.pull_batch,
                mailbox_item_rate=config.mailbox_item_rate,
                mailbox_item_burst=config.mailbox_item_burst,
            ),
            sphinx=self.sphinx,
            keyring=self.keyring,
            send=self._send,
            rng=self.rng if isinstance(self.rng, random.Random) else random.Random(),
            replay_dir=data / "replay",
            mailbox=self.mailbox,
            time_offset=0.0,
        )
        if self._trace is not None:
            self.runtime.on_forward = self._record_hop

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    # -- keys and descriptors ----------------------------------------------------------------

    def _mix_key_path(self, epoch: int) -> Path:
        return self.config.data_dir / "mixkeys" / f"mix-{epoch}.key"

    def ensure_mix_keys(self, now: float) -> None:
        """Keys for the current and next epochs exist (generated once, kept on disk 0600)."""
        current = self.clock.epoch_at(now)
        for epoch in (current - 1, current, current + 1):
            if self.keyring.get(epoch) is not None:
                continue
            path = self._mix_key_path(epoch)
            suite = self.sphinx.geometry.suite
            key = load_mix_key(path)[1] if path.exists() else None
            if key is not None and key.suite != suite:  # the network changed suites
                key = None
            if key is None:
                if epoch < current:
                    continue
                key = MixPrivateKey.generate(suite)
                save_mix_key(path, key, epoch)
            self.keyring.add(epoch, key)
        self.runtime.sync_filters()  # each key's replay filter, loaded before any packet

    def erase_old_keys(self) -> None:
        for epoch in self.runtime.erase_expired_keys():
            self._mix_key_path(epoch).unlink(missing_ok=True)
            log.info("erased mix key of epoch %d", epoch)

    def descriptor(self, epoch: int) -> bytes:
        keys = []
        for e in (epoch, epoch + 1):
            key = self.keyring.get(e)
            assert key is not None, "ensure_mix_keys first"
            keys.append((e, key.public))
        desc = NodeDescriptor(
            identity_key=self.identity.public,
            link_key=self.link_key.public,
            role=self.config.role,
            layer=0,
            host=self.config.advertised_host,
            port=self.port,
            epoch=epoch,
            mix_keys=tuple(keys),
            name=self.config.name,
            traffic=self.figures.for_descriptor(epoch),
        )
        return make_signed_descriptor(desc, self.identity).wire

    async def register(self, epoch: int) -> bool:
        """Upload this epoch's descriptor to every authority; True once a majority accepted."""
        urls = [a.url for a in self.config.authorities]
        outcomes = await upload_descriptor(
            urls, self.descriptor(epoch), timeout=5.0, client=self.http
        )
        accepted = sum(o.accepted for o in outcomes)
        for outcome in outcomes:
            if not outcome.accepted:
                self.refusals(
                    f"upload:{outcome.url}",
                    f"authority {outcome.url} refused descriptor: {outcome.reason}",
                )
        if accepted * 2 > len(urls):
            self.uploaded_epochs.add(epoch)
            return True
        return False

    # -- consensus ----------------------------------------------------------------

    def on_consensus(self, verified: VerifiedConsensus) -> None:
        doc = verified.document
        if doc.params != self.config.params:
            log.error("consensus for epoch %d has other network parameters; ignored", doc.epoch)
            self._count("consensus_param_mismatch")
            return
        self.runtime.install_view(EpochView.from_document(doc))
        listed = doc.node_by_id(self.identity.public) is not None
        log.info("consensus %d installed (%s)", doc.epoch, "listed" if listed else "not listed")

    def resolve(self, node_id: bytes) -> Peer | None:
        for epoch in sorted(self.runtime.views, reverse=True):
            peer = self.runtime.views[epoch].peers.get(node_id)
            if peer is not None:
                return peer
        return None

    def known_link_keys(self) -> set[bytes]:
        keys: set[bytes] = set()
        for view in self.runtime.views.values():
            keys |= view.link_keys()
        return keys

    def node_of_link_key(self, link_key: bytes) -> bytes | None:
        """The node id a consensus lists with ``link_key`` (newest epoch first)."""
        for epoch in sorted(self.runtime.views, reverse=True):
            for node_id, peer in self.runtime.views[epoch].peers.items():
                if peer.link_key == link_key:
                    return node_id
        return None

    def _is_node_address(self, source: str) -> bool:
        """Is ``source`` the address of a node in a consensus we hold (cached per view set)?"""
        epochs = tuple(sorted(self.runtime.views))
        if self._node_hosts[0] != epochs:
            hosts = {
                peer.host
                for view in self.runtime.views.values()
                for node_id, peer in view.peers.items()
                if node_id != self.identity.public
            }
            self._node_hosts = (epochs, frozenset(hosts))
        return source in self._node_hosts[1]

    # -- packets out ----------------------------------------------------------------

    def _record(self, src: str, dst: str, packet: bytes) -> None:
        """One link event, plus the packet's digest: the testnet's ground truth, which lets
        the merged trace follow a packet across hops (the wire itself never shows it)."""
        if self._trace is not None:
            line = {"t": time.time(), "src": src, "dst": dst, "size": self._cell_size,
                    "pkt": _digest(packet)}
            self._trace.write(json.dumps(line) + "\n")

    def _record_hop(self, incoming: bytes, outgoing: bytes) -> None:
        if self._trace is not None:
            line = {"type": "hop", "in": _digest(incoming), "out": _digest(outgoing)}
            self._trace.write(json.dumps(line) + "\n")

    def _send(self, node_id: bytes, packet: bytes) -> bool:
        if self._trace is not None:
            peer = self.resolve(node_id)
            self._record(self.config.name, peer.name if peer else node_id[:4].hex(), packet)
        if node_id == self.identity.public:  # a one-node path: no link to ourselves
            self.runtime.handle_packet(packet, arrival=Arrival.LOCAL)
            return True
        if self.links is None:
            return False
        return self.links.send(node_id, packet)

    # -- links in ----------------------------------------------------------------

    def authorize(self, peer_key: bytes) -> bool:
        return self.config.role is NodeRole.PROVIDER or peer_key in self.known_link_keys()

    async def handle_connection(self, stream: trio.abc.Stream) -> None:
        """Serve one inbound connection; whatever happens, only this connection ends."""
        slot = self.connections.admit(_peer_address(stream))
        if slot is None:
            self._count("connections_refused")
            self.refusals("connections", "refusing connections: at the connection limit "
                          f"({self.connections.total} in all, "
                          f"{self.connections.per_source} per address)")
            with suppress(Exception):
                await stream.aclose()
            return
        try:
            await self._serve_connection(stream, slot)
        except Exception as exc:  # contained: a bug or a hostile peer costs one connection
            name = type(exc).__name__
            self._count("connection_errors")
            self._count(f"connection_error_{name}")
            self.refusals(f"error:{name}", f"closed a connection after {name}: {exc}")
            with suppress(Exception):
                await stream.aclose()
        finally:
            self.connections.release(slot)

    async def _serve_connection(self, stream: trio.abc.Stream, slot: Slot) -> None:
        def authorize(peer_key: bytes) -> bool:
            if slot.reserved and peer_key not in self.known_link_keys():
                return False  # the reserve is for consensus nodes only
            return self.authorize(peer_key)

        try:
            link = await accept_link(
                stream,
                local_key=self.link_key,
                body_size=self.sphinx.geometry.packet_len,
                handshake_timeout=self.config.handshake_timeout,
                authorize=authorize,
            )
        except LinkError:
            self.counts["links_rejected"] += 1
            with suppress(Exception):
                await stream.aclose()
            return
        self.counts["links_accepted"] += 1
        try:
            async with link:
                if link.remote_static in self.known_link_keys():
                    await self._serve_node_link(link)
                else:
                    await self._serve_client_link(link, slot.source)
        except (LinkError, DecodeError):
            pass  # the peer broke the protocol or left: only this link closes

    async def _receive(self, link: Link) -> list[tuple[int, bytes]] | None:
        """The next cells, or None when the link stayed quiet for ``idle_timeout``."""
        with trio.move_on_after(self.config.idle_timeout):
            return list(await link.receive_cells())
        self._count("links_idle_closed")
        return None

    async def _serve_node_link(self, link: Link) -> None:
        previous = self.node_of_link_key(link.remote_static)
        while True:
            cells = await self._receive(link)
            if cells is None:
                return
            for kind, body in cells:
                if kind != CellKind.PACKET:
                    self._count("bad_cells")
                    return
                self.runtime.handle_packet(
                    body, arrival=Arrival.NETWORK, previous_node=previous
                )

    def _register_client(self, credential: bytes, source: str) -> bytes | None:
        """The client's mailbox address, registering a new mailbox within the limits; None
        (counted, one log line per minute) when a limit refuses it."""
        assert self.mailbox is not None
        now = self.runtime.now()
        if self.mailbox.is_registered(credential):
            return self.mailbox.register(credential, now)
        if not self.registrations_by_source.allowed(source, now):
            self._count("registrations_refused_per_source")
            self.refusals("registrations_source", "refusing new mailboxes from one address: "
                          f"{self.registrations_by_source.limit} per "
                          f"{self.registrations_by_source.window:g} s")
            return None
        if not self.registrations_total.allowed("all", now):
            self._count("registrations_refused_per_window")
            self.refusals("registrations_total", "refusing new mailboxes: "
                          f"{self.registrations_total.limit} per "
                          f"{self.registrations_total.window:g} s reached")
            return None
        try:
            address = self.mailbox.register(credential, now)
        except MailboxFull:
            self._count("registrations_refused_full")
            self.refusals("registrations_full", "refusing new mailboxes: provider full "
                          f"({self.mailbox.max_mailboxes})")
            return None
        self.registrations_by_source.record(source, now)
        self.registrations_total.record("all", now)
        self._count("mailboxes_registered")
        return address

    async def _serve_client_link(self, link: Link, source: str) -> None:
        assert self.mailbox is not None and link.remote_static is not None
        address = self._register_client(link.remote_static, source)
        if address is None:
            return
        rate = TokenBucket(
            self.config.effective_client_packet_rate,
            self.config.effective_client_packet_burst,
            self.runtime.now(),
        )
        self.client_links += 1
        try:
            while True:
                cells = await self._receive(link)
                if cells is None:
                    return
                # A node whose link came up before this node installed the consensus listing
                # it was taken for a client; once it is listed, its packets are a node's
                # (else its deliveries would be refused as client_delivery for the link's life).
                as_node = self.node_of_link_key(link.remote_static)
                for kind, body in cells:
                    if kind == CellKind.PACKET and as_node is not None:
                        self.runtime.handle_packet(
                            body, arrival=Arrival.NETWORK, previous_node=as_node
                        )
                    elif kind == CellKind.PACKET:
                        if not rate.take(self.runtime.now()):
                            self._count("client_rate_limited")
                            continue
                        if self._trace is not None:
                            client = f"client-{link.remote_static[:4].hex()}"
                            self._record(client, self.config.name, body)
                        self.runtime.handle_packet(body, arrival=Arrival.CLIENT)
                    elif kind == ControlKind.PULL_REQUEST:
                        request = PullRequest.decode(body)
                        self.mailbox.touch(address, self.runtime.now())
                        with trio.fail_after(self.config.idle_timeout):  # a reader that stalls
                            for item in self.runtime.pull_response(address, request.seq):
                                await link.send_cell(ControlKind.PULL_ITEM, item)
                    elif kind == ControlKind.PULL_ACK:
                        ack = PullAck.decode(body)
                        self.runtime.acknowledge(address, list(ack.item_ids))
                    else:
                        self._count("bad_cells")
                        return
        finally:
            self.client_links -= 1

    # -- upkeep ----------------------------------------------------------------

    def _observe_figures(self, now: float) -> None:
        stats: dict[str, object] = self.runtime.statistics()
        count = {k: int(stats.get(k, 0))  # type: ignore[call-overload]
                 for k in ("packets_in", "pool_size", "loops_returned", "loops_lost")}
        self.figures.observe(now, packets_in=count["packets_in"], pool_size=count["pool_size"],
                             loops_returned=count["loops_returned"],
                             loops_lost=count["loops_lost"])

    async def run_registration(self) -> None:
        """Upload this epoch's descriptor until a majority accepted it, in its own task: a
        slow or hostile authority delays nothing else (uploads have a whole-request
        deadline too)."""
        while True:
            now = self.runtime.now()
            epoch = self.clock.epoch_at(now)
            # Before a new epoch's upload, so that its descriptor carries the figures of the
            # epoch that just ended (frozen: every retry uploads the same bytes).
            self._step("traffic figures", self._observe_figures, now)
            if epoch not in self.uploaded_epochs:
                self._step("mix keys", self.ensure_mix_keys, now)
                ready = all(self.keyring.get(e) is not None for e in (epoch, epoch + 1))
                if ready:
                    with suppress(MixnetError, httpx.HTTPError):
                        await self.register(epoch)
            await trio.sleep(1.0)

    def _step(self, what: str, fn: Callable[..., object], *args: Any) -> None:
        """One upkeep step; a full disk or descriptor table fails the step, not the node."""
        try:
            fn(*args)
        except (OSError, sqlite3.Error) as exc:
            self._count("upkeep_errors")
            self.refusals(f"upkeep:{what}", f"{what} failed: {exc}")

    async def run_upkeep(self) -> None:
        """Once a second: keys, retirement, expiry, periodic saves, statistics."""
        last_save = last_stats = self.runtime.now()
        while True:
            now = self.runtime.now()
            self._step("mix keys", self.ensure_mix_keys, now)
            self._step("key erasure", self.erase_old_keys)
            if self.mailbox is not None:
                self._step("mailbox expiry", self.mailbox.expire, now)
            if now - last_save >= self.config.replay_save_interval:
                self._step("replay filter save", self.runtime.save_filters)
                last_save = now
            if now - last_stats >= self.config.stats_interval:
                self._step("statistics", self.write_stats)
                last_stats = now
            await trio.sleep(min(1.0, self.config.stats_interval))

    def statistics(self) -> dict[str, Any]:
        stats = self.runtime.statistics()
        stats.update(
            {
                "name": self.config.name,
                "role": self.config.role.value,
                "node_id": self.identity.public.hex(),
                "epoch": self.clock.epoch_at(self.runtime.now()),
                "consensus_epochs": sorted(self.runtime.views),
                "client_links": self.client_links,
                **self.counts,
            }
        )
        if self.links is not None:
            stats["links"] = self.links.statistics().as_dict()
        stats.update(self.connections.statistics())
        return stats

    def write_stats(self) -> None:
        """Publish a snapshot (for the metrics thread) and write ``stats.json``."""
        stats = self.statistics()
        self.snapshot = stats
        write_atomic(self.config.data_dir / "stats.json", json.dumps(stats).encode(),
                     durable=False)

    def shutdown(self) -> None:
        """Persist what must survive a restart (also runs on cancellation)."""
        self.runtime.save_filters()
        self.write_stats()
        if self.mailbox is not None:
            self.mailbox.close()
        if self._trace is not None:
            self._trace.close()


def _peer_address(stream: trio.abc.Stream) -> str | None:
    try:
        return str(stream.socket.getpeername()[0])  # type: ignore[attr-defined]
    except (AttributeError, OSError, IndexError):
        return None


def _digest(packet: bytes) -> str:
    return hashlib.sha256(packet).hexdigest()[:16]


async def _watch_signals(cancel_scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            cancel_scope.cancel()
            return


async def serve(
    config: NodeConfig, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a node until cancelled; ``task_status.started(port)`` once it is listening."""
    async with httpx.AsyncClient() as http:
        node = MixNode(config, http=http)
        try:
            await _serve(node, task_status)
        finally:
            node.shutdown()


async def _serve(node: MixNode, task_status: trio.TaskStatus[int]) -> None:
    config = node.config
    node.runtime.time_offset = time.time() - trio.current_time()
    node.ensure_mix_keys(node.runtime.now())
    listeners = await trio.open_tcp_listeners(config.listen_port, host=config.listen_host)
    node.port = listeners[0].socket.getsockname()[1]
    fetcher = ConsensusFetcher(
        [a.url for a in config.authorities],
        config.authority_set,
        node.clock,
        rng=random.Random(),
        on_consensus=node.on_consensus,
        now=node.runtime.now,
        timeout=5.0,
        client=node.http,
    )
    async with trio.open_nursery() as nursery:
        node.links = OutboundLinks(
            nursery,
            local_key=node.link_key,
            body_size=node.sphinx.geometry.packet_len,
            resolve=node.resolve,
            backlog=config.link_backlog,
            handshake_timeout=config.handshake_timeout,
            rng=random.Random(),
            # Close an idle outbound link a little before the peer's idle timeout would.
            idle_timeout=config.idle_timeout * 0.9,
        )
        nursery.start_soon(_watch_signals, nursery.cancel_scope)
        nursery.start_soon(trio.serve_listeners, node.handle_connection, listeners)
        nursery.start_soon(node.run_upkeep)
        nursery.start_soon(node.run_registration)
        nursery.start_soon(fetcher.run)
        nursery.start_soon(node.runtime.run_pool)
        nursery.start_soon(node.runtime.run_loops)
        if config.effective_workers:  # the hop in worker processes (mixnode/workers.py)
            node.runtime.hops = HopWorkers(
                count=config.effective_workers,
                geometry=node.sphinx.geometry,
                keyring=node.keyring,
                now=node.runtime.now,
                on_results=node.runtime.on_hop_results,
                on_lost=node.runtime.on_hop_lost,
                queue_capacity=config.hop_queue,
            )
            await nursery.start(node.runtime.hops.run)
        if config.metrics_port:
            node.write_stats()  # a first snapshot before the first scrape
            start_metrics_server(config.metrics_port, lambda: node.snapshot)
        task_status.started(node.port)
