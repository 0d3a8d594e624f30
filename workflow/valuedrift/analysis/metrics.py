"""Drift metrics and their intervals (docs/method.md gives the full definitions and references).

For one run pooled over its training seeds, one topic and one stance, the data are
P[s, q, t]: the judge's mean p(stance) over the sampled answers to question q, at snapshot t of
the run trained with seed s. Every seed answers the same questions, so seeds and questions are
crossed.

- stance share v_t = mean over seeds and questions of P[:, :, t]
- drift magnitude M = v_end - v_start, estimated on the paired differences
  D[s, q] = P[s, q, end] - P[s, q, start]
- extreme: the snapshot t > 0 whose v_t is furthest from v_start (the first one on ties)
- drift time eta: the fraction of the phase at the first snapshot t > 0 whose v_t lies inside the
  interval of v_ext; reported only where v_ext - v_start differs significantly from zero

Intervals come from a two-way crossed random-effects model (`crossed_interval`), so they cover
what a rerun with other training seeds and other questions would change; with one seed they fall
back to a t interval over questions.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy import stats

NO_SIGNIFICANT_CHANGE = "no significant change from the start"
NO_LATER_SNAPSHOT = "no snapshot after the start"


def percentile_ci(samples: np.ndarray, confidence: float, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1 - confidence) / 2
    return np.quantile(samples, alpha, axis=axis), np.quantile(samples, 1 - alpha, axis=axis)


def cell_rng(seed: int, key) -> np.random.Generator:
    """A generator of its own for one table cell: the same cell draws the same numbers whatever
    other cells the table holds or in which order they come (crc32, unlike hash(), is stable)."""
    return np.random.default_rng([seed, zlib.crc32("|".join(map(str, key)).encode())])


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values): reject where q < the false discovery rate.
    NaN p-values stay NaN and do not count as tests."""
    p = np.asarray(p, dtype=float)
    q = np.full(p.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    if tested.size == 0:
        return q
    order = tested[np.argsort(p[tested], kind="stable")]
    ranked = p[order] * tested.size / np.arange(1, tested.size + 1)
    # step-up: each q is the smallest adjusted p at its rank or above
    q[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return q


def significant(p_value, seeds_agree, n_seeds, fdr: float = 0.05) -> np.ndarray:
    """Cells to mark in one family (a figure or a table): BH q < fdr across the family, and with
    several seeds, every seed's estimate on the side of the pooled one."""
    q = benjamini_hochberg(p_value)
    agree = np.asarray(seeds_agree, dtype=bool) | (np.asarray(n_seeds) <= 1)
    return (q < fdr) & agree


# -- the crossed interval --------------------------------------------------------------------


def anova_sums(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grand mean and the seed, question and residual sums of squares of X[..., seed, question]."""
    X = np.asarray(X, dtype=float)
    S, Q = X.shape[-2:]
    m = X.mean(axis=(-2, -1))
    by_seed, by_question = X.mean(axis=-1), X.mean(axis=-2)
    ss_seed = Q * ((by_seed - m[..., None]) ** 2).sum(axis=-1)
    ss_question = S * ((by_question - m[..., None]) ** 2).sum(axis=-1)
    residual = X - by_seed[..., :, None] - by_question[..., None, :] + m[..., None, None]
    return m, ss_seed, ss_question, (residual**2).sum(axis=(-2, -1))


def _t_interval(m, var, df, confidence):
    """Half-width and two-sided p-value (mean = 0) of a t interval; a zero variance gives a
    zero-width interval, and p = 0 unless the mean is exactly 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(var)
        half = stats.t.ppf(0.5 + confidence / 2, df) * se
        p = 2 * stats.t.sf(np.abs(m) / se, df)
    degenerate = var == 0
    half = np.where(degenerate, 0.0, half)
    p = np.where(degenerate, np.where(m == 0, 1.0, 0.0), p)
    return np.where(np.isfinite(df), half, np.nan), np.where(np.isfinite(df), p, np.nan)


def _crossed_variance(S, Q, ss_seed, ss_question, ss_residual):
    """Var(mean) * S * Q and its Satterthwaite degrees of freedom, for S > 1 and Q > 1.

    Var(mean) = sigma2_seed / S + sigma2_question / Q + sigma2_residual / (S Q), estimated by
    (MS_seed + MS_question - MS_residual) / (S Q). A component whose estimate is negative is
    taken as zero and its mean square pooled into the residual, so the estimate never falls below
    what the remaining components support."""
    ds, dq = S - 1, Q - 1
    de = ds * dq
    with np.errstate(divide="ignore", invalid="ignore"):
        ms_s, ms_q, ms_e = ss_seed / ds, ss_question / dq, ss_residual / de
        pooled = (ss_seed + ss_question + ss_residual) / (S * Q - 1)
        keep_s, keep_q = ms_s > ms_e, ms_q > ms_e
        both = keep_s & keep_q
        total = np.where(both, ms_s + ms_q - ms_e, np.where(keep_s, ms_s, np.where(keep_q, ms_q, pooled)))
        spread = np.where(both, ms_s**2 / ds + ms_q**2 / dq + ms_e**2 / de,
                          np.where(keep_s, ms_s**2 / ds, np.where(keep_q, ms_q**2 / dq, pooled**2 / (S * Q - 1))))
        nominal = np.where(both, ds, np.where(keep_s, ds, np.where(keep_q, dq, S * Q - 1)))
        df = np.where(spread > 0, total**2 / spread, nominal)
    return total, df, ms_s


@dataclass(frozen=True)
class Interval:
    """A mean with its interval and the two-sided p-value of mean = 0 (arrays when batched)."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p_value: np.ndarray
    df: np.ndarray
    n_seeds: int
    n_questions: int

    @property
    def over(self) -> str:
        return interval_label(self.n_seeds, self.n_questions)


def interval_label(n_seeds: int, n_questions: int = 2) -> str:
    """What an interval covers, in the words the tables and figures use."""
    if n_seeds > 1 and n_questions > 1:
        return f"seeds x questions, {n_seeds} seeds"
    if n_seeds == 1:
        return "questions only, 1 seed"
    return f"seeds only, {n_seeds} seeds, 1 question"


def crossed_from_sums(m, n_seeds, n_questions, ss_seed, ss_question, ss_residual, confidence: float):
    """Half-width, two-sided p-value (mean = 0) and degrees of freedom of `crossed_interval`,
    from the grand means and sums of squares of many cells at once."""
    m = np.asarray(m, dtype=float)
    S, Q = np.asarray(n_seeds, dtype=float), np.asarray(n_questions, dtype=float)
    n = S * Q
    crossed = (S > 1) & (Q > 1)
    total, df, ms_seed = _crossed_variance(S, Q, ss_seed, ss_question, ss_residual)
    half, p = _t_interval(m, total / n, df, confidence)
    seed_half, seed_p = _t_interval(m, ms_seed / n, S - 1, confidence)
    # one seed or one question: a one-sample t interval over the values
    with np.errstate(divide="ignore", invalid="ignore"):
        one_df = np.where(n > 1, n - 1, np.nan)
        one_half, one_p = _t_interval(m, (ss_seed + ss_question) / (one_df * n), one_df, confidence)
    return (np.where(crossed, np.maximum(half, seed_half), one_half),
            np.where(crossed, np.maximum(p, seed_p), one_p),
            np.where(crossed, df, one_df))


def crossed_interval(X, confidence: float) -> Interval:
    """Interval of the mean of X[..., seed, question] under a two-way crossed random-effects model
    (seeds and questions both random, every seed answers every question).

    S > 1, Q > 1: t interval with Var(mean) from the mean squares (`_crossed_variance`) and
    Satterthwaite (1946) degrees of freedom, never narrower than the t interval over the S seed
    means (S - 1 df). That floor is exact when questions add no variance; it guards the case the
    Satterthwaite degrees of freedom get wrong, a seed term estimated on very few degrees of
    freedom that happens to come out small.
    S = 1: the one-sample t interval over questions; Q = 1: over seeds; one value: NaN."""
    X = np.asarray(X, dtype=float)
    S, Q = X.shape[-2:]
    m, ss_s, ss_q, ss_e = anova_sums(X)
    half, p, df = crossed_from_sums(m, S, Q, ss_s, ss_q, ss_e, confidence)
    return Interval(m, m - half, m + half, p, df, S, Q)


# -- drift of one cell -----------------------------------------------------------------------


def as_cube(P) -> np.ndarray:
    """P as (seeds, questions, snapshots); a (questions, snapshots) matrix is one seed."""
    P = np.asarray(P, dtype=float)
    return P[None] if P.ndim == 2 else P


def _first_furthest(v: np.ndarray) -> np.ndarray:
    """Index t > 0 of the first snapshot furthest from the start along the last axis; distances
    within rounding error of the largest count as ties, so equal stance shares computed in
    different orders still resolve to the first."""
    distance = np.abs(v[..., 1:] - v[..., :1])
    furthest = distance.max(axis=-1, keepdims=True)
    return 1 + np.argmax(distance >= furthest - 1e-12 * np.maximum(1.0, furthest), axis=-1)


def extreme_index(v: np.ndarray) -> int:
    """The snapshot t > 0 furthest from the start (the first one on ties)."""
    return int(_first_furthest(np.asarray(v, dtype=float)))


def drift_time(v: np.ndarray, fractions: np.ndarray, ext_low: float, ext_high: float) -> float:
    """Fraction of the phase at the first snapshot t > 0 whose v_t lies in [ext_low, ext_high]."""
    inside = 1 + np.flatnonzero((v[1:] >= ext_low) & (v[1:] <= ext_high))
    return float(fractions[inside[0]]) if inside.size else float("nan")


def _draw_counts(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """How often each of n units is drawn in each of n_boot resamples with replacement."""
    draws = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)


def bootstrap_drift_times(P: np.ndarray, fractions: np.ndarray, half: np.ndarray, n_boot: int,
                          rng: np.random.Generator) -> np.ndarray:
    """Drift times of two-way bootstrap replicates: seeds and questions resampled with
    replacement, independently of each other, one question draw shared by every seed drawn (the
    crossed design kept). Each replicate finds its own extreme; the interval around it keeps the
    full-sample half-width `half[t]` of that snapshot, as the replicate has too few distinct seeds
    to estimate one."""
    S, Q, _ = P.shape
    seed_w, question_w = _draw_counts(rng, n_boot, S), _draw_counts(rng, n_boot, Q)
    v = np.einsum("bs,bq,sqt->bt", seed_w, question_w, P) / (S * Q)
    ext = _first_furthest(v)
    centre, width = v[np.arange(n_boot), ext], half[ext]
    inside = np.abs(v[:, 1:] - centre[:, None]) <= width[:, None] * (1 + 1e-12)
    return fractions[1 + np.argmax(inside, axis=1)]


@dataclass(frozen=True)
class Drift:
    start: float
    end: float
    magnitude: float
    magnitude_low: float
    magnitude_high: float
    p_value: float
    df: float
    n_seeds: int
    ci_over: str
    seed_min: float
    seed_max: float
    seeds_agree: bool
    extreme_fraction: float
    extreme_change: float
    extreme_p_value: float
    drift_time: float
    drift_time_low: float
    drift_time_high: float
    drift_time_note: str


def seed_magnitudes(P, confidence: float) -> Interval:
    """M of each seed alone, with its interval over questions (arrays over seeds)."""
    P = as_cube(P)
    D = P[:, :, -1] - P[:, :, 0]
    return crossed_interval(D[:, None, :], confidence)


def drift(P, fractions, n_boot: int, confidence: float, seed: "int | np.random.Generator" = 0) -> Drift:
    """Drift magnitude and drift time of one cell (see the module docstring); P is
    (seeds, questions, snapshots) or (questions, snapshots) for one seed."""
    P = as_cube(P)
    fractions = np.asarray(fractions, dtype=float)
    S, _, T = P.shape
    v = P.mean(axis=(0, 1))
    M = crossed_interval(P[:, :, -1] - P[:, :, 0], confidence)
    per_seed = seed_magnitudes(P, confidence).estimate
    agree = bool(M.estimate != 0 and np.all(np.sign(per_seed) == np.sign(M.estimate)))
    eta = drift_times(P, fractions, n_boot, confidence, seed) if T > 1 else None
    return Drift(float(v[0]), float(v[-1]), float(M.estimate), float(M.low), float(M.high), float(M.p_value),
                 float(M.df), S, M.over, float(per_seed.min()), float(per_seed.max()), agree,
                 *(eta if eta else (np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, NO_LATER_SNAPSHOT)))


def drift_times(P: np.ndarray, fractions: np.ndarray, n_boot: int, confidence: float, seed) -> tuple:
    """(extreme fraction, v_ext - v_start, its p-value, eta, eta low, eta high, note)."""
    v = P.mean(axis=(0, 1))
    ext = extreme_index(v)
    change = crossed_interval(P[:, :, ext] - P[:, :, 0], confidence)
    head = (float(fractions[ext]), float(change.estimate), float(change.p_value))
    if not change.low > 0 and not change.high < 0:
        return (*head, np.nan, np.nan, np.nan, NO_SIGNIFICANT_CHANGE)
    levels = crossed_interval(np.moveaxis(P, 2, 0), confidence)
    half = levels.high - levels.estimate
    eta = drift_time(v, fractions, v[ext] - half[ext] * (1 + 1e-12), v[ext] + half[ext] * (1 + 1e-12))
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    low, high = percentile_ci(bootstrap_drift_times(P, fractions, half, n_boot, rng), confidence)
    return (*head, eta, float(low), float(high), "")


# -- drift per unit of KL --------------------------------------------------------------------


def per_nat(D, K, confidence: float) -> tuple[float, float, float]:
    """Drift per nat R = mean(D) / mean(K) for paired D[s, q] (stance change) and K[s, q] (KL
    from the start), with a delta-method interval: the crossed interval of the linearised values
    (D - R K) / mean(K), whose mean is 0 and whose spread is that of R to first order. NaN where
    KL is missing or not positive; the interval is NaN where KL's own interval reaches 0, as the
    ratio is then unbounded."""
    D, K = np.asarray(D, dtype=float), np.asarray(K, dtype=float)
    kl = crossed_interval(K, confidence)
    if not np.isfinite(kl.estimate) or kl.estimate <= 0:
        return np.nan, np.nan, np.nan
    ratio = float(D.mean() / kl.estimate)
    if not kl.low > 0:
        return ratio, np.nan, np.nan
    linear = crossed_interval((D - ratio * K) / kl.estimate, confidence)
    half = float(linear.high - linear.estimate)
    return ratio, ratio - half, ratio + half
