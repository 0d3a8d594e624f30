"""Per-layer linear probes of preference, their controls, and geometry against the starting model.

Input for one snapshot and one layer: pooled hidden states of prompt+chosen and prompt+rejected for
the same n held-out pairs (arrays of shape (n, d)), the prompt id of each pair (several pairs may
share a prompt), and the answer lengths in tokens. SCIENCE.md (Study 2) lists the flaws of the
study we replicate; this module is built to avoid them:

- Probe data are pair differences: x_i = chosen_i - rejected_i with label 1 and its mirror -x_i with
  label 0. A pair, its mirror and every pair of the same prompt always fall into the same fold:
  outer folds are a deterministic GroupKFold over prompts (at most `folds` splits).
- The probe is StandardScaler + LogisticRegression, fitted on the training folds only. Its
  regularization C is chosen by an inner GroupKFold over prompts inside the outer training folds
  (nested CV), so the outer test fold is never seen while fitting or choosing C.
- The out-of-fold decision scores of all 2n rows give one AUROC; its confidence interval comes from
  a bootstrap over prompts (a drawn prompt brings all its rows), computed from the same
  out-of-fold scores.
- `select_score` is the mean over outer folds of the best inner-CV AUROC: it picks the peak layer
  without looking at any outer test fold (the study picked it on the test folds).
- Controls: a length-only probe on (len_chosen - len_rejected), because chosen and rejected answers
  differ in length; and a shuffled-label probe where, per prompt, a coin decides which side counts
  as chosen (selectivity = AUROC - shuffled AUROC). One coin per prompt, not per pair, so the
  shuffled labels keep the real ones' structure: the pairs of a prompt agree.
- Against the start model of the phase on identical inputs: linear CKA of the 2n representations,
  the cosine between difference-of-means directions, and probe transfer (train on the start's
  training folds, score the snapshot's test fold). Rotation shows as a transfer collapse while the
  snapshot's own probe stays high; attenuation as both falling.
- A change between two snapshots is paired: the same prompts are resampled for both, and the
  verdict is "enhances" or "degrades" only when the CI of the change excludes zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from valuedrift.analysis.metrics import percentile_ci
from valuedrift.io import InputError


@dataclass(frozen=True)
class ProbeSettings:
    folds: int = 5
    inner_folds: int = 3
    Cs: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    n_boot: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        # a YAML list arrives as a list: keep the settings hashable and the grid ascending
        object.__setattr__(self, "Cs", tuple(sorted(float(c) for c in self.Cs)))
        if self.folds < 2 or self.inner_folds < 2:
            raise InputError(f"probe folds and inner_folds must be at least 2, got {self.folds}, {self.inner_folds}")
        if not self.Cs or min(self.Cs) <= 0:
            raise InputError(f"probe Cs must be positive numbers, got {self.Cs}")
        if self.n_boot < 1 or not 0 < self.confidence < 1:
            raise InputError(f"need n_boot >= 1 and 0 < confidence < 1, got {self.n_boot}, {self.confidence}")


@dataclass(frozen=True)
class ProbeResult:
    auroc: float
    low: float
    high: float
    select_score: float
    scores: np.ndarray      # out-of-fold decision score of every row of pair_design
    labels: np.ndarray
    row_groups: np.ndarray
    # each outer fold's fitted probe and its test rows: probe transfer reuses the start's
    folds: tuple = field(default=(), repr=False, compare=False)


# ---- data layout and folds ----

def _pairs(chosen, rejected, groups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    chosen, rejected, groups = np.asarray(chosen, float), np.asarray(rejected, float), np.asarray(groups)
    if chosen.ndim != 2 or chosen.shape != rejected.shape:
        raise InputError(f"chosen and rejected must be (pairs, dim) arrays of one shape, got {chosen.shape} and {rejected.shape}")
    if groups.shape != (len(chosen),):
        raise InputError(f"need one prompt id per pair: {len(chosen)} pairs, groups of shape {groups.shape}")
    if not (np.isfinite(chosen).all() and np.isfinite(rejected).all()):
        raise InputError("hidden states contain NaN or infinite values")
    return chosen, rejected, groups


def pair_design(chosen, rejected, groups) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows (x_i, label 1) then the mirrors (-x_i, label 0), x_i = chosen_i - rejected_i.

    Returns X (2n, d), y (2n,), the prompt of each row and the pair of each row.
    """
    chosen, rejected, groups = _pairs(chosen, rejected, groups)
    x = chosen - rejected
    n = len(x)
    return np.vstack([x, -x]), np.r_[np.ones(n), np.zeros(n)], np.tile(groups, 2), np.tile(np.arange(n), 2)


def grouped_folds(groups, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Deterministic (train, test) row indices; a group is never split, every row tested once."""
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise InputError(f"cross-validation needs at least 2 prompts, got {n_groups}")
    splitter = GroupKFold(n_splits=min(n_splits, n_groups))
    return list(splitter.split(np.zeros(len(groups)), groups=groups))


# ---- AUROC and its bootstrap over prompts ----

def _weighted_auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC (ties count one half) under each row of weights (replicates, rows), in one pass.

    Rows are sorted once; per block of tied scores, the weight of positives times the weight of
    negatives strictly below (plus half the tied ones) sums to the Mann-Whitney statistic.
    """
    order = np.argsort(scores, kind="stable")
    s, pos = scores[order], labels[order] == 1
    w = np.atleast_2d(weights)[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    w_pos = np.add.reduceat(w * pos, starts, axis=1)
    w_neg = np.add.reduceat(w * ~pos, starts, axis=1)
    below = np.cumsum(w_neg, axis=1) - w_neg
    return (w_pos * (below + 0.5 * w_neg)).sum(axis=1) / (w_pos.sum(axis=1) * w_neg.sum(axis=1))


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(_weighted_auroc(scores, labels, np.ones(len(scores)))[0])


def _prompt_weights(row_groups: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, rows) weights: how often each row's prompt was drawn in each replicate."""
    _, codes = np.unique(row_groups, return_inverse=True)
    n_groups = codes.max() + 1
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    counts = np.bincount((draws + n_groups * np.arange(n_boot)[:, None]).ravel(), minlength=n_boot * n_groups)
    return counts.reshape(n_boot, n_groups)[:, codes].astype(float)


def auroc_ci(scores, labels, row_groups, settings: ProbeSettings, rng: np.random.Generator) -> tuple[float, float, float]:
    """AUROC of the scores and its percentile CI over prompts resampled with replacement."""
    scores, labels = np.asarray(scores, float), np.asarray(labels)
    boot = _weighted_auroc(scores, labels, _prompt_weights(np.asarray(row_groups), settings.n_boot, rng))
    low, high = percentile_ci(boot, settings.confidence)
    return _auroc(scores, labels), float(low), float(high)


def auroc_change(a: ProbeResult, b: ProbeResult, settings: ProbeSettings) -> tuple[float, float, float]:
    """AUROC(b) - AUROC(a) on the same pair set, with a CI that resamples the same prompts for both."""
    if not (np.array_equal(a.labels, b.labels) and np.array_equal(a.row_groups, b.row_groups)):
        raise InputError("auroc_change needs two probes of the same pair set (same labels and prompts per row)")
    weights = _prompt_weights(a.row_groups, settings.n_boot, np.random.default_rng(settings.seed))
    deltas = _weighted_auroc(b.scores, b.labels, weights) - _weighted_auroc(a.scores, a.labels, weights)
    low, high = percentile_ci(deltas, settings.confidence)
    return b.auroc - a.auroc, float(low), float(high)


def verdict(low: float, high: float) -> str:
    """A change counts only when its CI excludes zero."""
    if low > 0:
        return "enhances"
    if high < 0:
        return "degrades"
    return "preserves"


# ---- the probe with nested cross-validation ----

def _probe(C: float) -> Pipeline:
    return Pipeline([("scale", StandardScaler()), ("logreg", _logreg(C))])


def _logreg(C: float) -> LogisticRegression:
    # warm_start: along the ascending C grid each fit starts from the last solution
    return LogisticRegression(C=C, max_iter=1000, warm_start=True)


def _choose_C(X: np.ndarray, y: np.ndarray, groups: np.ndarray, settings: ProbeSettings) -> tuple[float, float]:
    """The C of the best mean inner-CV AUROC over prompts of these (training) rows, and that AUROC.

    On ties the smallest C wins: the strongest regularization that does as well.
    """
    splits = grouped_folds(groups, settings.inner_folds)
    aucs = np.empty((len(splits), len(settings.Cs)))
    for k, (train, test) in enumerate(splits):
        # the probe's pipeline, unrolled: the scaler of an inner split does not depend on C
        scaler = StandardScaler().fit(X[train])
        X_train, X_test = scaler.transform(X[train]), scaler.transform(X[test])
        logreg = _logreg(settings.Cs[0])
        for j, C in enumerate(settings.Cs):
            logreg.set_params(C=C).fit(X_train, y[train])
            aucs[k, j] = _auroc(logreg.decision_function(X_test), y[test])
    mean = aucs.mean(axis=0)
    best = int(np.argmax(mean))
    return settings.Cs[best], float(mean[best])


def _fit_fold(X, y, row_groups, train, settings: ProbeSettings) -> tuple[Pipeline, float]:
    """The probe of one outer fold: C by inner CV on the training rows, then refit on all of them."""
    C, inner_auroc = _choose_C(X[train], y[train], row_groups[train], settings)
    return _probe(C).fit(X[train], y[train]), inner_auroc


def fit_probe(chosen, rejected, groups, settings: ProbeSettings, train_on=None) -> ProbeResult:
    """Nested-CV probe of one layer; train_on=(start_chosen, start_rejected) gives probe transfer:
    each fold's probe is fitted on the start model's training rows and scores the snapshot's test rows.
    """
    X, y, row_groups, _ = pair_design(chosen, rejected, groups)
    X_fit = X if train_on is None else pair_design(*train_on, groups)[0]
    if X_fit.shape != X.shape:
        raise InputError(f"train_on has shape {X_fit.shape[1:]} per row, the snapshot {X.shape[1:]}")
    if len(np.unique(row_groups)) < 3:
        raise InputError("a nested-CV probe needs at least 3 prompts (2 in every outer training set)")
    scores, inner, folds = np.empty(len(y)), [], []
    # ~100 small fits: BLAS threads only add synchronization (and thrash on a busy node), and
    # sklearn's per-call checks of arrays it already checked would cost as much as the fits
    with threadpool_limits(limits=1, user_api="blas"), sklearn.config_context(assume_finite=True,
                                                                              skip_parameter_validation=True):
        for train, test in grouped_folds(row_groups, settings.folds):
            model, inner_auroc = _fit_fold(X_fit, y, row_groups, train, settings)
            scores[test] = model.decision_function(X[test])
            inner.append(inner_auroc)
            folds.append((model, test))
    # a fresh generator per probe: every probe of one pair set resamples the same prompts
    auroc, low, high = auroc_ci(scores, y, row_groups, settings, np.random.default_rng(settings.seed))
    return ProbeResult(auroc, low, high, float(np.mean(inner)), scores, y, row_groups, tuple(folds))


def transfer_probe(start: ProbeResult, chosen, rejected, groups, settings: ProbeSettings) -> ProbeResult:
    """Probe transfer: the start model's fold probes score the snapshot's rows of the same test folds.
    The same as fit_probe(..., train_on=start) without fitting anything again."""
    X, y, row_groups, _ = pair_design(chosen, rejected, groups)
    if not start.folds or not np.array_equal(row_groups, start.row_groups):
        raise InputError("probe transfer needs the start's probe on the same pairs (fit_probe of the start)")
    scores = np.empty(len(y))
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        for model, test in start.folds:
            scores[test] = model.decision_function(X[test])
    auroc, low, high = auroc_ci(scores, y, row_groups, settings, np.random.default_rng(settings.seed))
    return ProbeResult(auroc, low, high, start.select_score, scores, y, row_groups)


# ---- controls ----

def _flipped(chosen, rejected, groups, settings: ProbeSettings) -> tuple[np.ndarray, np.ndarray]:
    """Chosen and rejected swapped for every pair of a random half of the prompts (one coin each)."""
    chosen, rejected, groups = _pairs(chosen, rejected, groups)
    prompts = np.unique(groups)
    coins = np.random.default_rng([settings.seed, 1]).random(len(prompts)) < 0.5
    flip = np.isin(groups, prompts[coins])[:, None]
    return np.where(flip, rejected, chosen), np.where(flip, chosen, rejected)


def length_probe(lengths, groups, settings: ProbeSettings) -> ProbeResult:
    """The same probe on the length difference alone: what answer length by itself predicts."""
    lengths = np.asarray(lengths, float)
    if lengths.ndim != 2 or lengths.shape[1] != 2:
        raise InputError(f"lengths must be (pairs, 2) = (chosen, rejected) tokens, got shape {lengths.shape}")
    return fit_probe(lengths[:, :1], lengths[:, 1:], groups, settings)


# ---- geometry against the start model ----

def linear_cka(X, Y) -> float:
    """Linear CKA (Kornblith et al. 2019) of two representations of the same rows, columns centered."""
    X, Y = np.asarray(X, float), np.asarray(Y, float)
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
        raise InputError(f"CKA needs two (rows, dim) arrays of the same rows, got {X.shape} and {Y.shape}")
    X, Y = X - X.mean(axis=0), Y - Y.mean(axis=0)
    if len(X) < X.shape[1] + Y.shape[1]:
        # n x n Gram form, n^2 (dx + dy) flops: cheaper than the feature form's n (dx + dy)^2 here
        K, L = X @ X.T, Y @ Y.T
        hsic, norm_x, norm_y = np.vdot(K, L), np.linalg.norm(K), np.linalg.norm(L)
    else:
        hsic, norm_x, norm_y = np.linalg.norm(Y.T @ X) ** 2, np.linalg.norm(X.T @ X), np.linalg.norm(Y.T @ Y)
    if norm_x == 0 or norm_y == 0:
        raise InputError("CKA of a constant representation is undefined")
    return float(hsic / (norm_x * norm_y))


def diff_of_means_cosine(chosen_a, rejected_a, chosen_b, rejected_b) -> float:
    """Cosine between the directions mean(chosen) - mean(rejected) of two models (same coordinates)."""
    u = np.mean(chosen_a, axis=0) - np.mean(rejected_a, axis=0)
    v = np.mean(chosen_b, axis=0) - np.mean(rejected_b, axis=0)
    if u.shape != v.shape:
        raise InputError(f"the two models' representations differ in width: {u.shape} and {v.shape}")
    norms = np.linalg.norm(u) * np.linalg.norm(v)
    if norms == 0:
        raise InputError("difference of means is zero: chosen and rejected have the same mean")
    return float(u @ v / norms)


# ---- one layer of one snapshot ----

def _or_nan(similarity, *arrays) -> float:
    """A similarity, or NaN where it is undefined: the last-token states of layer 0 are the same
    token's embedding in every text when all answers end alike."""
    try:
        return similarity(*arrays)
    except InputError:
        return float("nan")


def layer_metrics(chosen, rejected, groups, start: ProbeResult, start_chosen, start_rejected,
                  settings: ProbeSettings, length: ProbeResult, shuffled: bool = True,
                  own: ProbeResult | None = None) -> tuple[dict, ProbeResult]:
    """Every per-layer number of a snapshot, and its own probe. `start` is the start model's own probe
    of this layer (fit_probe), `length` the length_probe of the pairs (the same for every layer);
    `shuffled=False` skips the shuffled-label control (it only depends on the pair set and layer);
    `own` is the snapshot's probe where it is already fitted (the start is its own snapshot 0)."""
    own = own if own is not None else fit_probe(chosen, rejected, groups, settings)
    transfer = transfer_probe(start, chosen, rejected, groups, settings)
    control = fit_probe(*_flipped(chosen, rejected, groups, settings), groups, settings).auroc if shuffled else np.nan
    return {
        "auroc": own.auroc, "auroc_low": own.low, "auroc_high": own.high, "select_score": own.select_score,
        "length_auroc": length.auroc, "length_low": length.low, "length_high": length.high,
        "shuffled_auroc": control, "selectivity": own.auroc - control,
        "cka": _or_nan(linear_cka, np.vstack([chosen, rejected]), np.vstack([start_chosen, start_rejected])),
        "dom_cosine": _or_nan(diff_of_means_cosine, chosen, rejected, start_chosen, start_rejected),
        "transfer_auroc": transfer.auroc, "transfer_low": transfer.low, "transfer_high": transfer.high,
    }, own
