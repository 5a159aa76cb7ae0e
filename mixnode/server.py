"""The trio shell of a mix node or provider: sockets, directory, epochs, signals, files.

``serve(config)`` runs everything in one nursery:

* the TCP listener: each accepted connection runs the Noise handshake; nodes of a current
  consensus are served as packet links, and (providers only) any other key is a client whose
  link key owns its mailbox;
* the runtime's pool scheduler and loop sender (``mixnode/runtime.py``);
* the consensus fetcher (``mixcore/net/directory_client.py``), installing a view per epoch;
* epoch upkeep: mix keys for the current and next epoch, descriptor upload to every authority,
  erasing keys (and their replay filters) after their grace, saving replay filters;
* the statistics file ``stats.json`` (and optionally a Prometheus endpoint).

Shutdown (SIGINT/SIGTERM or cancellation) stops accepting, saves the replay filters and the
statistics and closes the mailbox store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import signal
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import trio

from mixcore.consensus import VerifiedConsensus
from mixcore.control import ControlKind, PullAck, PullRequest
from mixcore.descriptor import NodeDescriptor, NodeRole, make_signed_descriptor
from mixcore.epochs import EpochClock
from mixcore.errors import DecodeError, LinkError, MixnetError
from mixcore.files import write_atomic
from mixcore.keys import IdentityKey, LinkKey, load_identity_key, load_link_key
from mixcore.link import CellKind, cell_size
from mixcore.net.directory_client import ConsensusFetcher, upload_descriptor
from mixcore.net.link import Link, accept_link
from mixcore.sphinx import MixPrivateKey, Sphinx, SphinxGeometry, load_mix_key, save_mix_key
from mixnode.config import NodeConfig
from mixnode.keyring import KeyRing
from mixnode.links import OutboundLinks
from mixnode.mailbox import MailboxStore
from mixnode.metrics import start_metrics_server
from mixnode.processor import Role
from mixnode.runtime import NodeRuntime, RuntimeSettings
from mixnode.view import EpochView, Peer
from mixnode.workers import HopWorkers

log = logging.getLogger("mixnet.mixnode")

IDENTITY_FILE = "identity.key"
LINK_FILE = "link.key"


class MixNode:
    """State shared by the server's tasks."""

    def __init__(self, config: NodeConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or random.SystemRandom()
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
            )
            if config.role is Role.PROVIDER
            else None
        )
        self.port = config.listen_port
        self._cell_size = cell_size(self.sphinx.geometry.packet_len)
        # Link-event tracing exists for the local testnet's traffic-analysis runs only: it
        # writes exactly the metadata a mix must never keep, so it is off unless the
        # MIXNET_TRACE environment variable names a file, and it says so loudly.
        trace_path = os.environ.get("MIXNET_TRACE")
        self._trace = open(trace_path, "a", buffering=1) if trace_path else None  # noqa: SIM115
        if self._trace is not None:
            log.warning("MIXNET_TRACE is set: recording link events (testnet use only)")
        self.uploaded_epochs: set[int] = set()
        self.links: OutboundLinks | None = None
        self.client_links = 0
        self.counts: dict[str, int] = {"links_accepted": 0, "links_rejected": 0}
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
            role=NodeRole.PROVIDER if self.config.role is Role.PROVIDER else NodeRole.MIX,
            layer=0,
            host=self.config.advertised_host,
            port=self.port,
            epoch=epoch,
            mix_keys=tuple(keys),
            name=self.config.name,
        )
        return make_signed_descriptor(desc, self.identity).wire

    async def register(self, epoch: int) -> bool:
        """Upload this epoch's descriptor to every authority; True once a majority accepted."""
        urls = [a.url for a in self.config.authorities]
        outcomes = await upload_descriptor(urls, self.descriptor(epoch), timeout=5.0)
        accepted = sum(o.accepted for o in outcomes)
        for outcome in outcomes:
            if not outcome.accepted:
                log.warning("authority %s refused descriptor: %s", outcome.url, outcome.reason)
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
            self.runtime.handle_packet(packet)
            return True
        if self.links is None:
            return False
        return self.links.send(node_id, packet)

    # -- links in ----------------------------------------------------------------

    def authorize(self, peer_key: bytes) -> bool:
        return self.config.role is Role.PROVIDER or peer_key in self.known_link_keys()

    async def handle_connection(self, stream: trio.SocketStream) -> None:
        try:
            link = await accept_link(
                stream,
                local_key=self.link_key,
                body_size=self.sphinx.geometry.packet_len,
                handshake_timeout=self.config.handshake_timeout,
                authorize=self.authorize,
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
                    await self._serve_client_link(link)
        except (LinkError, DecodeError):
            pass  # the peer broke the protocol or left: only this link closes

    async def _serve_node_link(self, link: Link) -> None:
        while True:
            for kind, body in await link.receive_cells():
                if kind != CellKind.PACKET:
                    self._count("bad_cells")
                    return
                self.runtime.handle_packet(body)

    async def _serve_client_link(self, link: Link) -> None:
        assert self.mailbox is not None and link.remote_static is not None
        address = self.mailbox.register(link.remote_static, self.runtime.now())
        self.client_links += 1
        try:
            while True:
                for kind, body in await link.receive_cells():
                    if kind == CellKind.PACKET:
                        if self._trace is not None:
                            client = f"client-{link.remote_static[:4].hex()}"
                            self._record(client, self.config.name, body)
                        self.runtime.handle_packet(body)
                    elif kind == ControlKind.PULL_REQUEST:
                        request = PullRequest.decode(body)
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

    async def run_upkeep(self) -> None:
        """Once a second: keys, descriptor, retirement, periodic saves."""
        last_save = last_stats = self.runtime.now()
        while True:
            now = self.runtime.now()
            epoch = self.clock.epoch_at(now)
            self.ensure_mix_keys(now)
            if epoch not in self.uploaded_epochs:
                with suppress(MixnetError):
                    await self.register(epoch)
            self.erase_old_keys()
            if self.mailbox is not None:
                self.mailbox.expire(now)
            if now - last_save >= self.config.replay_save_interval:
                self.runtime.save_filters()
                last_save = now
            if now - last_stats >= self.config.stats_interval:
                self.write_stats()
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
            stats["links"] = self.links.statistics()
        return stats

    def write_stats(self) -> None:
        body = json.dumps(self.statistics()).encode()
        write_atomic(self.config.data_dir / "stats.json", body, durable=False)

    def shutdown(self) -> None:
        """Persist what must survive a restart (also runs on cancellation)."""
        self.runtime.save_filters()
        self.write_stats()
        if self.mailbox is not None:
            self.mailbox.close()
        if self._trace is not None:
            self._trace.close()


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
    node = MixNode(config)
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
    )
    try:
        async with trio.open_nursery() as nursery:
            node.links = OutboundLinks(
                nursery,
                local_key=node.link_key,
                body_size=node.sphinx.geometry.packet_len,
                resolve=node.resolve,
                backlog=config.link_backlog,
                handshake_timeout=config.handshake_timeout,
                rng=random.Random(),
            )
            nursery.start_soon(_watch_signals, nursery.cancel_scope)
            nursery.start_soon(trio.serve_listeners, node.handle_connection, listeners)
            nursery.start_soon(node.run_upkeep)
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
                start_metrics_server(config.metrics_port, node.statistics)
            task_status.started(node.port)
    finally:
        node.shutdown()
