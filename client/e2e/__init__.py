"""End-to-end encryption for the messenger: identities, contact cards, X3DH session start, the
Double Ratchet with header encryption, safety numbers and contact verification.

Pure functions and small state objects; no I/O (persistence is :mod:`client.storage`). See
``docs/e2e.md`` for the formats and the threat notes.
"""
