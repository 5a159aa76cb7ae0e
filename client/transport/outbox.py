"""Messages on their way out: their fragments queued for payload slots, and how each ended.

Two queues feed the payload stream: retransmissions first (a fragment back from its backoff,
or one that found no route and keeps its place), then first attempts in arrival order. A
fragment leaves the queues lazily once it is no longer QUEUED; the queues are purged when such
leftovers would dominate, so they stay within twice the pending count (amortized O(1)). A
finished message's outcome is remembered, bounded, for ``message_state``.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from client.transport.arq import FragmentState, MessageState, OutgoingFragment, OutgoingMessage


class Outbox:
    def __init__(self, *, max_finished: int) -> None:
        self.max_finished = max_finished
        self.messages: dict[bytes, OutgoingMessage] = {}
        self._finished: OrderedDict[bytes, MessageState] = OrderedDict()
        self._queue: deque[OutgoingFragment] = deque()
        self._retry: deque[OutgoingFragment] = deque()
        self.unfinished = 0
        """Fragments neither acknowledged nor given up (what ``max_pending_fragments`` caps)."""

    def add(self, message: OutgoingMessage) -> None:
        self.messages[message.message_id] = message
        self._queue.extend(message.fragments)
        self.unfinished += len(message.fragments)

    def next_queued(self) -> OutgoingFragment | None:
        """The fragment the next payload slot carries (retransmissions first), if any."""
        for queue in (self._retry, self._queue):
            while queue:
                fragment = queue.popleft()
                if fragment.state is FragmentState.QUEUED:
                    return fragment
        return None

    def keep_place(self, fragment: OutgoingFragment) -> None:
        """``fragment`` was taken but could not go (no route): first in line next time."""
        self._retry.appendleft(fragment)

    def requeue(self, fragment: OutgoingFragment) -> None:
        """``fragment`` is QUEUED again after a backoff: behind other retransmissions."""
        self._retry.append(fragment)

    def fragment_done(self) -> None:
        self.unfinished -= 1

    def finish(self, message: OutgoingMessage, state: MessageState) -> None:
        message.state = state
        del self.messages[message.message_id]
        self._finished[message.message_id] = state
        while len(self._finished) > self.max_finished:
            self._finished.popitem(last=False)
        if len(self._queue) + len(self._retry) > 2 * self.unfinished + 64:
            self._queue = deque(f for f in self._queue if f.state is FragmentState.QUEUED)
            self._retry = deque(f for f in self._retry if f.state is FragmentState.QUEUED)

    def state(self, message_id: bytes) -> MessageState | None:
        message = self.messages.get(message_id)
        return message.state if message is not None else self._finished.get(message_id)

    def fragments(self) -> list[OutgoingFragment]:
        return [f for m in self.messages.values() for f in m.fragments]

    def footprint(self) -> dict[str, int]:
        return {"messages": len(self.messages), "finished_messages": len(self._finished),
                "queue": len(self._queue) + len(self._retry)}
