"""The per-epoch vote and consensus state machine of one authority (sans-IO).

Time, the registry's descriptors and what peers answered go in; events (to persist and log) and
fetch requests (what to ask which peer) come out. The trio shell (:mod:`directory.service`)
calls :meth:`VotingCore.tick`, performs the :meth:`VotingCore.wanted` fetches, feeds the answers
back with ``on_vote`` / ``on_signature`` / ``on_document``, persists the returned events and
sleeps until :meth:`VotingCore.next_deadline` or the next poll.

Timeline for target epoch ``T`` of length ``L`` (fractions from :class:`VotingSchedule`):

* ``start(T) - vote_lead * L`` (default 0.5 L): the authority freezes its vote for ``T``: per
  node, its latest held descriptor with a mix key for ``T``; peers poll for it from now on;
* ``start(T) - consensus_lead * L`` (default 0.3 L), or earlier once every configured
  authority's vote is in: it counts votes; a descriptor is included only when *more than half of
  all configured authorities* (reachable or not) voted for its exact bytes. It builds the body
  with :func:`mixcore.consensus.build_consensus` (deterministic), signs it once (a second,
  different body for an epoch it already signed is refused), and collects peers' signatures over
  the same body. Signatures over a different body are ignored: those authorities disagree;
* as soon as ``threshold`` signatures are in, the document is published; late signatures keep
  being merged in until the epoch ends.

Bootstrap and catching up: while there is no document for the *current* epoch ``c``, the
authority asks its peers for theirs (adopting one that verifies against the threshold) and for
their votes for ``c``. If it holds a descriptor covering ``c`` or a peer has voted for ``c``, it
runs the procedure above for ``c`` at once: it votes ``bootstrap_delay * L`` later (so a burst of
first uploads lands in one vote) and counts ``(vote_lead - consensus_lead) * L`` after that, or
when all votes are in. An authority that computed a minority body also adopts the majority's
document when a peer serves one.

**Why one module of ~560 lines:** one state machine over an epoch's timeline (upload, vote,
count, sign, publish); its transitions refer to each other's deadlines, so they stay in one
class with its schedule.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from dataclasses import dataclass, field

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
from mixcore.consensus import (
    MAX_NODES,
    AuthoritySet,
    ConsensusDocument,
    assemble_signed_document,
    build_consensus,
    merge_signatures,
    sign_document,
    split_signed_document,
    verify_consensus,
)
from mixcore.descriptor import SignedDescriptor, parse_signed_descriptor
from mixcore.epochs import EpochClock
from mixcore.errors import ConsensusError, DescriptorError, ParamsError, SignatureError
from mixcore.keys import IdentityKey, short_id
from mixcore.params import NetworkParams
from mixcore.statistics import Statistics, Tally


@dataclass(frozen=True, slots=True)
class VotingSchedule:
    """Where in the epoch before ``T`` the steps for ``T`` happen, as fractions of its length."""

    vote_lead: float = 0.5
    consensus_lead: float = 0.3
    bootstrap_delay: float = 0.1
    poll_interval: float = 0.5
    """Seconds between polls of peers that have not answered yet (capped at L / 8)."""

    def __post_init__(self) -> None:
        for name in ("vote_lead", "consensus_lead", "bootstrap_delay", "poll_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ParamsError(name, "expected a number")
            if not math.isfinite(value):
                raise ParamsError(name, "must be finite")
            object.__setattr__(self, name, float(value))
        if not 0 < self.consensus_lead < self.vote_lead < 1:
            raise ParamsError("vote_lead", "need 0 < consensus_lead < vote_lead < 1")
        if not 0 <= self.bootstrap_delay <= 0.5:
            raise ParamsError("bootstrap_delay", "must be between 0 and 0.5")
        if self.poll_interval <= 0:
            raise ParamsError("poll_interval", "must be > 0 seconds")

    def to_dict(self) -> dict[str, float]:
        return {
            "vote_lead": self.vote_lead,
            "consensus_lead": self.consensus_lead,
            "bootstrap_delay": self.bootstrap_delay,
            "poll_interval": self.poll_interval,
        }


# -- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoteCast:
    epoch: int
    vote: bytes
    descriptors: int


@dataclass(frozen=True, slots=True)
class PeerVoteReceived:
    epoch: int
    authority_key: bytes
    vote: bytes


@dataclass(frozen=True, slots=True)
class BodySigned:
    """This authority signed ``body`` for ``epoch``: persist before serving the signature."""

    epoch: int
    body: bytes
    signature: bytes
    nodes: int


@dataclass(frozen=True, slots=True)
class SigningRefused:
    """The votes now give a different body than the one already signed for ``epoch``."""

    epoch: int
    signed_digest: bytes
    computed_digest: bytes


@dataclass(frozen=True, slots=True)
class PeerDisagrees:
    """A peer signed a different body for ``epoch``; its signature is not counted."""

    epoch: int
    authority_key: bytes


@dataclass(frozen=True, slots=True)
class DocumentPublished:
    """The document for ``epoch`` (first publication, more signatures, or adopted from a peer)."""

    epoch: int
    document: bytes
    signatures: int
    adopted: bool = False


Event = (
    VoteCast | PeerVoteReceived | BodySigned | SigningRefused | PeerDisagrees | DocumentPublished
)


class FetchKind(enum.Enum):
    VOTE = "vote"
    SIGNATURE = "signature"
    DOCUMENT = "consensus"


@dataclass(frozen=True, slots=True)
class Fetch:
    """Ask ``authority_key`` for its ``kind`` for ``epoch``."""

    kind: FetchKind
    epoch: int
    authority_key: bytes


# -- state --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _EpochState:
    epoch: int
    bootstrap_at: float | None = None
    own_vote: Vote | None = None
    voted_at: float | None = None
    peer_votes: dict[bytes, Vote] = field(default_factory=dict)
    body: bytes | None = None
    signatures: dict[bytes, bytes] = field(default_factory=dict)
    disagreeing: set[bytes] = field(default_factory=set)
    document: bytes | None = None
    adopted: bool = False

    @property
    def computed(self) -> bool:
        return self.body is not None


@dataclass(frozen=True, slots=True)
class VotingStatistics(Statistics):
    """What an authority's voting did, in counts (the health page shows them)."""

    votes_cast: int = 0
    signing_refused: int = 0
    """Times a second, different body for an already signed epoch was not signed."""
    documents_published: int = 0
    documents_updated: int = 0
    """A published document re-assembled with more signatures."""
    peer_disagreements: int = 0
    documents_adopted: int = 0
    """Peers' verified documents taken over, this authority holding none for the epoch."""


class VotingCore:
    """One authority's voting for the current and next epoch. Not thread-safe; no I/O."""

    def __init__(
        self,
        *,
        identity: IdentityKey,
        authorities: AuthoritySet,
        params: NetworkParams,
        registry: DescriptorRegistry,
        schedule: VotingSchedule | None = None,
    ) -> None:
        if identity.public not in authorities:
            raise ParamsError("authorities", "this authority's own key must be in the set")
        self.identity = identity
        self.authorities = authorities
        self.params = params
        self.clock = EpochClock.from_params(params)
        self.registry = registry
        self.schedule = schedule or VotingSchedule()
        self.peers = tuple(k for k in authorities.keys if k != identity.public)
        self._epochs: dict[int, _EpochState] = {}
        self._signed: dict[int, tuple[bytes, bytes]] = {}  # epoch -> (body, signature), forever
        self._documents: dict[int, bytes] = {}
        self._stats = Tally(VotingStatistics)

    # -- restart ----------------------------------------------------------------------------

    def restore_vote(self, epoch: int, authority_key: bytes, wire: bytes) -> None:
        """Reload a persisted vote (own or a peer's); invalid ones are ignored."""
        try:
            vote = parse_vote(wire, epoch=epoch, authority_key=authority_key)
        except VoteError:
            return
        st = self._state(epoch)
        if authority_key == self.identity.public:
            st.own_vote = vote
            st.voted_at = -math.inf
        elif authority_key in self.peers:
            st.peer_votes[authority_key] = vote

    def restore_signature(self, epoch: int, body: bytes, signature: bytes) -> None:
        """Reload the body this authority signed for ``epoch``: it will never sign another.

        The votes are counted again after a restart (they were persisted too); if they now
        give a different body, :class:`SigningRefused` is reported and the old body kept.
        """
        self._signed[epoch] = (body, signature)

    def restore_document(self, epoch: int, document: bytes) -> None:
        """Reload a published document (and any signatures over our body it carries)."""
        self._documents[epoch] = document
        st = self._state(epoch)
        st.document = document
        try:
            body, _ = split_signed_document(document)
        except ConsensusError:
            return
        signed = self._signed.get(epoch)
        if signed is None or body != signed[0]:
            st.adopted = True

    # -- queries ----------------------------------------------------------------------------

    def vote(self, epoch: int) -> bytes | None:
        st = self._epochs.get(epoch)
        return st.own_vote.wire if st is not None and st.own_vote is not None else None

    def signature(self, epoch: int) -> bytes | None:
        signed = self._signed.get(epoch)
        if signed is None:
            return None
        body, sig = signed
        return SignatureAnnouncement(epoch, self.identity.public, body_digest(body), sig).encode()

    def document(self, epoch: int) -> bytes | None:
        return self._documents.get(epoch)

    def latest_published(self) -> int | None:
        return max(self._documents, default=None)

    def statistics(self) -> VotingStatistics:
        return VotingStatistics(**self._stats.counts())

    # -- the clock --------------------------------------------------------------------------

    def vote_time(self, epoch: int) -> float:
        return self.clock.start(epoch) - self.schedule.vote_lead * self.params.epoch_length

    def consensus_time(self, epoch: int) -> float:
        return self.clock.start(epoch) - self.schedule.consensus_lead * self.params.epoch_length

    def epoch_at(self, now: float) -> int:
        """The current epoch; -1 before genesis, so a network can prepare its first document."""
        if now < self.clock.genesis_time:
            return -1
        return self.clock.epoch_at(now)

    @property
    def _gather(self) -> float:
        s = self.schedule
        return (s.vote_lead - s.consensus_lead) * self.params.epoch_length

    def _count_deadline(self, st: _EpochState) -> float:
        voted_at = st.voted_at if st.voted_at is not None else -math.inf
        return max(self.consensus_time(st.epoch), voted_at + self._gather)

    @property
    def poll_interval(self) -> float:
        return min(self.schedule.poll_interval, self.params.epoch_length / 8)

    def _state(self, epoch: int) -> _EpochState:
        st = self._epochs.get(epoch)
        if st is None:
            st = self._epochs[epoch] = _EpochState(epoch)
        return st

    # -- advancing time ---------------------------------------------------------------------

    def tick(self, now: float) -> list[Event]:
        """Do whatever is due at ``now``: expire, vote, count and sign, publish."""
        current = self.epoch_at(now)
        self.registry.prune(current)
        for epoch in [e for e in self._epochs if e < current - 1]:
            del self._epochs[epoch]
        # Older documents are served from the store; older bodies can never be signed again.
        for table in (self._documents, self._signed):
            for epoch in [e for e in table if e < current - 1]:
                del table[epoch]
        events: list[Event] = []
        for epoch in (current, current + 1):
            if epoch < 0:
                continue
            st = self._state(epoch)
            idle = (
                st.own_vote is None
                and not st.computed
                and st.document is None
                and epoch not in self._signed
            )
            if idle and self._vote_due(st, now, current):
                events.append(self._cast_vote(st, now))
            if st.own_vote is not None and not st.computed and self._count_due(st, now):
                events.extend(self._count_and_sign(st))
        return events

    def _vote_due(self, st: _EpochState, now: float, current: int) -> bool:
        if st.epoch == current + 1:
            return now >= self.vote_time(st.epoch)
        # The current epoch has no document and we never voted for it: bootstrap or catch up,
        # if it can still finish within the epoch.
        length = self.params.epoch_length
        if now + (self.schedule.bootstrap_delay * length) + self._gather > self.clock.end(st.epoch):
            return False
        if st.bootstrap_at is None:
            if not (st.peer_votes or self.registry.holds_any_for(st.epoch)):
                return False
            st.bootstrap_at = now + self.schedule.bootstrap_delay * length
        return now >= st.bootstrap_at

    def _count_due(self, st: _EpochState, now: float) -> bool:
        if len(st.peer_votes) == len(self.peers):
            return True
        return now >= self._count_deadline(st)

    def _cast_vote(self, st: _EpochState, now: float) -> VoteCast:
        vote = make_vote(st.epoch, self.identity, self.registry.descriptors_for(st.epoch))
        st.own_vote = vote
        st.voted_at = now
        self._stats["votes_cast"] += 1
        return VoteCast(st.epoch, vote.wire, len(vote.descriptors))

    def tally(self, epoch: int, votes: list[Vote]) -> list[SignedDescriptor]:
        """The descriptors that more than half of all configured authorities voted for.

        Majority-voted descriptors that do not verify or have no mix key for ``epoch`` are
        dropped (every honest authority drops the same ones). Should more than
        :data:`MAX_NODES` nodes remain, the nodes listed in the previous epoch's document are
        kept first (so the size cap never pushes a listed node out; authorities holding the
        same previous document, as they all do in steady state, decide alike), then those
        with the smallest identity keys.
        """
        counts: Counter[bytes] = Counter()
        seen: set[bytes] = set()
        for vote in votes:
            if vote.epoch != epoch or vote.authority_key in seen:
                continue
            if vote.authority_key not in self.authorities:
                continue
            seen.add(vote.authority_key)
            counts.update(set(vote.descriptors))
        total = len(self.authorities)
        chosen: list[SignedDescriptor] = []
        for wire, count in counts.items():
            if 2 * count <= total:
                continue
            try:
                signed = parse_signed_descriptor(wire)
            except (DescriptorError, SignatureError):
                continue
            if signed.descriptor.covers_epoch(epoch):
                chosen.append(signed)
        nodes = {s.identity_key for s in chosen}
        if len(nodes) > MAX_NODES:
            incumbents = self.listed_in(epoch - 1)
            ranked = sorted(nodes, key=lambda n: (n not in incumbents, n))
            keep = set(ranked[:MAX_NODES])
            chosen = [s for s in chosen if s.identity_key in keep]
        return chosen

    def listed_in(self, epoch: int) -> frozenset[bytes]:
        """Node ids of the document this authority holds for ``epoch`` (empty if none)."""
        document = self._documents.get(epoch)
        if document is None:
            return frozenset()
        try:
            body, _ = split_signed_document(document)
            return frozenset(e.identity_key for e in ConsensusDocument.decode(body).nodes)
        except ConsensusError:
            return frozenset()

    def _count_and_sign(self, st: _EpochState) -> list[Event]:
        assert st.own_vote is not None
        votes = [st.own_vote, *st.peer_votes.values()]
        doc = build_consensus(st.epoch, self.params, self.tally(st.epoch, votes))
        body = doc.encode()
        events: list[Event] = []
        signed = self._signed.get(st.epoch)
        if signed is not None and signed[0] != body:
            # Never sign two bodies for one epoch: keep offering the one signed before.
            self._stats["signing_refused"] += 1
            events.append(SigningRefused(st.epoch, body_digest(signed[0]), body_digest(body)))
            st.body = signed[0]
            st.signatures[self.identity.public] = signed[1]
        elif signed is None:
            _, signature = sign_document(body, self.identity)
            self._signed[st.epoch] = (body, signature)
            st.body = body
            st.signatures[self.identity.public] = signature
            events.append(BodySigned(st.epoch, body, signature, len(doc.nodes)))
        else:
            st.body = body
            st.signatures[self.identity.public] = signed[1]
        if st.document is not None:
            # A document we restored or adopted before counting: if it is our body, keep its
            # signatures and add ours.
            known_body, known_sigs = split_signed_document(st.document)
            if known_body == st.body:
                st.signatures.update(merge_signatures(st.body, known_sigs))
                st.adopted = False
        events.extend(self._maybe_publish(st))
        return events

    def _maybe_publish(self, st: _EpochState) -> list[Event]:
        if st.body is None or len(st.signatures) < self.authorities.threshold:
            return []
        if st.adopted and st.document is not None:
            # We hold the majority's document for another body; ours cannot reach threshold
            # unless the authorities are split, and we keep what verified first.
            return []
        document = assemble_signed_document(st.body, st.signatures.items())
        if document == st.document:
            return []
        first = st.document is None
        st.document = document
        self._documents[st.epoch] = document
        self._stats["documents_published" if first else "documents_updated"] += 1
        return [DocumentPublished(st.epoch, document, len(st.signatures))]

    # -- what to ask peers ------------------------------------------------------------------

    def wanted(self, now: float) -> list[Fetch]:
        """Fetches that would move some epoch forward; polled until answered or obsolete."""
        current = self.epoch_at(now)
        fetches: list[Fetch] = []
        for epoch in (current, current + 1):
            if epoch < 0:
                continue
            st = self._state(epoch)
            if epoch == current + 1 and now < self.vote_time(epoch):
                continue
            if not st.computed and st.document is None:
                fetches += [
                    Fetch(FetchKind.VOTE, epoch, k) for k in self.peers if k not in st.peer_votes
                ]
            if st.document is None and (epoch == current or st.computed):
                fetches += [Fetch(FetchKind.DOCUMENT, epoch, k) for k in self.peers]
            if st.computed and not st.adopted:
                fetches += [
                    Fetch(FetchKind.SIGNATURE, epoch, k)
                    for k in self.peers
                    if k not in st.signatures and k not in st.disagreeing
                ]
        return fetches

    def next_deadline(self, now: float) -> float:
        """When :meth:`tick` next has something to do (not counting polls)."""
        current = self.epoch_at(now)
        deadlines = [self.clock.end(current)]
        for epoch in (current, current + 1):
            if epoch < 0:
                continue
            st = self._state(epoch)
            if epoch == current + 1 and st.own_vote is None:
                deadlines.append(self.vote_time(epoch))
            if st.bootstrap_at is not None and st.own_vote is None:
                deadlines.append(st.bootstrap_at)
            if st.own_vote is not None and not st.computed:
                deadlines.append(self._count_deadline(st))
        future = [d for d in deadlines if d > now]
        return min(future, default=now + self.poll_interval)

    # -- answers from peers -----------------------------------------------------------------

    def on_vote(self, authority_key: bytes, epoch: int, data: bytes, now: float) -> list[Event]:
        """A peer's vote for ``epoch``; raises VoteError if it is bad (the shell counts it)."""
        st = self._state(epoch)
        if authority_key not in self.peers or authority_key in st.peer_votes or st.computed:
            return []
        vote = parse_vote(data, epoch=epoch, authority_key=authority_key)
        st.peer_votes[authority_key] = vote
        events: list[Event] = [PeerVoteReceived(epoch, authority_key, vote.wire)]
        events += self.tick(now)
        return events

    def on_signature(
        self, authority_key: bytes, epoch: int, data: bytes, now: float
    ) -> list[Event]:
        """A peer's signature announcement; counted only if it is over our body."""
        st = self._state(epoch)
        if authority_key not in self.peers or st.body is None:
            return []
        ann = parse_signature_announcement(data, epoch=epoch, authority_key=authority_key)
        if not ann.valid_for(st.body):
            if authority_key in st.disagreeing:
                return []
            st.disagreeing.add(authority_key)
            self._stats["peer_disagreements"] += 1
            return [PeerDisagrees(epoch, authority_key)]
        if st.signatures.get(authority_key) == ann.signature:
            return []
        st.signatures[authority_key] = ann.signature
        return self._maybe_publish(st)

    def on_document(self, authority_key: bytes, epoch: int, data: bytes, now: float) -> list[Event]:
        """A peer's published document: merge its signatures over our body, or adopt it.

        Raises :class:`~mixcore.errors.ConsensusError` when it does not verify.
        """
        st = self._state(epoch)
        verified = verify_consensus(data, self.authorities, expected_epoch=epoch)
        if st.body is not None and verified.body == st.body and not st.adopted:
            st.signatures.update(merge_signatures(st.body, verified.signatures))
            return self._maybe_publish(st)
        if st.document is not None:
            return []
        document = assemble_signed_document(verified.body, verified.signatures)
        st.document = document
        st.adopted = True
        self._documents[epoch] = document
        self._stats["documents_adopted"] += 1
        return [DocumentPublished(epoch, document, len(verified.signatures), adopted=True)]

    def __repr__(self) -> str:
        return f"VotingCore({short_id(self.identity.public)}…, peers={len(self.peers)})"
