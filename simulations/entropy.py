"""Information-theoretic anonymity metrics and the closed forms they are checked against.

Kept apart from the models so that the tests can check the metric itself (bits, not nats; zero
probabilities contribute nothing) independently of how the probabilities were obtained.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def shannon_bits(probs: FloatArray) -> float:
    """Shannon entropy in bits of a distribution, renormalized to sum to one.

    Renormalizing lets a caller pass the adversary's posterior over what it observed even when a
    sliver of the mass is still inside the network at the end of the run (reported separately).
    """
    p = np.asarray(probs, dtype=np.float64)
    p = p[p > 0]
    total = float(p.sum())
    if total <= 0:
        return 0.0
    p = p / total
    # max(): a certain outcome gives -0.0, which would print as "-0.0" in the JSON.
    return max(0.0, float(-(p * np.log2(p)).sum()))


def danezis_entropy_bits(input_rate: float, mean_delay: float) -> float:
    """Danezis (PET 2004): an exponential mix with input rate lambda and mean delay 1/mu.

    The message entropy of one input approaches ``log2(e * lambda / mu)`` when lambda >> mu: the
    output at time t after the input carries probability ``mu * exp(-mu t) / lambda``, and
    integrating ``-p log p`` over the Poisson outputs gives ``log(lambda / mu) + 1`` nats.
    """
    if input_rate <= 0 or mean_delay <= 0:
        return 0.0
    return math.log2(math.e * input_rate * mean_delay)


def epsilon_from(p0: float, p1: float) -> float:
    """Loopix's epsilon for two challenge senders: ``|ln(p0 / p1)|`` (natural log, inf if one is 0).

    Loopix defines sender-receiver unlinkability as the adversary's likelihood ratio between the
    two challenge senders being bounded by ``exp(epsilon)``.
    """
    if p0 <= 0 and p1 <= 0:
        return 0.0
    if p0 <= 0 or p1 <= 0:
        return math.inf
    return abs(math.log(p0 / p1))


def summarize(values: FloatArray | list[float]) -> dict[str, float | int]:
    """Mean and percentiles of per-target figures, the shape every ``--json`` metric takes."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    out: dict[str, float | int] = {"count": int(v.size), "infinite": int(v.size - finite.size)}
    if finite.size == 0:
        out.update({"mean": math.nan, "p5": math.nan, "p25": math.nan, "p50": math.nan,
                    "p75": math.nan, "p95": math.nan, "min": math.nan, "max": math.nan})
        return out
    pct = np.percentile(finite, [5, 25, 50, 75, 95])
    out.update({
        "mean": float(finite.mean()),
        "p5": float(pct[0]),
        "p25": float(pct[1]),
        "p50": float(pct[2]),
        "p75": float(pct[3]),
        "p95": float(pct[4]),
        "min": float(finite.min()),
        "max": float(finite.max()),
    })
    return out
