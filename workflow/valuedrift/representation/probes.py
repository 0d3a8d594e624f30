"""Per-layer linear probes of preference, their controls, and geometry against the starting model.

Input for one snapshot and one layer: pooled hidden states of prompt+chosen and prompt+rejected for
the same n held-out pairs (arrays of shape (n, d)), the prompt id of each pair (several pairs may
share a prompt), and the answer lengths in tokens. docs/method.md ("Representation probe") lists
the flaws of the mechanistic study this module is built to avoid:

- Probe data are pair differences: x_i = chosen_i - rejected_i with label 1 and its mirror -x_i with
  label 0. A pair, its mirror and every pair of the same prompt always fall into the same fold:
  folds are a deterministic GroupKFold over prompts (at most `folds` splits).
- The probe is StandardScaler + LogisticRegression, fitted on the training folds only. Its
  regularization C, and the summary's peak layer, are chosen on a separate share of the prompts
  (`select_share`, the selection rows) that no evaluated number uses (`choose_C`): the study chose
  its layer on the test folds.
- The out-of-fold decision scores of all 2n evaluation rows give one AUROC (`fit_probe`).
- Its uncertainty includes refitting (`refit_replicates`): each replicate draws prompts with
  replacement (a drawn prompt brings all its rows, and its copies share a fold), and refits the
  start's probe, the snapshot's probe and the shuffled-label controls on the drawn rows. The
  report turns the replicates into standard errors, p-values and corrected verdicts.
- Controls: a length-only probe on (len_chosen - len_rejected), because chosen and rejected answers
  differ in length; and shuffled labels on the start's states, where per prompt a coin decides
  which side counts as chosen, redrawn in every replicate (selectivity = AUROC - mean shuffled AUROC). One coin per
  prompt, not per pair, so the shuffled labels keep the real ones' structure.
- Against the start model of the phase on identical inputs: linear CKA of the 2n representations,
  the cosine between difference-of-means directions, and probe transfer (the start's fold probes
  score the snapshot's test folds). Rotation shows as a transfer collapse while the snapshot's own
  probe stays high; attenuation as both falling. A standardized probe ignores a mere rescaling.
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
    inner_folds: int = 3          # CV splits of the selection rows that choose C
    Cs: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    select_share: float = 0.25    # share of the prompts set aside to choose C and the peak layer
    refits: int = 50              # bootstrap replicates over prompts, every probe refitted in each
    n_boot: int = 1000            # replicates of the bootstraps that refit nothing (fixed scores)
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        # a YAML list arrives as a list: keep the settings hashable and the grid ascending
        object.__setattr__(self, "Cs", tuple(sorted(float(c) for c in self.Cs)))
        if self.folds < 2 or self.inner_folds < 2:
            raise InputError(f"probe folds and inner_folds must be at least 2, got {self.folds}, {self.inner_folds}")
        if not self.Cs or min(self.Cs) <= 0:
            raise InputError(f"probe Cs must be positive numbers, got {self.Cs}")
        if self.n_boot < 1 or self.refits < 2 or not 0 < self.confidence < 1:
            raise InputError(f"need n_boot >= 1, refits >= 2 and 0 < confidence < 1, got {self.n_boot}, "
                             f"{self.refits}, {self.confidence}")
        if not 0 < self.select_share < 1:
            raise InputError(f"probe select_share must be between 0 and 1, got {self.select_share}")


@dataclass(frozen=True)
class ProbeResult:
    auroc: float
    scores: np.ndarray      # out-of-fold decision score of every row of pair_design
    labels: np.ndarray
    row_groups: np.ndarray
    # each fold's fitted probe and its test rows: probe transfer reuses the start's
    folds: tuple = field(default=(), repr=False, compare=False)


# ---- data layout, folds and the selection split ----

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


def selection_mask(groups, settings: ProbeSettings) -> np.ndarray:
    """True for the pairs of the prompts set aside for choices (C, peak layer): a seeded draw of
    round(select_share x prompts), at least 3, leaving at least 3 prompts to evaluate."""
    prompts = np.unique(np.asarray(groups))
    n_select = max(3, round(settings.select_share * len(prompts)))
    if len(prompts) - n_select < 3:
        raise InputError(f"the probe pairs have {len(prompts)} prompts: too few to set {n_select} aside for "
                         "choosing the probe and still evaluate 3; use more prompts or a smaller select_share")
    chosen = np.random.default_rng([settings.seed, 3]).choice(prompts, size=n_select, replace=False)
    return np.isin(groups, chosen)


# ---- AUROC and the bootstrap of fixed scores ----

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
    """AUROC of fixed scores and its percentile CI over prompts resampled with replacement: for
    scores that involve no fitted probe (the length baseline is one number per pair)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels)
    boot = _weighted_auroc(scores, labels, _prompt_weights(np.asarray(row_groups), settings.n_boot, rng))
    low, high = percentile_ci(boot, settings.confidence)
    return _auroc(scores, labels), float(low), float(high)


def mean_ci(values, groups, settings: ProbeSettings) -> tuple[float, float, float]:
    """Mean of one number per pair, with a percentile CI over prompts resampled with replacement."""
    values = np.asarray(values, float)
    weights = _prompt_weights(np.asarray(groups), settings.n_boot, np.random.default_rng([settings.seed, 4]))
    low, high = percentile_ci(weights @ values / weights.sum(axis=1), settings.confidence)
    return float(values.mean()), float(low), float(high)


# ---- the probe ----

def _probe(C: float) -> Pipeline:
    return Pipeline([("scale", StandardScaler()), ("logreg", _logreg(C))])


def _logreg(C: float) -> LogisticRegression:
    # warm_start: along the ascending C grid each fit starts from the last solution. No intercept:
    # the design holds every row and its mirror with the other label, so the fitted intercept is
    # exactly 0 (the loss is symmetric in it); leaving it out gives the same probe, faster.
    return LogisticRegression(C=C, max_iter=1000, warm_start=True, fit_intercept=False)


def _fast():
    """~100 small fits per call: BLAS threads only add synchronization (and thrash on a busy node),
    and sklearn's per-call checks of arrays it already checked would cost as much as the fits."""
    return threadpool_limits(limits=1, user_api="blas"), sklearn.config_context(assume_finite=True,
                                                                               skip_parameter_validation=True)


def _choose_C(X: np.ndarray, y: np.ndarray, groups: np.ndarray, settings: ProbeSettings) -> tuple[float, float]:
    """The C of the best mean CV AUROC over prompts of these rows, and that AUROC.

    On ties the smallest C wins: the strongest regularization that does as well.
    """
    splits = grouped_folds(groups, settings.inner_folds)
    aucs = np.empty((len(splits), len(settings.Cs)))
    for k, (train, test) in enumerate(splits):
        # the probe's pipeline, unrolled: the scaler of a split does not depend on C
        scaler = StandardScaler().fit(X[train])
        X_train, X_test = scaler.transform(X[train]), scaler.transform(X[test])
        logreg = _logreg(settings.Cs[0])
        for j, C in enumerate(settings.Cs):
            logreg.set_params(C=C).fit(X_train, y[train])
            aucs[k, j] = _auroc(logreg.decision_function(X_test), y[test])
    mean = aucs.mean(axis=0)
    best = int(np.argmax(mean))
    return settings.Cs[best], float(mean[best])


def choose_C(chosen, rejected, groups, settings: ProbeSettings) -> tuple[float, float]:
    """(C, selection score) of a layer, from CV on the selection rows only (pass those rows)."""
    X, y, row_groups, _ = pair_design(chosen, rejected, groups)
    b, c = _fast()
    with b, c:
        return _choose_C(X, y, row_groups, settings)


def _cross_validate(X, y, row_groups, C: float, folds: int, X_fit=None) -> tuple[np.ndarray, list]:
    """Out-of-fold scores of every row, and (probe, test rows) per fold; X_fit: fit on other rows
    (probe transfer) and score X."""
    X_fit = X if X_fit is None else X_fit
    scores, fitted = np.empty(len(y)), []
    for train, test in grouped_folds(row_groups, folds):
        model = _probe(C).fit(X_fit[train], y[train])
        scores[test] = model.decision_function(X[test])
        fitted.append((model, test))
    return scores, fitted


def fit_probe(chosen, rejected, groups, C: float, settings: ProbeSettings, train_on=None) -> ProbeResult:
    """Cross-validated probe of one layer at regularization C (chosen beforehand on other rows).
    train_on=(start_chosen, start_rejected) gives probe transfer: each fold's probe is fitted on the
    start model's training rows and scores the snapshot's test rows."""
    X, y, row_groups, _ = pair_design(chosen, rejected, groups)
    X_fit = X if train_on is None else pair_design(*train_on, groups)[0]
    if X_fit.shape != X.shape:
        raise InputError(f"train_on has shape {X_fit.shape[1:]} per row, the snapshot {X.shape[1:]}")
    b, c = _fast()
    with b, c:
        scores, fitted = _cross_validate(X, y, row_groups, C, settings.folds, X_fit)
    return ProbeResult(_auroc(scores, y), scores, y, row_groups, tuple(fitted))


def transfer_probe(start: ProbeResult, chosen, rejected, groups) -> ProbeResult:
    """Probe transfer: the start model's fold probes score the snapshot's rows of the same test folds.
    The same as fit_probe(..., train_on=start's states) without fitting anything again."""
    X, y, row_groups, _ = pair_design(chosen, rejected, groups)
    if not start.folds or not np.array_equal(row_groups, start.row_groups):
        raise InputError("probe transfer needs the start's probe on the same pairs (fit_probe of the start)")
    scores = np.empty(len(y))
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        for model, test in start.folds:
            scores[test] = model.decision_function(X[test])
    return ProbeResult(_auroc(scores, y), scores, y, row_groups)


# ---- controls ----

def flipped(chosen, rejected, groups, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Chosen and rejected swapped for every pair of a random half of the prompts (one coin each)."""
    chosen, rejected, groups = _pairs(chosen, rejected, groups)
    prompts = np.unique(groups)
    flip = np.isin(groups, prompts[rng.random(len(prompts)) < 0.5])[:, None]
    return np.where(flip, rejected, chosen), np.where(flip, chosen, rejected)


def length_probe(lengths, groups, settings: ProbeSettings) -> tuple[float, float, float]:
    """AUROC (and fixed-score CI) of the length difference alone: what answer length by itself
    predicts. One feature: the sign of its difference is the whole probe, so nothing is fitted."""
    lengths = np.asarray(lengths, float)
    if lengths.ndim != 2 or lengths.shape[1] != 2:
        raise InputError(f"lengths must be (pairs, 2) = (chosen, rejected) tokens, got shape {lengths.shape}")
    x = lengths[:, 0] - lengths[:, 1]
    groups = np.asarray(groups)
    return auroc_ci(np.r_[x, -x], np.r_[np.ones(len(x)), np.zeros(len(x))], np.tile(groups, 2), settings,
                    np.random.default_rng(settings.seed))


# ---- refit-aware replicates ----

REPLICATE_COLUMNS = ("auroc_start", "auroc_end", "transfer_end", "shuffled")


def _replicate_rows(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pair indices of one bootstrap draw of prompts: each drawn prompt brings all its pairs."""
    prompts = np.unique(groups)
    members = {g: np.flatnonzero(groups == g) for g in prompts}
    return np.concatenate([members[g] for g in rng.choice(prompts, size=len(prompts), replace=True)])


def refit_replicates(start: tuple, end: tuple, groups, C_start: float, C_end: float,
                     settings: ProbeSettings) -> dict[str, np.ndarray]:
    """`refits` replicates of every AUROC the verdicts read, each refitted on a bootstrap draw of
    prompts: the start's and the end's own probes, the start's probes transferred to the end, and a
    shuffled-label probe of the start (the control: what a probe of this capacity finds in these
    states without a real label). A prompt drawn twice keeps one id, so its copies share a fold and
    never stand on both sides of a split. The draws depend only on the seed and the prompts, so
    every run of one pair set resamples the same prompts (replicate b of two seeds is paired)."""
    start_c, start_r, groups = _pairs(*start, groups)
    end_c, end_r, _ = _pairs(*end, groups)
    rng = np.random.default_rng([settings.seed, 2])
    out = {name: np.empty(settings.refits) for name in REPLICATE_COLUMNS}
    b, c = _fast()
    with b, c:
        for i in range(settings.refits):
            rows, coins = _replicate_rows(groups, rng), np.random.default_rng([settings.seed, 5, i])
            g = groups[rows]
            X0, y, row_groups, _ = pair_design(start_c[rows], start_r[rows], g)
            X1 = pair_design(end_c[rows], end_r[rows], g)[0]
            s0, fitted = _cross_validate(X0, y, row_groups, C_start, settings.folds)
            s1, _ = _cross_validate(X1, y, row_groups, C_end, settings.folds)
            transfer = np.empty(len(y))
            for model, test in fitted:
                transfer[test] = model.decision_function(X1[test])
            out["auroc_start"][i], out["auroc_end"][i] = _auroc(s0, y), _auroc(s1, y)
            out["transfer_end"][i] = _auroc(transfer, y)
            Xs = pair_design(*flipped(start_c[rows], start_r[rows], g, coins), g)[0]
            out["shuffled"][i] = _auroc(_cross_validate(Xs, y, row_groups, C_start, settings.folds)[0], y)
    return out


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


def snapshot_metrics(chosen, rejected, groups, start: ProbeResult, start_chosen, start_rejected, C: float,
                     settings: ProbeSettings, own: ProbeResult | None = None) -> tuple[dict, ProbeResult]:
    """The point estimates of a snapshot at one layer, and its own probe. `start` is the start model's
    own probe of this layer (fit_probe); `own` the snapshot's probe where it is already fitted (the
    start is its own snapshot 0)."""
    own = own if own is not None else fit_probe(chosen, rejected, groups, C, settings)
    return {
        "auroc": own.auroc, "transfer_auroc": transfer_probe(start, chosen, rejected, groups).auroc,
        "cka": _or_nan(linear_cka, np.vstack([chosen, rejected]), np.vstack([start_chosen, start_rejected])),
        "dom_cosine": _or_nan(diff_of_means_cosine, chosen, rejected, start_chosen, start_rejected),
    }, own
