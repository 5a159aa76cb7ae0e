"""The client daemon (trio): keeps the Poisson streams going and serves the local API.

A thin shell around :class:`client.core.ClientCore`: it fetches the consensus, keeps one Noise
link to the client's provider (reconnecting with backoff), sleeps until the core's next
deadline, and carries out the core's actions in order: packets and control cells onto the link,
received messages into SQLite *before* the pull acknowledgement that lets the provider delete
them, delivery states into the outbox. The API socket lives in the 0700 data directory and is
itself 0600, so other local users cannot reach it.

**What it says.** At the default level the daemon logs its state changes, one line each:
waiting for a consensus (and why none came), connected to its provider, each new epoch, the
link down and being retried (once per outage, not per attempt), the consensus stale (no
document for the running epoch yet). Never anything per packet or per message: who sent what
when is metadata, and logs are kept. A second daemon on the same directory exits at once
naming the first one's PID (:mod:`client.daemon_lock`).

The streams keep their Poisson timing while the link is down: a packet due then is dropped and
counted rather than sent later in a burst, which would mark the moment of reconnection. The core
is told (``set_link``), so its payload slots carry cover meanwhile and no attempt of a real
fragment is spent into the dead link: messages wait in the queue and go out when the link is
back; their retry budget is time counted from their creation, which the transport database
keeps across restarts.

**Messenger.** When the data directory holds an encrypted store (``messenger.db``, made by
``mixnet client init`` with a passphrase), the daemon unlocks it with the passphrase it was
given and runs :class:`client.messenger.messenger.Messenger` on top of the transport: every
received payload goes through it first (decrypted and stored, a receipt queued in answer);
payloads it cannot decrypt (raw ``mixnet client send`` traffic, garbage) are counted and kept in
the raw inbox as before. Transport events move the messages' delivery states. The passphrase is
never logged or kept beyond the unlock.

**Why one module of ~570 lines:** it is the one place where the client touches the world (the
provider link, the consensus watch, the API socket, the stats file), and these tasks share one
lifetime and one ``ClientCore``; each task is a short loop that only carries out the core's
actions. The API's handlers live in :mod:`client.daemon_ops`, the lock in
:mod:`client.daemon_lock`, the settings in :mod:`client.daemon_config`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from client import daemon_lock, daemon_ops
from client.actions import (
    Action,
    MessageDelivered,
    MessageReceived,
    MessageUndeliverable,
    SendControl,
    SendPacket,
)
from client.api import FrameReader, decode_body, encode_frame
from client.core import ClientCore
from client.daemon_config import DaemonConfig
from client.errors import ClientError
from client.mailbox_seal import MailboxKey
from client.messenger.messenger import Envelope, Messenger
from client.storage import Store
from client.transport_db import TransportDB
from mixcore.anonymity import meter_for
from mixcore.consensus import ConsensusDocument, VerifiedConsensus
from mixcore.epochs import EpochClock
from mixcore.errors import DecodeError, LinkError, MixnetError
from mixcore.files import write_atomic
from mixcore.keys import LinkKey, load_link_key
from mixcore.net.directory_client import ConsensusFetcher, ConsensusUnavailable, fetch_network
from mixcore.net.link import Link, connect_link
from mixcore.routing import mailbox_address
from mixcore.sphinx import SphinxGeometry
from mixcore.statistics import Statistics, Tally

log = logging.getLogger("mixnet.client")

RECONNECT_MIN = 0.2
RECONNECT_MAX = 10.0
STORE_NAME = "messenger.db"
EXPIRY_INTERVAL = 1.0
WATCH_INTERVAL = 1.0
#: While no consensus comes, say why (the authorities' answers) this often.
WAITING_REPORT_INTERVAL = 30.0


def format_address(provider: bytes, mailbox: bytes, mailbox_key: bytes) -> str:
    """A raw transport address: where to deliver, and the key every item is sealed to."""
    return f"{provider.hex()}:{mailbox.hex()}:{mailbox_key.hex()}"


def parse_address(text: str) -> tuple[bytes, bytes, bytes]:
    parts = text.strip().split(":")
    provider = mailbox = key = b""
    if len(parts) == 3:
        with suppress(ValueError):
            provider, mailbox, key = (bytes.fromhex(p) for p in parts)
    if (len(provider), len(mailbox), len(key)) != (32, 16, 32):
        raise ClientError("an address is PROVIDER_HEX:MAILBOX_HEX:MAILBOX_KEY_HEX (64, 32 and 64 "
                          "hex digits; mixnet client address prints yours)")
    return provider, mailbox, key


@dataclass(frozen=True, slots=True)
class DaemonStatistics(Statistics):
    """What the shell did, in counts (``mixnet client status --json`` shows them as "daemon")."""

    connected: int = 0
    connect_failed: int = 0
    link_lost: int = 0
    messenger_received: int = 0
    """Payloads the messenger decrypted and stored."""
    messages_received: int = 0
    """Payloads it could not (raw traffic), kept in the raw inbox."""
    api_oversized: int = 0
    """API connections closed for a frame over the size limit."""
    api_errors: int = 0
    """API requests answered with an error."""
    sent: dict[str, int] = field(default_factory=dict)
    """Packets onto the link, by kind (real, decoy, drop, loop)."""
    unsent_link_down: dict[str, int] = field(default_factory=dict)
    """Packets and control cells due while no link was up: dropped, never sent in a burst."""
    unsent_link_broke: dict[str, int] = field(default_factory=dict)


class ClientDaemon:
    def __init__(
        self,
        config: DaemonConfig,
        *,
        rng: random.Random | None = None,
        passphrase: str | None = None,
    ) -> None:
        self.config = config
        self.store: Store | None = None
        store_path = config.data_dir / STORE_NAME
        if store_path.exists():
            if not passphrase:
                raise ClientError(
                    "the message store is locked: give the passphrase (MIXNET_PASSPHRASE, "
                    "--passphrase-file, or run interactively)"
                )
            self.store = Store.open(store_path, passphrase)
        self.messenger: Messenger | None = None
        self.rng = rng or random.SystemRandom()
        self.link_key: LinkKey = load_link_key(config.link_key_path)
        self.mailbox = mailbox_address(self.link_key.public)
        self.mailbox_key = MailboxKey.from_link_key(self.link_key)
        self.db = TransportDB.open(config.data_dir, self.store)  # sealed, in the store
        self.core: ClientCore | None = None
        self.provider_id: bytes | None = None
        self.provider_name = ""
        self.link: Link | None = None
        self.time_offset = time.time() - trio.current_time()
        self.counts = Tally(DaemonStatistics)
        self.sent: Counter[str] = Counter()  # by PacketKind value
        self.unsent_link_down: Counter[str] = Counter()  # packets / controls
        self.unsent_link_broke: Counter[str] = Counter()
        self._wake = trio.Event()
        self._link_up = trio.Event()
        self._geometry = SphinxGeometry.from_params(config.params)

    def now(self) -> float:
        return self.time_offset + trio.current_time()

    # -- consensus and provider ----------------------------------------------------------------

    def _resolve_provider(self, doc: ConsensusDocument) -> bytes:
        wanted = self.config.provider
        for desc in doc.providers():
            if desc.name == wanted or desc.identity_key.hex() == wanted.lower():
                self.provider_name = desc.name or desc.identity_key.hex()[:16]
                return desc.identity_key
        raise ClientError(f"provider {wanted!r} is not in the consensus of epoch {doc.epoch}")

    def on_consensus(self, verified: VerifiedConsensus) -> None:
        if self.core is not None:
            try:
                self.core.update_consensus(verified.document, self.now())
            except MixnetError as exc:
                log.error("consensus %d not usable: %s", verified.epoch, exc)
            self._wake.set()

    def _start_core(self, doc: ConsensusDocument) -> None:
        self.provider_id = self._resolve_provider(doc)
        self.core = ClientCore(
            doc,
            provider=self.provider_id,
            mailbox=self.mailbox,
            rng=self.rng if isinstance(self.rng, random.Random) else random.Random(),
            now=self.now(),
            mailbox_key=self.mailbox_key,
        )
        self.core.set_link(False, self.now())  # until run_link connects
        if self.store is not None:
            self.messenger = Messenger(
                self.store, provider=self.provider_id, mailbox=self.mailbox,
                mailbox_key=self.mailbox_key.public, clock=self.now,
                max_message_len=self.core.max_message_len,
            )
        for message in self.db.outgoing(state="pending"):  # queued before a restart
            try:
                self.core.send_message(
                    message.provider, message.mailbox, message.data, self.now(),
                    seal_key=message.mailbox_key, message_id=message.message_id,
                    created=message.created,
                )
            except MixnetError as exc:
                self.db.set_state(message.message_id, "undeliverable", str(exc), self.now())
                if self.messenger is not None:
                    self.messenger.ledger.on_failed(message.message_id, str(exc))

    def send_envelopes(self, envelopes: list[Envelope]) -> None:
        """Hand the messenger's ciphertexts to the transport (persisted like raw sends, so they
        survive a restart with their ids). A refusal marks that recipient failed, with why."""
        assert self.core is not None and self.messenger is not None
        now = self.now()
        for env in envelopes:
            try:
                message_id = self.core.send_message(
                    env.provider, env.mailbox, env.data, now, seal_key=env.mailbox_key
                )
            except MixnetError as exc:
                self.messenger.ledger.refused(env.uid, env.cid, f"not sent: {exc}")
                continue
            self.db.add_outgoing(message_id, env.provider, env.mailbox, env.mailbox_key, env.data,
                                 now=now)
            self.messenger.ledger.bind(env.uid, env.cid, message_id)
        self._wake.set()

    def _update_progress(self) -> None:
        """Fragments sent and acknowledged of the messages the delivery ledger has in flight,
        so front ends show progress (the ledger keeps what it was told last)."""
        if self.core is not None and self.messenger is not None:
            self.messenger.ledger.poll(self.core.message_progress)

    # -- the link to our provider ----------------------------------------------------------------

    async def run_link(self) -> None:
        backoff = RECONNECT_MIN
        down_since: float | None = None
        while True:
            link, why = await self._connect()
            if link is None:
                self.counts["connect_failed"] += 1
                if down_since is None:
                    down_since = self.now()
                    log.warning("cannot reach provider %s (%s); retrying", self.provider_name, why)
                await trio.sleep(backoff * (0.5 + self.rng.random()))
                backoff = min(RECONNECT_MAX, backoff * 2)
                continue
            backoff = RECONNECT_MIN
            if down_since is None:
                log.info("connected to provider %s", self.provider_name)
            else:
                log.info("connected to provider %s again after %.0f s", self.provider_name,
                         self.now() - down_since)
            down_since = None
            self.link = link
            assert self.core is not None
            self.core.set_link(True, self.now())  # queued fragments go out in the next slots
            self._wake.set()
            self._link_up.set()
            self.counts["connected"] += 1
            try:
                async with link:
                    while True:
                        kind, body = await link.receive_cell()
                        assert self.core is not None
                        await self._execute(self.core.receive_control(kind, body, self.now()))
            except LinkError as exc:
                self.counts["link_lost"] += 1
                down_since = self.now()
                log.warning("link to provider %s down (%s); retrying", self.provider_name,
                            _reason(exc))
            finally:
                self.link = None
                if self.core is not None:
                    self.core.set_link(False, self.now())
                self._link_up = trio.Event()

    async def _connect(self) -> tuple[Link | None, str]:
        """A link to our provider, or ``(None, why not)``."""
        assert self.core is not None and self.provider_id is not None
        desc = self.core.consensus.node_by_id(self.provider_id)
        if desc is None:
            return None, "it is not in the current consensus"
        try:
            link = await connect_link(
                desc.host, desc.port, local_key=self.link_key, remote_static=desc.link_key,
                body_size=self._geometry.packet_len, handshake_timeout=10.0,
            )
        except LinkError as exc:
            return None, _reason(exc)
        return link, ""

    # -- what it says ----------------------------------------------------------------

    async def run_watch(self, fetcher: ConsensusFetcher) -> None:
        """One line per epoch, and one when the running epoch has no consensus yet (the
        previous one stays in use until it comes)."""
        reported = -1
        stale = False
        while True:
            now = self.now()
            epoch = fetcher.clock.epoch_at(now) if now >= fetcher.clock.genesis_time else -1
            verified = fetcher.cached(epoch) if epoch >= 0 else None
            if epoch > reported and verified is not None:
                doc = verified.document
                log.info("epoch %d: consensus of %d mixes and %d providers, signed by %d of %d"
                         " authorities", epoch, len(doc.nodes) - len(doc.providers()),
                         len(doc.providers()), len(verified.signers), len(self.config.authorities))
                reported, stale = epoch, False
            elif epoch > reported and not stale and epoch >= 0:
                in_use = self.core.consensus.epoch if self.core is not None else None
                log.warning("consensus stale: no document for epoch %d yet; still using epoch "
                            "%s's, retrying", epoch, in_use)
                stale = True
            await trio.sleep(WATCH_INTERVAL)

    # -- the core's clock ----------------------------------------------------------------

    async def run_core(self) -> None:
        assert self.core is not None
        while True:
            deadline = self.core.next_deadline()
            if math.isfinite(deadline):
                with trio.move_on_at(deadline - self.time_offset):
                    await self._wake.wait()
            else:
                await self._wake.wait()
            self._wake = trio.Event()
            await self._execute(self.core.poll(self.now()))
            self._update_progress()

    async def run_expiry(self) -> None:
        """Remove messages whose disappearing timer ran out, even if nobody reads them."""
        while True:
            if self.messenger is not None:
                self.messenger.upkeep()  # disappearing timers, prekey rotation
                for transport_id in self.messenger.ledger.take_withdrawn():  # never send it
                    if self.core is not None:
                        await self._execute(self.core.cancel_message(transport_id, self.now()))
            await trio.sleep(EXPIRY_INTERVAL)

    async def _execute(self, actions: Sequence[Action]) -> None:
        """Carry out the core's actions in order (a received message is committed before the
        acknowledgement that follows it)."""
        now = self.now()
        for action in actions:
            match action:
                case SendPacket(packet=packet, kind=kind):
                    await self._send(partial(Link.send_packet, packet=packet), "packets")
                    self.sent[kind.value] += 1
                case SendControl(kind=cell_kind, body=body):
                    await self._send(partial(Link.send_cell, kind=cell_kind, body=body), "controls")
                case MessageReceived():
                    replies = None
                    if self.messenger is not None:
                        replies = self.messenger.receive(action.data)
                    if replies is not None:  # decrypted and stored in the encrypted store
                        self.counts["messenger_received"] += 1
                        self.send_envelopes(replies)
                    elif self.db.add_incoming(action.message_id, action.data, action.received_at):
                        self.counts["messages_received"] += 1
                case MessageDelivered(message_id=message_id):
                    self.db.set_state(message_id, "delivered", "", now)
                    if self.messenger is not None:
                        self.messenger.ledger.on_at_provider(message_id)
                case MessageUndeliverable(message_id=message_id):
                    reason = f"{action.reason.value}: {action.detail}"
                    self.db.set_state(message_id, "undeliverable", reason, now)
                    if self.messenger is not None:
                        self.messenger.ledger.on_failed(message_id, reason)

    async def _send(self, op: Callable[[Link], Awaitable[None]], what: str) -> None:
        link = self.link
        if link is None:
            self.unsent_link_down[what] += 1
            return
        try:
            await op(link)
        except LinkError:
            self.unsent_link_broke[what] += 1

    # -- the API ----------------------------------------------------------------

    def statistics(self) -> DaemonStatistics:
        return DaemonStatistics(
            **self.counts.counts(), sent=dict(self.sent),
            unsent_link_down=dict(self.unsent_link_down),
            unsent_link_broke=dict(self.unsent_link_broke),
        )

    def status(self) -> dict[str, Any]:
        core = self.core
        params = self.config.params
        out: dict[str, Any] = {
            "name": self.config.name,
            "identity": (self.messenger.card.identity_key.hex()[:16]
                         if self.messenger is not None else ""),
            "provider_name": self.provider_name,
            "connected": self.link is not None,
            "address": (format_address(self.provider_id, self.mailbox, self.mailbox_key.public)
                        if self.provider_id else ""),
            "epoch": core.consensus.epoch if core else None,
            "rates_per_s": {
                "payload": params.payload_rate,
                "loop": params.loop_rate,
                "drop": params.drop_rate,
            },
            "daemon": self.statistics().as_dict(),
            **self.db.counts(),
            "messenger": (
                self.messenger.statistics().as_dict() if self.messenger is not None
                else "no store"
            ),
        }
        if core is not None:
            meter = meter_for(core.consensus)
            out["anonymity"] = meter.to_dict() if meter is not None else None
            stats = core.statistics()
            out["transport"] = stats.as_dict()
            out["acks_pending"] = stats.acks_pending
            out["fragments_queued"] = stats.fragments_queued
            out["max_message_len"] = core.max_message_len
        return out

    def handle_request(self, request: dict[str, Any]) -> Any:
        """Answer one API request through the one registry (``client/daemon_ops.py``)."""
        if self.core is None or self.provider_id is None:
            raise ClientError("the daemon has no consensus yet; try again in a moment")
        return daemon_ops.REGISTRY.handle(self, request)

    def address(self) -> str:
        assert self.provider_id is not None
        return format_address(self.provider_id, self.mailbox, self.mailbox_key.public)

    def send_raw(self, provider: bytes, mailbox: bytes, mailbox_key: bytes, data: bytes) -> bytes:
        """Queue raw bytes for a mailbox (``mixnet client raw-send``); persisted like the
        messenger's envelopes. Returns the transport message id."""
        assert self.core is not None
        message_id = self.core.send_message(provider, mailbox, data, self.now(),
                                            seal_key=mailbox_key)
        self.db.add_outgoing(message_id, provider, mailbox, mailbox_key, data, now=self.now())
        self._wake.set()
        return message_id

    async def serve_api_connection(self, stream: trio.SocketStream) -> None:
        reader = FrameReader()
        async with stream:
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                if not data:
                    return
                try:
                    frames = reader.feed(data)
                except DecodeError:
                    self.counts["api_oversized"] += 1
                    return  # cannot resynchronise after a bad length: close this connection
                for frame in frames:
                    reply = self._reply(frame)
                    try:
                        await stream.send_all(encode_frame(reply))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return

    def _reply(self, frame: bytes) -> dict[str, Any]:
        request_id: Any = None
        try:
            request = decode_body(frame)
            request_id = request.get("id")
            return {"id": request_id, "ok": True, "result": self.handle_request(request)}
        except MixnetError as exc:
            self.counts["api_errors"] += 1
            return {"id": request_id, "ok": False, "error": str(exc)}

    async def run_api(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        path = self.config.socket_path
        with suppress(FileNotFoundError):
            path.unlink()
        os.chmod(self.config.data_dir, 0o700)
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket file is created 0600
        try:
            await sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(16)
        listener = trio.SocketListener(sock)
        task_status.started()
        await trio.serve_listeners(self.serve_api_connection, [listener])

    # -- statistics file ----------------------------------------------------------------

    async def run_stats(self) -> None:
        while True:
            self.write_stats()
            await trio.sleep(1.0)

    def write_stats(self) -> None:
        body = json.dumps(self.status(), default=_jsonable).encode()
        write_atomic(self.config.data_dir / "stats.json", body, durable=False)

    def close(self) -> None:
        with suppress(Exception):
            self.write_stats()
        self.db.close()
        if self.store is not None:
            self.store.close()
        with suppress(FileNotFoundError):
            self.config.socket_path.unlink()


def _reason(exc: BaseException) -> str:
    """A short, address-free reason for a log line."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:160]


def _jsonable(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


async def serve(
    config: DaemonConfig,
    *,
    passphrase: str | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until cancelled; ``started(address)`` once it has a consensus and the
    API socket listens. ``passphrase`` unlocks the message store if there is one. The
    directory's lock is taken first: a second daemon fails here, before touching anything."""
    lock = daemon_lock.acquire(config.data_dir)
    try:
        daemon = ClientDaemon(config, passphrase=passphrase)
    except BaseException:
        lock.release()
        raise
    fetcher = ConsensusFetcher(
        [a.url for a in config.authorities],
        config.authority_set,
        clock=EpochClock.from_params(config.params),
        rng=random.Random(),
        on_consensus=daemon.on_consensus,
        now=daemon.now,
    )
    try:
        async with trio.open_nursery() as nursery:
            log.info("waiting for a consensus from %d authorities", len(config.authorities))
            await nursery.start(fetcher.run)
            # A starting network may publish documents that do not list our provider yet.
            next_report = daemon.now() + 2.0
            while True:
                now = daemon.now()
                verified = (fetcher.cached(fetcher.clock.epoch_at(now))
                            if now >= fetcher.clock.genesis_time else None)
                if verified is not None:
                    try:
                        daemon._start_core(verified.document)
                        break
                    except ClientError as exc:
                        if now >= next_report:
                            log.warning("%s; waiting for the next consensus", exc)
                            next_report = now + WAITING_REPORT_INTERVAL
                elif now >= next_report:
                    await _explain_missing_consensus(config, now)
                    next_report = now + WAITING_REPORT_INTERVAL
                await trio.sleep(1.0)
            await nursery.start(daemon.run_api)
            nursery.start_soon(daemon.run_link)
            nursery.start_soon(daemon.run_core)
            nursery.start_soon(daemon.run_stats)
            nursery.start_soon(daemon.run_expiry)
            nursery.start_soon(daemon.run_watch, fetcher)
            assert daemon.provider_id is not None
            task_status.started(
                format_address(daemon.provider_id, daemon.mailbox, daemon.mailbox_key.public)
            )
    finally:
        daemon.close()
        lock.release()


async def _explain_missing_consensus(config: DaemonConfig, now: float) -> None:
    """Why no consensus came: ask for the network's current one. If a threshold signed one
    whose parameters differ from ours (a client made with other defaults, or for another
    network), waiting can never help: stop with what to do. Otherwise log the reasons."""
    try:
        verified = await fetch_network([a.url for a in config.authorities],
                                       config.authority_set, now=lambda: now, timeout=5.0)
    except ConsensusUnavailable as exc:
        log.warning("no consensus yet (%s); retrying", "; ".join(
            f"{url}: {reason}" for url, reason in exc.reasons))
        return
    theirs = verified.document.params
    if theirs != config.params:
        diff = ", ".join(
            f"{k} {v} (network: {theirs.to_dict()[k]})"
            for k, v in config.params.to_dict().items() if theirs.to_dict()[k] != v
        )
        raise ClientError(
            f"this client's network parameters differ from the network's: {diff}; create it "
            "again with: mixnet client init --join BOOTSTRAP --force"
        )
