"""Per-fragment ARQ: a state table, the outgoing records, the retransmission timeout and the
backoff between attempts.

A fragment is QUEUED until the payload stream has a slot for it, IN_FLIGHT once sent (with the
SURB-ACKs of its recent attempts remembered), ACKED when any of those SURBs comes back with the
ACK payload, and FAILED when its retry budget is spent or its message is abandoned. A timeout
with budget left puts it in BACKOFF for a growing, randomized wait (:func:`retry_backoff`),
then back in the queue (RESUME; at once when the link to our provider comes back); the next
slot sends it as a *fresh* packet: new path, new delays, new SURB, new Sphinx randomness, so
nothing but the (end-to-end) content links the attempts.

**The retry budget is time, not a count**: a fragment is retried until ``retry_budget``
seconds after its message was *created* (a daemon resuming a message after a restart passes
the original creation time, so the budget survives restarts). While the link to our provider
is down no attempt is made at all: fragments wait in the queue and the payload slots carry
cover, so being offline costs no budget but the clock's. Retransmissions only ever take
payload slots, so neither the backoff nor the budget changes what an observer sees.

Retransmission timeout, drawn per attempt (see ``docs/traffic-model.md``)::

    T = D_fwd + D_surb + pull_interval + transit_allowance + X,   X ~ Exp(mean extra_delay_mean)

``D_fwd`` and ``D_surb`` are the sums of the delays this sender sampled for the forward route
and for the SURB's route: the time the fragment and its ACK are held in mixes. ``pull_interval``
covers the wait for the next pull of our own mailbox; ``transit_allowance`` covers links,
processing and the provider's durable write. ``X`` is the randomized extra: the timeout of an
attempt is not a function of anything an observer knows, so a provider or mix that drops a
packet cannot confirm its sender from when a retransmission shows up (a fixed timeout would
let it). The default ``extra_delay_mean`` is ``2 * layers * mean_hop_delay + pull_interval``,
the scale of the route's own randomness.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum

from client.errors import ArqProtocolError
from client.paths import Route
from mixcore.params import NetworkParams


class FragmentState(Enum):
    QUEUED = "queued"
    IN_FLIGHT = "in_flight"
    BACKOFF = "backoff"
    """An attempt timed out; it waits out its backoff before it may take a slot again."""
    ACKED = "acked"
    FAILED = "failed"


class ArqInput(Enum):
    SEND = "send"
    """The payload stream took the fragment and sent an attempt."""
    ACK = "ack"
    """A SURB-ACK of one of its attempts came back."""
    RETRY = "retry"
    """Its timeout passed with budget left: wait out a backoff."""
    RESUME = "resume"
    """The backoff is over (or the link came back): back to the queue."""
    GIVE_UP = "give_up"
    """Its timeout (or its backoff) ended after the budget was spent."""
    ABANDON = "abandon"
    """Its message became undeliverable for another reason (e.g. no route to the recipient)."""


TRANSITIONS: dict[tuple[FragmentState, ArqInput], FragmentState] = {
    (FragmentState.QUEUED, ArqInput.SEND): FragmentState.IN_FLIGHT,
    # an earlier attempt's ACK arriving while its retransmission waits for a slot
    (FragmentState.QUEUED, ArqInput.ACK): FragmentState.ACKED,
    (FragmentState.QUEUED, ArqInput.ABANDON): FragmentState.FAILED,
    (FragmentState.IN_FLIGHT, ArqInput.ACK): FragmentState.ACKED,
    (FragmentState.IN_FLIGHT, ArqInput.RETRY): FragmentState.BACKOFF,
    (FragmentState.IN_FLIGHT, ArqInput.GIVE_UP): FragmentState.FAILED,
    (FragmentState.IN_FLIGHT, ArqInput.ABANDON): FragmentState.FAILED,
    (FragmentState.BACKOFF, ArqInput.RESUME): FragmentState.QUEUED,
    # an earlier attempt's ACK arriving late, during the backoff
    (FragmentState.BACKOFF, ArqInput.ACK): FragmentState.ACKED,
    (FragmentState.BACKOFF, ArqInput.GIVE_UP): FragmentState.FAILED,
    (FragmentState.BACKOFF, ArqInput.ABANDON): FragmentState.FAILED,
}


def next_state(state: FragmentState, event: ArqInput) -> FragmentState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise ArqProtocolError(
            f"fragment in state {state.value} cannot take {event.value}"
        ) from None


class MessageState(Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    """Every fragment was acknowledged by the recipient's provider (stored in the mailbox)."""
    UNDELIVERABLE = "undeliverable"


class UndeliverableReason(Enum):
    RETRY_BUDGET_EXHAUSTED = "retry_budget_exhausted"
    RECIPIENT_PROVIDER_GONE = "recipient_provider_gone"
    CANCELLED = "cancelled"
    """The shell withdrew it (its disappearing timer ran out before it was delivered)."""


@dataclass(slots=True, eq=False)
class OutgoingFragment:
    message: OutgoingMessage
    index: int
    encoded: bytes
    state: FragmentState = FragmentState.QUEUED
    attempts: int = 0
    deadline: float | None = None
    surb_ids: list[bytes] = field(default_factory=list)

    def apply(self, event: ArqInput) -> FragmentState:
        self.state = next_state(self.state, event)
        return self.state

    @property
    def done(self) -> bool:
        return self.state in (FragmentState.ACKED, FragmentState.FAILED)


@dataclass(slots=True, eq=False)
class OutgoingMessage:
    message_id: bytes
    provider: bytes
    mailbox: bytes
    created: float
    seal_key: bytes
    """The recipient mailbox's sealing public key (every attempt is sealed to it afresh)."""
    fragments: list[OutgoingFragment] = field(default_factory=list)
    state: MessageState = MessageState.PENDING
    provider_missing_since: float | None = None
    """When its provider was first seen missing from the consensus (None: listed)."""


def extra_delay_mean(params: NetworkParams) -> float:
    """Default mean of the randomized extra delay ``X``."""
    return 2 * params.layers * params.mean_hop_delay + params.pull_interval


def retry_backoff(attempts: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th attempt timed out before the next may take a
    slot: doubling from ``base`` up to ``cap``, times a uniform factor in [0.5, 1.5) so that
    fragments lost together do not come back together."""
    return min(cap, base * 2.0 ** min(attempts - 1, 60)) * rng.uniform(0.5, 1.5)


def retransmit_timeout(
    forward: Route,
    surb: Route,
    params: NetworkParams,
    *,
    transit_allowance: float,
    extra_mean: float,
    rng: random.Random,
) -> float:
    """Seconds after sending an attempt at which, without its ACK, it is declared lost."""
    extra = rng.expovariate(1.0 / extra_mean) if extra_mean > 0 else 0.0
    return (
        forward.total_delay
        + surb.total_delay
        + params.mean_hop_delay  # the exit holds each ACK for an exponential delay of this mean
        + params.pull_interval
        + transit_allowance
        + extra
    )
