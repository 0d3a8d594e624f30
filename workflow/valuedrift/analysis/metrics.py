"""Drift metrics as SCIENCE.md defines them, with bootstrap confidence intervals over questions.

For one run (a phase), topic and stance, the input is a matrix P of shape (questions, snapshots):
P[q, t] = mean over sampled answers to question q at snapshot t of p_judge(stance | q, answer).
- stance share v_t = mean over questions of P[:, t]
- drift magnitude M = v_end - v_start (signed)
- drift time eta = t_ext / t_total: the first snapshot whose v_t lies inside the confidence
  interval of the extreme value (the v_t furthest from v_start), as a fraction of the phase.
Questions are resampled with replacement, the same questions at every snapshot (paired), so the
intervals of M and eta account for which questions happened to be asked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def percentile_ci(samples: np.ndarray, confidence: float, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1 - confidence) / 2
    return np.quantile(samples, alpha, axis=axis), np.quantile(samples, 1 - alpha, axis=axis)


def bootstrap_shares(P: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, snapshots) stance shares from questions resampled with replacement."""
    idx = rng.integers(0, P.shape[0], size=(n_boot, P.shape[0]))
    return P[idx].mean(axis=1)


def drift_time(v: np.ndarray, fractions: np.ndarray, ext_low: float, ext_high: float) -> float:
    """Fraction of the phase at which v first enters [ext_low, ext_high], the CI of its extreme."""
    inside = np.flatnonzero((v >= ext_low) & (v <= ext_high))
    return float(fractions[inside[0]]) if inside.size else float(fractions[-1])


def extreme_index(v: np.ndarray) -> int:
    """The snapshot furthest from the start (first one on ties)."""
    return int(np.argmax(np.abs(v - v[0])))


@dataclass(frozen=True)
class Drift:
    start: float
    end: float
    magnitude: float
    magnitude_low: float
    magnitude_high: float
    drift_time: float
    drift_time_low: float
    drift_time_high: float


def drift(P: np.ndarray, fractions: np.ndarray, n_boot: int, confidence: float, seed: int = 0) -> Drift:
    """Drift magnitude and drift time of one phase, with bootstrap CIs (see module docstring)."""
    rng = np.random.default_rng(seed)
    v = P.mean(axis=0)
    boot = bootstrap_shares(P, n_boot, rng)
    low, high = percentile_ci(boot, confidence)
    ext = extreme_index(v)
    eta = drift_time(v, fractions, low[ext], high[ext])
    # in each replicate, the interval around its own extreme keeps the full-sample width
    below, above = v[ext] - low[ext], high[ext] - v[ext]
    etas = np.empty(n_boot)
    for b, vb in enumerate(boot):
        e = extreme_index(vb)
        etas[b] = drift_time(vb, fractions, vb[e] - below, vb[e] + above)
    m = boot[:, -1] - boot[:, 0]
    m_low, m_high = percentile_ci(m, confidence)
    eta_low, eta_high = percentile_ci(etas, confidence)
    return Drift(float(v[0]), float(v[-1]), float(v[-1] - v[0]), float(m_low), float(m_high),
                 eta, float(eta_low), float(eta_high))
