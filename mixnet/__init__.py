"""The face of the project: the ``mixnet`` command mounting each role's subcommands, and (later)
the testnet launcher. The only package allowed to import the role packages."""

from __future__ import annotations
