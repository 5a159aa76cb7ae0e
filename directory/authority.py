"""One authority's state, wired to its store: what the HTTP app and the voting loop share.

:class:`Authority` owns the sans-IO parts (:class:`~directory.registry.DescriptorRegistry`,
:class:`~directory.voting.VotingCore`) and the :class:`~directory.store.DirectoryStore`. Every
event the cores return is persisted here *before* its effect becomes visible over HTTP, so a
crash can lose at most work that nobody has seen. It does no network I/O and never sleeps;
:mod:`directory.service` drives it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from directory.admission import Admission
from directory.approvals import ApprovalsFile
from directory.config import AuthorityConfig
from directory.registry import DescriptorAccepted, DescriptorRegistry
from directory.store import DirectoryStore
from directory.voting import (
    BodySigned,
    DocumentPublished,
    Event,
    PeerDisagrees,
    PeerVoteReceived,
    SigningRefused,
    VoteCast,
    VotingCore,
)
from mixcore.consensus import AuthoritySet
from mixcore.epochs import EpochClock
from mixcore.keys import IdentityKey, short_id

log = logging.getLogger("directory")


class Authority:
    """Registry + voting core + store for one configured authority."""

    def __init__(
        self,
        config: AuthorityConfig,
        identity: IdentityKey,
        store: DirectoryStore,
        *,
        now: Callable[[], float] = time.time,
        core_factory: Callable[..., VotingCore] = VotingCore,
    ) -> None:
        self.config = config
        self.identity = identity
        self.store = store
        self.now = now
        self.clock = EpochClock.from_params(config.params)
        self.authorities: AuthoritySet = config.authority_set(identity.public)
        self.peer_urls = {p.identity_key: p.url for p in config.peers}
        self.peer_names = {p.identity_key: p.name for p in config.peers}
        self.approvals = ApprovalsFile(config.approvals_path)
        self.registry = DescriptorRegistry(
            max_nodes=config.max_nodes,
            admission=Admission(
                config.admission, self.approvals.approvals, max_nodes=config.max_nodes
            ),
        )
        self.core = core_factory(
            identity=identity,
            authorities=self.authorities,
            params=config.params,
            registry=self.registry,
            schedule=config.schedule,
        )
        self._pruned_epoch: int | None = None
        self._restore()

    def current_epoch(self) -> int:
        return self.core.epoch_at(self.now())

    def _restore(self) -> None:
        current = self.current_epoch()
        self.registry.restore(self.store.descriptors(current - 1), current)
        for epoch, key, vote in self.store.votes(current - 1):
            self.core.restore_vote(epoch, key, vote)
        for epoch, body, signature in self.store.signatures(current - 1):
            self.core.restore_signature(epoch, body, signature)
        for epoch, document in self.store.documents(current - 1):
            self.core.restore_document(epoch, document)
        self._update_listed()

    def _update_listed(self) -> None:
        """Tell the registry which nodes the documents for now and next list (never evicted)."""
        current = self.current_epoch()
        self.registry.set_listed(self.core.listed_in(current) | self.core.listed_in(current + 1))

    def reload_approvals(self) -> None:
        """Pick up ``mixnet directory approve/revoke`` while running (the file's mtime)."""
        if not self.approvals.reload_if_changed():
            return
        gone = self.registry.set_approvals(self.approvals.approvals)
        for node in gone:
            self.store.delete_node(node)
        log.info(
            "%s: %d approved nodes; %d held nodes no longer admitted",
            self.config.name,
            len(self.approvals.approvals),
            len(gone),
        )
    # -- uploads ----------------------------------------------------------------------------

    def submit_descriptor(self, data: bytes, source: str | None = None) -> DescriptorAccepted:
        """Check and hold an uploaded descriptor; raises DescriptorRejected with the status.

        ``source`` is the uploader's address, which open admission counts new nodes by.
        """
        self.reload_approvals()
        accepted = self.registry.submit(data, self.current_epoch(), source=source)
        for node in accepted.evicted:
            self.store.delete_node(node)
        if not accepted.duplicate:
            self.store.put_descriptor(accepted.identity_key, accepted.epoch, accepted.wire)
        log.debug("descriptor accepted for epoch %d", accepted.epoch)
        return accepted

    # -- what the API serves ----------------------------------------------------------------

    def document(self, epoch: int) -> bytes | None:
        return self.core.document(epoch) or self.store.document(epoch)

    def vote(self, epoch: int) -> bytes | None:
        return self.core.vote(epoch)

    def signature(self, epoch: int) -> bytes | None:
        return self.core.signature(epoch)

    def latest_published(self) -> int | None:
        ours = self.core.latest_published()
        stored = self.store.latest_document_epoch()
        candidates = [e for e in (ours, stored) if e is not None]
        return max(candidates) if candidates else None

    def public_info(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "identity_key": self.identity.public.hex(),
            "url": self.config.url,
            "threshold": self.authorities.threshold,
            "authorities": len(self.authorities),
            "peers": [p.to_dict() for p in self.config.peers],
            "params": self.config.params.to_dict(),
            "schedule": self.config.schedule.to_dict(),
            "current_epoch": self.current_epoch(),
            "latest_published_epoch": self.latest_published(),
        }

    def statistics(self) -> dict[str, Any]:
        return {"registry": self.registry.statistics(), "voting": self.core.statistics().as_dict()}

    # -- persisting the core's events -------------------------------------------------------

    def apply(self, events: list[Event]) -> None:
        """Persist and log what the voting core did (one line per epoch step, no node data)."""
        for event in events:
            match event:
                case VoteCast(epoch=epoch, vote=vote, descriptors=count):
                    self.store.put_vote(epoch, self.identity.public, vote)
                    log.info(
                        "%s: voted for epoch %d with %d descriptors", self.config.name, epoch, count
                    )
                case PeerVoteReceived(epoch=epoch, authority_key=key, vote=vote):
                    self.store.put_vote(epoch, key, vote)
                case BodySigned(epoch=epoch, body=body, signature=signature, nodes=nodes):
                    self.store.put_signature(epoch, body, signature)
                    log.info(
                        "%s: signed consensus for epoch %d (%d nodes)",
                        self.config.name,
                        epoch,
                        nodes,
                    )
                case SigningRefused(epoch=epoch):
                    log.warning(
                        "%s: votes for epoch %d now give a different document than the one "
                        "already signed; keeping the signed one",
                        self.config.name,
                        epoch,
                    )
                case PeerDisagrees(epoch=epoch, authority_key=key):
                    log.warning(
                        "%s: authority %s signed a different document for epoch %d",
                        self.config.name,
                        self.peer_names.get(key, short_id(key)),
                        epoch,
                    )
                case DocumentPublished(
                    epoch=epoch, document=document, signatures=n, adopted=adopted
                ):
                    self.store.put_document(epoch, document)
                    self._update_listed()
                    log.info(
                        "%s: %s consensus for epoch %d with %d signatures",
                        self.config.name,
                        "adopted" if adopted else "published",
                        epoch,
                        n,
                    )

    def tick(self) -> None:
        self.reload_approvals()
        now = self.now()
        self.apply(self.core.tick(now))
        epoch = self.core.epoch_at(now)
        if epoch != self._pruned_epoch:
            self.store.prune(epoch, keep_documents=self.config.keep_documents)
            self._pruned_epoch = epoch
            self._update_listed()
