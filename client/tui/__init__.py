"""``mixnet chat``: the terminal chat screen (textual) over the daemon's local API."""
