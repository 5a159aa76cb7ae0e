"""The client transport's rooms, one state machine a module, coordinated by
:class:`client.core.ClientCore` (which owns none of their state itself):

* :mod:`~client.transport.streams` — the three Poisson send streams (when packets leave);
* :mod:`~client.transport.outbox` — messages and their fragments waiting for payload slots;
* :mod:`~client.transport.arq` — one fragment's states (its transition table), timeouts, backoff;
* :mod:`~client.transport.acks` — attempt timers and the SURB-ACKs each attempt waits for;
* :mod:`~client.transport.loops` — our loops and decoys in flight, and what came back;
* :mod:`~client.transport.pulls` — the pull schedule, batch bookkeeping and its acknowledgement;
* :mod:`~client.transport.reassembly` — fragments in, each message out exactly once;
* :mod:`~client.transport.drops` — why anything from the network was discarded (counted).

The data path reads in that order: a message enters the outbox, the payload stream takes its
fragments, each attempt is tracked until its ACK, and what the pulls bring back goes to
reassembly, the ARQ or the loop monitor. All are sans-IO: times and generators come in.
"""
