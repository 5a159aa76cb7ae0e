"""The messenger layer: contacts, conversations, groups, disappearing messages, attachments and
honest delivery states, on top of the end-to-end sessions (:mod:`client.e2e`) and the encrypted
store (:mod:`client.storage`). Sans-IO apart from the store: the daemon feeds it transport
payloads and transport events and sends what it returns. See ``docs/messenger.md``."""
