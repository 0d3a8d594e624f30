"""Per-layer probes and their verdicts on synthetic hidden states whose answer is known by
construction: a planted direction, a planted rotation, a planted attenuation and a null."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from valuedrift.io import InputError
from valuedrift.representation import probes
from valuedrift.representation.layers import layer_table
from valuedrift.representation.probe_run import layer_rows
from valuedrift.representation.probes import (ProbeSettings, choose_C, diff_of_means_cosine, fit_probe,
                                              grouped_folds, linear_cka, pair_design, refit_replicates,
                                              selection_mask)

SETTINGS = ProbeSettings(n_boot=300, refits=30, Cs=(0.1, 1.0))
D = 16


def states(shift: float, seed: int = 0, n_pairs: int = 160, n_prompts: int = 80, noise=None):
    """Two pairs per prompt; chosen = rejected + shift along the first axis + noise."""
    rng = np.random.default_rng(seed)
    u = np.eye(D)[0]
    rejected = rng.normal(size=(n_pairs, D))
    noise = 0.5 * rng.normal(size=(n_pairs, D)) if noise is None else noise
    chosen = rejected + shift * u + noise
    groups = np.arange(n_pairs) % n_prompts
    lengths = rng.integers(50, 150, size=(n_pairs, 2))
    return chosen, rejected, groups, lengths


def orthogonal(seed: int, d: int = D) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def comparison_rows(start, end, groups, settings=SETTINGS, tags=None):
    """The probe job's rows of one layer for a start and an end snapshot given as (chosen, rejected)."""
    as_states = {k: {"s": ({(side, "mean"): np.asarray(pair[i])[None] for i, side in enumerate(("chosen", "rejected"))},
                           None)} for k, pair in enumerate((start, end))}
    select = selection_mask(groups, settings)
    rows, refits = layer_rows(as_states, "s", groups, select, "mean", 0, settings)
    tags = {"model": "m", "seed": 0, "sft_data": "s", "algorithm": "dpo", "pref_data": "p", "phase": "preference",
            **(tags or {})}
    return pd.DataFrame([{**tags, **r} for r in rows]), pd.DataFrame([{**tags, **r} for r in refits])


def verdicts(comparisons, settings=SETTINGS):
    """layer_table over several comparisons: [(start, end, groups, tags)] -> one row each."""
    parts = [comparison_rows(start, end, groups, settings, tags) for start, end, groups, tags in comparisons]
    return layer_table(pd.concat([p[0] for p in parts]), pd.concat([p[1] for p in parts]))


@pytest.fixture(scope="module")
def planted():
    return states(shift=1.0)


def test_planted_direction_is_found_and_shuffled_labels_are_not(planted):
    chosen, rejected, groups, _ = planted
    select = selection_mask(groups, SETTINGS)
    C, score = choose_C(chosen[select], rejected[select], groups[select], SETTINGS)
    assert C in SETTINGS.Cs and score > 0.75   # 20 prompts only
    fit = fit_probe(chosen[~select], rejected[~select], groups[~select], C, SETTINGS)
    assert fit.auroc > 0.9
    reps = refit_replicates((chosen, rejected), (chosen, rejected), groups, C, C, SETTINGS)
    assert abs(reps["shuffled"].mean() - 0.5) < 0.05 and reps["auroc_start"].mean() > 0.9
    # the same states at both ends: every replicate's change is exactly zero
    np.testing.assert_array_equal(reps["auroc_start"], reps["auroc_end"])
    np.testing.assert_array_equal(reps["auroc_start"], reps["transfer_end"])


def test_the_selection_prompts_are_set_aside_and_never_evaluated():
    groups = np.repeat(np.arange(40), 3)
    select = selection_mask(groups, SETTINGS)
    assert len(np.unique(groups[select])) == 10 and not set(groups[select]) & set(groups[~select])
    np.testing.assert_array_equal(select, selection_mask(groups, SETTINGS))   # seeded
    with pytest.raises(InputError, match="too few"):
        selection_mask(np.arange(5), SETTINGS)
    # garbage in the selection rows changes C at most, never the rows a number is computed on
    chosen, rejected, groups, _ = states(shift=1.0, seed=3)
    table, _ = comparison_rows((chosen, rejected), (chosen, rejected), groups)
    select = selection_mask(groups, SETTINGS)
    bad = chosen.copy()
    bad[select] = 50 * np.random.default_rng(4).normal(size=bad[select].shape)
    again, _ = comparison_rows((bad, rejected), (bad, rejected), groups)
    if (again["C"] == table["C"]).all():
        pd.testing.assert_series_equal(table["auroc"], again["auroc"])


def test_without_a_planted_direction_the_probe_is_at_chance():
    chosen, rejected, groups, _ = states(shift=0.0, seed=1)
    reps = refit_replicates((chosen, rejected), (chosen, rejected), groups, 1.0, 1.0, SETTINGS)
    low, high = np.quantile(reps["auroc_start"], [0.025, 0.975])
    assert low <= 0.5 <= high + 0.02   # bootstrap copies bias a refit AUROC down a little, never up


def test_length_baseline_sees_length():
    _, _, groups, _ = states(shift=0.0, seed=2)
    rng = np.random.default_rng(2)
    rejected_len = rng.integers(50, 150, size=len(groups))
    lengths = np.c_[rejected_len + 40 + rng.integers(-10, 10, size=len(groups)), rejected_len]
    auroc, low, high = probes.length_probe(lengths, groups, SETTINGS)
    assert auroc > 0.9 and low > 0.8
    assert probes.length_probe(lengths[:, ::-1], groups, SETTINGS)[0] < 0.1


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
    assert len(grouped_folds(np.array([0, 0, 1, 2]), 5)) == 3   # fewer prompts than folds


def test_a_bootstrap_draw_takes_whole_prompts_and_a_copied_prompt_stays_in_one_fold():
    groups = np.repeat(np.arange(12), [1, 2, 3, 4] * 3)
    rows = probes._replicate_rows(groups, np.random.default_rng(0))
    for g in np.unique(groups[rows]):
        copies = np.sum(groups[rows] == g) / np.sum(groups == g)
        assert copies == int(copies) >= 1
    _, _, row_groups, _ = pair_design(np.zeros((len(rows), 2)), np.ones((len(rows), 2)), groups[rows])
    for train, test in grouped_folds(row_groups, 5):
        assert not set(row_groups[train]) & set(row_groups[test])


def test_rotation_keeps_the_own_probe_and_breaks_transfer(planted):
    chosen, rejected, groups, _ = planted
    Q = orthogonal(8)
    row = verdicts([((chosen, rejected), (chosen @ Q, rejected @ Q), groups, None)]).iloc[0]
    assert row["auroc_end"] > 0.9 and row["transfer_end"] < 0.8
    assert row["verdict"] == "preserves" and row["geometry"] == "rotation"
    assert row["transfer_q"] < 0.05 and row["own_low"] <= 0 <= row["own_high"]


def test_attenuation_lowers_both_and_a_rescale_changes_nothing(planted):
    chosen, rejected, groups, _ = planted
    noise = chosen - rejected - np.eye(D)[0]
    weak = rejected + 0.3 * np.eye(D)[0] + noise     # the planted shift shrinks, the noise stays
    row = verdicts([((chosen, rejected), (weak, rejected), groups, None)]).iloc[0]
    assert row["own_change"] < -0.1 and row["transfer_change"] < -0.1
    assert row["verdict"] == "degrades" and row["geometry"] == "attenuation"
    rescaled = verdicts([((chosen, rejected), (3 * chosen, 3 * rejected), groups, None)]).iloc[0]
    assert rescaled["own_change"] == pytest.approx(0, abs=1e-9) and rescaled["verdict"] == "preserves"
    assert rescaled["geometry"] == "stable"


def test_null_comparisons_give_preserves_at_the_nominal_rate():
    """24 runs whose end is the start's pairs with fresh noise of the same law: no real change.
    Corrected across the 24, no run may be called; uncorrected, about 5 % may."""
    comparisons = []
    for i in range(24):
        rng = np.random.default_rng(100 + i)
        chosen, rejected, groups, _ = states(shift=0.6, seed=100 + i)
        other = rejected + 0.6 * np.eye(D)[0] + 0.5 * rng.normal(size=rejected.shape)
        comparisons.append(((chosen, rejected), (other, rejected), groups, {"algorithm": f"run{i}"}))
    rows = verdicts(comparisons)
    raw = float(np.mean(rows["own_p"] < 0.05))
    print(f"null: uncorrected false-positive rate {raw:.3f}, corrected calls {int((rows['verdict'] != 'preserves').sum())}")
    assert (rows["verdict"] == "preserves").all() and (rows["geometry"] == "stable").all()
    assert raw <= 0.15


def test_seeds_that_disagree_are_not_called(planted):
    chosen, rejected, groups, _ = planted
    noise = chosen - rejected - np.eye(D)[0]
    weak = rejected + 0.3 * np.eye(D)[0] + noise
    comparisons = [((chosen, rejected), (weak, rejected), groups, {"seed": 0}),
                   ((weak, rejected), (chosen, rejected), groups, {"seed": 1})]
    row = verdicts(comparisons).iloc[0]
    assert row["n_seeds"] == 2 and not row["own_seeds_agree"] and row["verdict"] == "preserves"
    agree = verdicts([comparisons[0], (*comparisons[0][:3], {"seed": 1})]).iloc[0]
    assert agree["own_seeds_agree"] and agree["verdict"] == "degrades"


def test_fast_auroc_matches_sklearn_with_ties_and_weights():
    rng = np.random.default_rng(11)
    scores = rng.integers(0, 6, size=80).astype(float)   # many ties
    labels = rng.integers(0, 2, size=80)
    assert probes._auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    w = rng.integers(0, 3, size=80)   # integer weights are repeated rows
    weighted = probes._weighted_auroc(scores, labels, w.astype(float))[0]
    assert weighted == pytest.approx(roc_auc_score(np.repeat(labels, w), np.repeat(scores, w)))


def test_deterministic_given_the_seed(planted):
    chosen, rejected, groups, _ = planted
    a = refit_replicates((chosen, rejected), (chosen[::-1], rejected[::-1]), groups, 1.0, 1.0, SETTINGS)
    b = refit_replicates((chosen, rejected), (chosen[::-1], rejected[::-1]), groups, 1.0, 1.0, SETTINGS)
    for column in a:
        np.testing.assert_array_equal(a[column], b[column])


def test_degenerate_inputs_are_input_errors():
    chosen, rejected, groups, lengths = states(shift=1.0, n_pairs=20, n_prompts=10)
    with pytest.raises(InputError, match="one shape"):
        fit_probe(chosen, rejected[:, :5], groups, 1.0, SETTINGS)
    with pytest.raises(InputError, match="prompt id per pair"):
        fit_probe(chosen, rejected, groups[:5], 1.0, SETTINGS)
    with pytest.raises(InputError, match="NaN"):
        fit_probe(np.where(chosen > 2, np.nan, chosen), rejected, groups, 1.0, SETTINGS)
    with pytest.raises(InputError, match="at least 2 prompts"):
        grouped_folds(np.zeros(10), 5)
    with pytest.raises(InputError, match="lengths"):
        probes.length_probe(lengths[:, 0], groups, SETTINGS)
    with pytest.raises(InputError, match="train_on"):
        fit_probe(chosen, rejected, groups, 1.0, SETTINGS, train_on=(chosen[:, :4], rejected[:, :4]))
    with pytest.raises(InputError, match="same rows"):
        linear_cka(chosen, chosen[:5])
    with pytest.raises(InputError, match="constant"):
        linear_cka(np.ones((5, 3)), chosen[:5])
    with pytest.raises(InputError, match="same mean"):
        diff_of_means_cosine(chosen, chosen, chosen, rejected)
    with pytest.raises(InputError):
        ProbeSettings(folds=1)
    with pytest.raises(InputError, match="select_share"):
        ProbeSettings(select_share=1.0)
    assert ProbeSettings(Cs=[10, 0.1]).Cs == (0.1, 10.0)


def test_transfer_reuses_the_starts_fold_probes():
    chosen, rejected, groups, _ = states(shift=1.0, seed=12)
    Q = orthogonal(13)
    start = fit_probe(chosen, rejected, groups, 1.0, SETTINGS)
    reused = probes.transfer_probe(start, 0.8 * chosen @ Q, 0.8 * rejected @ Q, groups)
    refit = fit_probe(0.8 * chosen @ Q, 0.8 * rejected @ Q, groups, 1.0, SETTINGS, train_on=(chosen, rejected))
    np.testing.assert_allclose(reused.scores, refit.scores)
    assert reused.auroc == pytest.approx(refit.auroc)
