"""Per-layer probes on synthetic hidden states whose answer is known by construction."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from valuedrift.io import InputError
from valuedrift.representation import probes
from valuedrift.representation.probes import (ProbeResult, ProbeSettings, auroc_change, auroc_ci, diff_of_means_cosine,
                                              fit_probe, grouped_folds, layer_metrics, linear_cka, pair_design,
                                              verdict)

SETTINGS = ProbeSettings(n_boot=300)
D = 32


def states(shift: float, seed: int = 0, n_pairs: int = 200, n_prompts: int = 100):
    """Two pairs per prompt; chosen = rejected + shift along a fixed unit vector + noise."""
    rng = np.random.default_rng(seed)
    u = np.zeros(D)
    u[0] = 1.0
    rejected = rng.normal(size=(n_pairs, D))
    chosen = rejected + shift * u + 0.5 * rng.normal(size=(n_pairs, D))
    groups = np.arange(n_pairs) % n_prompts
    lengths = rng.integers(50, 150, size=(n_pairs, 2))
    return chosen, rejected, groups, lengths


def metrics(chosen, rejected, lengths, groups, start_chosen, start_rejected, length=None) -> dict:
    """layer_metrics of a snapshot against a start, as the run-level command calls it."""
    start = fit_probe(start_chosen, start_rejected, groups, SETTINGS)
    length = length if length is not None else probes.length_probe(lengths, groups, SETTINGS)
    return layer_metrics(chosen, rejected, groups, start, start_chosen, start_rejected, SETTINGS, length)[0]


def orthogonal(seed: int, d: int = D) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@pytest.fixture(scope="module")
def planted():
    chosen, rejected, groups, lengths = states(shift=1.0)
    return chosen, rejected, groups, lengths, metrics(chosen, rejected, lengths, groups, chosen, rejected)


def test_planted_direction_is_found_and_shuffled_labels_are_not(planted):
    m = planted[-1]
    assert m["auroc"] > 0.9 and m["auroc_low"] > 0.8
    assert m["auroc_low"] <= m["auroc"] <= m["auroc_high"]
    assert m["select_score"] > 0.9
    assert abs(m["shuffled_auroc"] - 0.5) < 0.1
    assert m["selectivity"] == pytest.approx(m["auroc"] - m["shuffled_auroc"]) and m["selectivity"] > 0.3
    # the start is the snapshot: identical geometry, and transfer is the own probe
    assert m["cka"] == pytest.approx(1.0) and m["dom_cosine"] == pytest.approx(1.0)
    assert m["transfer_auroc"] == m["auroc"]
    assert set(m) == {"auroc", "auroc_low", "auroc_high", "select_score", "length_auroc", "length_low",
                      "length_high", "shuffled_auroc", "selectivity", "cka", "dom_cosine", "transfer_auroc",
                      "transfer_low", "transfer_high"}


def test_without_a_planted_direction_the_interval_covers_chance():
    chosen, rejected, groups, _ = states(shift=0.0, seed=1)
    r = fit_probe(chosen, rejected, groups, SETTINGS)
    assert r.low <= 0.5 <= r.high


def test_length_baseline_sees_length_and_the_probe_does_not():
    chosen, rejected, groups, _ = states(shift=0.0, seed=2)
    rng = np.random.default_rng(2)
    rejected_len = rng.integers(50, 150, size=len(groups))
    lengths = np.c_[rejected_len + 40 + rng.integers(-10, 10, size=len(groups)), rejected_len]
    m = metrics(chosen, rejected, lengths, groups, chosen, rejected)
    assert m["length_auroc"] > 0.9 and m["length_low"] > 0.8
    assert abs(m["auroc"] - 0.5) < 0.1
    # computed once outside and passed in: the same numbers
    length = probes.length_probe(lengths, groups, SETTINGS)
    again = metrics(chosen, rejected, lengths, groups, chosen, rejected, length=length)
    assert again == m


def test_cka_identity_rotation_scaling_and_independence():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16))
    assert linear_cka(X, X) == pytest.approx(1.0)
    assert linear_cka(X, X @ orthogonal(4, 16)) == pytest.approx(1.0)
    assert linear_cka(X, 3.7 * X + 2.0) == pytest.approx(1.0)
    assert linear_cka(X, rng.normal(size=(200, 16))) < 0.3
    assert linear_cka(X, X * np.logspace(-2, 1, 16)) < 0.95
    # the n x n Gram form (fewer rows than features) agrees with the feature form
    wide, other = rng.normal(size=(20, 40)), rng.normal(size=(20, 40))
    gram = linear_cka(wide, other)
    Xc, Yc = wide - wide.mean(0), other - other.mean(0)
    feature = np.linalg.norm(Yc.T @ Xc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    assert gram == pytest.approx(feature)


def test_grouped_folds_never_split_a_prompt_or_a_pair_from_its_mirror():
    rng = np.random.default_rng(5)
    groups = rng.integers(0, 37, size=150)   # uneven: prompts with 0 to many pairs
    X, y, row_groups, pair_index = pair_design(rng.normal(size=(150, 4)), rng.normal(size=(150, 4)), groups)
    assert X.shape == (300, 4) and y.sum() == 150
    np.testing.assert_array_equal(X[:150], -X[150:])
    folds = grouped_folds(row_groups, 5)
    assert len(folds) == 5
    tested = np.concatenate([test for _, test in folds])
    np.testing.assert_array_equal(np.sort(tested), np.arange(300))
    for train, test in folds:
        assert not set(row_groups[train]) & set(row_groups[test])
        assert not set(pair_index[train]) & set(pair_index[test])
        assert len(train) + len(test) == 300
    # fewer prompts than folds: one fold per prompt
    assert len(grouped_folds(np.array([0, 0, 1, 2]), 5)) == 3


def test_inner_cv_never_sees_the_outer_test_fold(monkeypatch):
    chosen, rejected, groups, _ = states(shift=1.0, seed=6, n_pairs=120, n_prompts=40)
    _, _, row_groups, _ = pair_design(chosen, rejected, groups)
    seen = []
    original = probes._choose_C
    monkeypatch.setattr(probes, "_choose_C", lambda X, y, g, s: seen.append(set(g)) or original(X, y, g, s))
    before = fit_probe(chosen, rejected, groups, SETTINGS)
    folds = grouped_folds(row_groups, SETTINGS.folds)
    assert len(seen) == len(folds)
    for inner_groups, (train, test) in zip(seen, folds):
        assert inner_groups == set(row_groups[train]) and not inner_groups & set(row_groups[test])
    # garbage in one prompt of fold 0 leaves that fold's probe, so its other test rows' scores, untouched
    test = folds[0][1]
    prompt = row_groups[test][0]
    chosen_bad = chosen.copy()
    chosen_bad[groups == prompt] = 1e3 * np.random.default_rng(7).normal(size=(np.sum(groups == prompt), D))
    after = fit_probe(chosen_bad, rejected, groups, SETTINGS)
    others = test[row_groups[test] != prompt]
    np.testing.assert_array_equal(after.scores[others], before.scores[others])
    assert not np.array_equal(after.scores, before.scores)


def test_rotation_breaks_transfer_but_not_the_own_probe(planted):
    chosen, rejected, groups, lengths, _ = planted
    Q = orthogonal(8)
    m = metrics(chosen @ Q, rejected @ Q, lengths, groups, chosen, rejected)
    assert m["auroc"] > 0.9
    # a random rotation in d=32 keeps a cosine of order 1/sqrt(32) with the old direction, and the
    # planted signal is strong: transfer falls toward chance, not exactly onto it
    assert abs(m["transfer_auroc"] - 0.5) < 0.25 and m["transfer_auroc"] < m["auroc"] - 0.4
    assert abs(m["dom_cosine"]) < 0.5
    # CKA cannot see a rotation: that is why transfer is measured
    assert m["cka"] == pytest.approx(1.0)


def test_attenuation_keeps_transfer():
    chosen, rejected, groups, lengths = states(shift=1.0, seed=9)
    noise = np.random.default_rng(10).normal(scale=0.05, size=(2,) + chosen.shape)
    m = metrics(0.5 * chosen + noise[0], 0.5 * rejected + noise[1], lengths, groups, chosen, rejected)
    assert m["transfer_auroc"] > 0.9 and m["auroc"] > 0.9
    assert m["dom_cosine"] > 0.9 and m["cka"] > 0.9


def test_fast_auroc_matches_sklearn_with_ties_and_weights():
    rng = np.random.default_rng(11)
    scores = rng.integers(0, 6, size=80).astype(float)   # many ties
    labels = rng.integers(0, 2, size=80)
    assert probes._auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    # integer weights are repeated rows
    w = rng.integers(0, 3, size=80)
    weighted = probes._weighted_auroc(scores, labels, w.astype(float))[0]
    assert weighted == pytest.approx(roc_auc_score(np.repeat(labels, w), np.repeat(scores, w)))


def test_bootstrap_resamples_whole_prompts():
    rng = np.random.default_rng(12)
    row_groups = np.repeat(np.arange(10), [1, 2, 3, 4, 1, 2, 3, 4, 1, 2])
    weights = probes._prompt_weights(row_groups, 50, rng)
    for g in range(10):
        rows = weights[:, row_groups == g]
        assert (rows == rows[:, :1]).all()   # all rows of a prompt share its draw count
    assert (weights[:, np.unique(row_groups, return_index=True)[1]].sum(axis=1) == 10).all()


def test_auroc_change_pairs_the_prompts_and_verdict_reads_the_interval(planted):
    chosen, rejected, groups, _, _ = planted
    strong = fit_probe(chosen, rejected, groups, SETTINGS)
    assert auroc_change(strong, strong, SETTINGS) == (0.0, 0.0, 0.0)
    weak_chosen = rejected + 0.3 * (chosen - rejected)   # the planted shift shrinks, the noise too
    weak_chosen += 0.5 * np.random.default_rng(13).normal(size=chosen.shape)
    weak = fit_probe(weak_chosen, rejected, groups, SETTINGS)
    delta, low, high = auroc_change(strong, weak, SETTINGS)
    assert delta == pytest.approx(weak.auroc - strong.auroc) and low <= delta <= high < 0
    assert verdict(low, high) == "degrades"
    assert verdict(0.01, 0.2) == "enhances"
    assert verdict(-0.1, 0.1) == "preserves" and verdict(0.0, 0.1) == "preserves"
    other = ProbeResult(0.5, 0.4, 0.6, 0.5, strong.scores, strong.labels, strong.row_groups[::-1])
    with pytest.raises(InputError):
        auroc_change(strong, other, SETTINGS)


def test_deterministic_given_the_seed(planted):
    chosen, rejected, groups, _, _ = planted
    a = fit_probe(chosen, rejected, groups, SETTINGS)
    b = fit_probe(chosen, rejected, groups, SETTINGS)
    assert (a.auroc, a.low, a.high, a.select_score) == (b.auroc, b.low, b.high, b.select_score)
    np.testing.assert_array_equal(a.scores, b.scores)
    low, high = auroc_ci(a.scores, a.labels, a.row_groups, SETTINGS, np.random.default_rng(SETTINGS.seed))[1:]
    assert (low, high) == (a.low, a.high)


def test_degenerate_inputs_are_input_errors():
    chosen, rejected, groups, lengths = states(shift=1.0, n_pairs=20, n_prompts=10)
    with pytest.raises(InputError, match="one shape"):
        fit_probe(chosen, rejected[:, :5], groups, SETTINGS)
    with pytest.raises(InputError, match="prompt id per pair"):
        fit_probe(chosen, rejected, groups[:5], SETTINGS)
    with pytest.raises(InputError, match="NaN"):
        fit_probe(np.where(chosen > 2, np.nan, chosen), rejected, groups, SETTINGS)
    with pytest.raises(InputError, match="at least 2 prompts"):
        grouped_folds(np.zeros(10), 5)
    with pytest.raises(InputError, match="at least 3 prompts"):
        fit_probe(chosen, rejected, groups % 2, SETTINGS)
    with pytest.raises(InputError, match="lengths"):
        probes.length_probe(lengths[:, 0], groups, SETTINGS)
    with pytest.raises(InputError, match="train_on"):
        fit_probe(chosen, rejected, groups, SETTINGS, train_on=(chosen[:, :4], rejected[:, :4]))
    with pytest.raises(InputError, match="same rows"):
        linear_cka(chosen, chosen[:5])
    with pytest.raises(InputError, match="constant"):
        linear_cka(np.ones((5, 3)), chosen[:5])
    with pytest.raises(InputError, match="same mean"):
        diff_of_means_cosine(chosen, chosen, chosen, rejected)
    with pytest.raises(InputError):
        ProbeSettings(folds=1)
    assert ProbeSettings(Cs=[10, 0.1]).Cs == (0.1, 10.0)


def test_transfer_reuses_the_starts_fold_probes():
    chosen, rejected, groups, _ = states(shift=1.0, seed=12)
    Q = orthogonal(13)
    start = fit_probe(chosen, rejected, groups, SETTINGS)
    reused = probes.transfer_probe(start, 0.8 * chosen @ Q, 0.8 * rejected @ Q, groups, SETTINGS)
    refit = fit_probe(0.8 * chosen @ Q, 0.8 * rejected @ Q, groups, SETTINGS, train_on=(chosen, rejected))
    np.testing.assert_allclose(reused.scores, refit.scores)
    assert reused.auroc == pytest.approx(refit.auroc)
