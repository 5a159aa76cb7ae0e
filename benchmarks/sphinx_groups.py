"""The candidate groups for a Sphinx hop, side by side: what one multiplication costs in each.

A hop makes two variable-base multiplications (shared secret, blinding); a sender makes one
fixed-base multiplication and one variable-base multiplication per hop. Candidates: NIST P-256
through petlib (suite v1's group), X25519 through ``cryptography`` (OpenSSL; a key object per
scalar) and X25519 through libsodium (PyNaCl's ``crypto_scalarmult``, no objects). Interleaved
rounds, CPU time per call, medians: this is the measurement behind suite v2's choice
(``docs/decisions.md``).

    python benchmarks/sphinx_groups.py --json [--rounds 7] [--reps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import nacl.bindings as sodium
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from petlib.ec import EcGroup

from mixcore import sphinx_v2


def _cpu_us(fn: Callable[[], object], reps: int) -> float:
    start = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - start) / reps * 1e6


def run(rounds: int, reps: int) -> dict[str, object]:
    group = EcGroup(415)
    g = group.generator()
    scalar = group.order().random()
    point = scalar * g
    k = os.urandom(32)
    u = sodium.crypto_scalarmult_base(os.urandom(32))
    private = X25519PrivateKey.from_private_bytes(k)
    cases: dict[str, Callable[[], object]] = {
        "p256_petlib_variable": lambda: point.pt_mul(scalar),
        "p256_petlib_fixed": lambda: g.pt_mul(scalar),
        "x25519_cryptography_variable": lambda: private.exchange(
            X25519PublicKey.from_public_bytes(u)
        ),
        "x25519_cryptography_new_scalar": lambda: X25519PrivateKey.from_private_bytes(k).exchange(
            X25519PublicKey.from_public_bytes(u)
        ),
        "x25519_libsodium_variable": lambda: sphinx_v2.x25519(k, u),
        "x25519_libsodium_fixed": lambda: sodium.crypto_scalarmult_base(k),
    }
    figures: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, fn in cases.items():
            figures.setdefault(name, []).append(_cpu_us(fn, reps))
    med = {name: round(statistics.median(v), 1) for name, v in figures.items()}
    return {
        "benchmark": "sphinx_groups",
        "us_per_multiplication": med,
        "hop_two_multiplications_us": {
            "p256_petlib": round(2 * med["p256_petlib_variable"], 1),
            # the node's own key is a ready object; the blinding scalar is new every packet
            "x25519_cryptography": round(
                med["x25519_cryptography_variable"] + med["x25519_cryptography_new_scalar"], 1
            ),
            "x25519_libsodium": round(2 * med["x25519_libsodium_variable"], 1),
        },
        "sender_5_hops_us": {
            "p256_petlib": round(5 * (med["p256_petlib_fixed"] + med["p256_petlib_variable"]), 1),
            "x25519_libsodium": round(
                med["x25519_libsodium_fixed"] + 5 * med["x25519_libsodium_variable"], 1
            ),
        },
        "rounds": rounds,
        "reps_per_round": reps,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=300)
    args = parser.parse_args(argv)
    result = run(args.rounds, args.reps)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
