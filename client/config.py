"""Client-side knobs that are not network parameters (those come signed in the consensus).

They bound memory and retries; none of them changes what an observer sees of the client's
traffic, which depends only on the consensus parameters.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClientConfig:
    retry_budget: float = 7 * 86400.0
    """Seconds after a message's creation during which its fragments are retried (a week: a
    message written on a train waits out the tunnel, and the daemon's restarts)."""
    max_attempts: int | None = None
    """Optional cap on sends per fragment (None: only the time budget limits them)."""
    backoff_base: float = 1.0
    """Seconds of backoff after the first timed-out attempt; doubles each time."""
    backoff_max: float = 300.0
    """The backoff stops growing here (times a random factor in [0.5, 1.5))."""
    surbs_per_fragment: int = 8
    """SURB-ACKs remembered per fragment (of its latest attempts): a long-retried fragment
    does not grow memory; an ACK of an older attempt counts as stale."""
    max_pending_fragments: int = 1024
    """Unfinished outgoing fragments (queued or awaiting an ACK) across all messages."""
    max_message_fragments: int = 64
    """Fragments per message, sent or accepted (about 104 KB with the default geometry)."""
    transit_allowance: float = 2.0
    """Seconds added to every retransmission timeout for links, processing and disk writes."""
    extra_delay_mean: float | None = None
    """Mean of the random extra in the timeout; None: ``2 * layers * mean_hop_delay +
    pull_interval``."""
    max_hop_delay: float = 60.0
    """Per-hop delays are Exp truncated here (nodes refuse longer ones)."""
    loop_ttl: float = 600.0
    """Seconds after which a loop that has not come back is counted lost and forgotten."""
    max_pending_loops: int = 4096
    max_partial_messages: int = 256
    max_partial_bytes: int = 8 * 1024 * 1024
    partial_ttl: float = 3600.0
    """Incomplete received messages are dropped this long after their first fragment."""
    delivered_ttl: float = 7200.0
    """Delivered message ids are remembered this long, to drop late duplicates."""
    max_delivered_ids: int = 65536
    max_retired_surbs: int = 4096
    """SURB ids of finished fragments kept to recognise late ACKs (counted as stale)."""
    max_finished_messages: int = 1024
    """Final states of finished outgoing messages kept for ``message_state`` queries."""
    max_catch_up: float = 5.0
    """If the shell wakes more than this late, streams restart from now instead of sending the
    missed packets in a burst."""
    provider_grace: float | None = None
    """Seconds a message waits for its recipient's provider to be (back) in the consensus
    before it fails; None: three epochs. A provider can miss one epoch's document (its upload
    came late, the network restarted), and a message or receipt written then must not fail
    for it; a provider gone for good still fails its messages, in words, soon."""

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.surbs_per_fragment < 1:
            raise ValueError("surbs_per_fragment must be >= 1")
        for name in ("max_pending_fragments", "max_message_fragments", "max_pending_loops",
                     "max_partial_messages", "max_partial_bytes", "max_delivered_ids",
                     "max_retired_surbs", "max_finished_messages"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_message_fragments > 0xFFFF:
            raise ValueError("max_message_fragments must be <= 65535")
        if self.max_message_fragments > self.max_pending_fragments:
            raise ValueError("max_message_fragments must not exceed max_pending_fragments")
        if self.delivered_ttl < self.partial_ttl:
            raise ValueError("delivered_ttl must be >= partial_ttl")
        for name in ("transit_allowance", "max_hop_delay", "loop_ttl", "partial_ttl",
                     "max_catch_up", "retry_budget", "backoff_base", "backoff_max"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.provider_grace is not None and not self.provider_grace >= 0:
            raise ValueError("provider_grace must be >= 0")
        if self.extra_delay_mean is not None and self.extra_delay_mean < 0:
            raise ValueError("extra_delay_mean must be >= 0")
