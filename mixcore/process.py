"""What every role's process does first: private file modes and as many descriptors as allowed.

* ``umask(0o077)``: every file and folder a node, authority or client creates is readable by
  its owner only, from the moment it exists (SQLite's databases and their ``-wal``/``-shm``
  files, logs, statistics, configs). Files that matter are also created with explicit modes
  (:func:`mixcore.files.private_file`), so a caller that skipped this still gets 0600.
* ``RLIMIT_NOFILE`` soft limit raised to the hard limit: a server's connection cap is derived
  from it (:func:`connection_budget`), and many distributions start processes with a soft
  limit of 1,024 while allowing far more.

:func:`prepare_process` is called by ``mixnet.cli.main``, the entry point of every role.
"""

from __future__ import annotations

import contextlib
import os
import resource

PRIVATE_UMASK = 0o077
#: Never ask for more than this many descriptors, even when the hard limit is "unlimited".
MAX_NOFILE = 1 << 20


def set_private_umask() -> int:
    """Set the process umask to 0o077; returns the previous one."""
    return os.umask(PRIVATE_UMASK)


def raise_nofile_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (capped at :data:`MAX_NOFILE`).

    Returns the soft limit in force afterwards. Failing to raise it is not an error: the
    connection caps derived from the limit then stay within what the process has.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = MAX_NOFILE if hard == resource.RLIM_INFINITY else min(hard, MAX_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return nofile_limit()


def nofile_limit() -> int:
    """The soft descriptor limit in force now."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_NOFILE if soft == resource.RLIM_INFINITY else int(soft)


def connection_budget(limit: int | None = None, *, cap: int = 4096) -> int:
    """How many inbound connections a server may hold with ``limit`` descriptors.

    Half of the descriptors, at most ``cap`` and at least 16: the other half stays free for
    what the process must always be able to open — its databases and their journals, the
    statistics file it rewrites, outbound links (one per peer in the consensus) and its HTTP
    client — so a flood of connections is refused before ``EMFILE`` can hit anything else.
    """
    fds = nofile_limit() if limit is None else limit
    return max(16, min(cap, fds // 2))


def prepare_process() -> int:
    """Private umask and the raised descriptor limit; returns the soft limit now in force."""
    set_private_umask()
    return raise_nofile_limit()
