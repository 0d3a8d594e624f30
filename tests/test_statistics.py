"""The intervals and tests by simulation: coverage of the crossed interval where training seeds
vary, and the value gap's permutation test on sets with and without a gap."""

import numpy as np
import pandas as pd
import pytest

from valuedrift.analysis.metrics import crossed_interval
from valuedrift.analysis.value_gap import gap_rows, permutation_p_values

# (sd of the seed effect, sd of the question effect, sd of the seed x question residual)
MIXES = {
    "seeds dominate": (1.0, 0.25, 0.25),
    "questions dominate": (0.25, 1.0, 0.25),
    "balanced": (0.5, 0.5, 0.5),
    "seeds and residual, no question effect": (1.0, 0.0, 0.5),
    "residual-heavy": (0.5, 0.5, 1.0),
}
N_DATASETS, Q, MU = 2000, 5, 0.1


def simulate(S: int, sds, rng) -> np.ndarray:
    """N_DATASETS paired-difference matrices D[s, q] = mu + seed effect + question effect + noise."""
    seed_sd, question_sd, residual_sd = sds
    return (MU + seed_sd * rng.normal(size=(N_DATASETS, S, 1)) + question_sd * rng.normal(size=(N_DATASETS, 1, Q))
            + residual_sd * rng.normal(size=(N_DATASETS, S, Q)))


def questions_only_percentile_coverage(D, rng, n_boot: int = 1000) -> float:
    """Coverage of a 95 % percentile bootstrap that resamples the questions' seed-averaged
    differences, as if the seeds were fixed."""
    per_question = D.mean(axis=1)
    draws = rng.integers(0, Q, size=(len(D), n_boot, Q))
    boot = np.take_along_axis(per_question[:, None, :], draws, axis=2).mean(axis=2)
    low, high = np.quantile(boot, [0.025, 0.975], axis=1)
    return float(np.mean((low <= MU) & (MU <= high)))


@pytest.mark.parametrize("S", [2, 3])
@pytest.mark.parametrize("mix", list(MIXES))
def test_crossed_interval_keeps_its_coverage_with_few_seeds_and_five_questions(S, mix):
    """Coverage of the 95 % crossed interval over 2000 simulated datasets (Q = 5):

        mix                                      S = 2   S = 3
        seeds dominate         (1, .25, .25)     0.953   0.945
        questions dominate     (.25, 1, .25)     0.986   0.952
        balanced               (.5, .5, .5)      0.979   0.970
        seeds and residual     (1, 0, .5)        0.956   0.961
        residual-heavy         (.5, .5, 1)       0.982   0.977

    A percentile bootstrap over questions only covers far less wherever seeds vary (same data):
    0.23 / 0.28 where seeds dominate, 0.65 / 0.69 balanced, 0.73 / 0.74 residual-heavy, and still
    only about 0.82 with no seed effect at all, the known shortfall of a percentile bootstrap on
    5 values.

    Over a wider grid (sds in {0, .25, .5, 1, 2}^2 x {.25, .5, 1}, S in {2, 3, 5}, Q in {5, 50},
    2000-3000 datasets each) no setting covered less than 0.938. It is conservative, up to 0.997, where
    neither seeds nor questions add variance to the residual: with 2 or 3 seeds a small seed
    spread cannot be told from a large one that came out small by chance, and the interval
    keeps the width the large one would need (the `no seed or question effect` case below)."""
    rng = np.random.default_rng([S, *map(lambda x: int(100 * x), MIXES[mix])])
    D = simulate(S, MIXES[mix], rng)
    interval = crossed_interval(D, 0.95)
    coverage = float(np.mean((interval.low <= MU) & (MU <= interval.high)))
    assert 0.93 <= coverage <= 0.99, coverage
    if MIXES[mix][0] > 0:
        assert questions_only_percentile_coverage(D, rng) < 0.85


@pytest.mark.parametrize("S", [2, 3])
def test_crossed_interval_is_conservative_but_valid_without_seed_or_question_effects(S):
    D = simulate(S, (0.0, 0.0, 1.0), np.random.default_rng(S))
    interval = crossed_interval(D, 0.95)
    coverage = float(np.mean((interval.low <= MU) & (MU <= interval.high)))
    assert 0.95 <= coverage <= 0.999, coverage


def test_more_seeds_narrow_the_interval():
    """Where the residual dominates, five seeds answer the same questions five times over: the
    crossed interval is much narrower than one seed's interval over questions. With three it is
    only a little narrower (median width 2.14 against 2.30 here): the interval is never narrower
    than the t interval over the seed means, on S - 1 = 2 degrees of freedom."""
    rng = np.random.default_rng(5)
    widths = {}
    for S in (3, 5):
        D = simulate(S, (0.1, 0.2, 1.0), rng)
        pooled, single = crossed_interval(D, 0.95), crossed_interval(D[:, :1, :], 0.95)
        widths[S] = np.median(pooled.high - pooled.low) / np.median(single.high - single.low)
    assert widths[5] < 0.65 and widths[3] < 1


# -- the value gap's permutation test ----------------------------------------------------------


def judged(chosen, rejected, groups=None):
    """A judged-pairs table as `judge-pairs` writes it."""
    groups = groups if groups is not None else [f"q{i}" for i in range(len(chosen))]
    stances = ("support", "neutral", "oppose")
    return pd.DataFrame([{"pair": i, "group": g, "n_pairs": len(chosen),
                          **{f"chosen_p_{s}": c[j] for j, s in enumerate(stances)},
                          **{f"rejected_p_{s}": r[j] for j, s in enumerate(stances)}}
                         for i, (c, r, g) in enumerate(zip(chosen, rejected, groups))])


def answers(rng, n: int, stance: str) -> np.ndarray:
    """n judged answers leaning to `stance`: mostly that stance, some neutral."""
    lead = rng.uniform(0.6, 0.95, size=n)
    other = (1 - lead) * rng.uniform(0.3, 0.7, size=n)
    rows = {"support": (lead, other, 1 - lead - other), "oppose": (1 - lead - other, other, lead)}[stance]
    return np.column_stack(rows)


def null_pairs(rng, n: int):
    """Support-leaning and oppose-leaning answers, chosen and rejected swapped at random per pair:
    no stance separates chosen from rejected."""
    support, oppose = answers(rng, n, "support"), answers(rng, n, "oppose")
    swap = rng.uniform(size=n) < 0.5
    return np.where(swap[:, None], oppose, support), np.where(swap[:, None], support, oppose)


def null_set(rng, n: int = 30):
    return judged(*null_pairs(rng, n))


def rows_by_stance(table, n_perm=2000, seed=0):
    return {r["stance"]: r for r in gap_rows("set", table, 500, 0.95, np.random.default_rng(seed), n_perm)}


def test_a_value_gap_set_gets_a_small_p_value():
    rng = np.random.default_rng(0)
    rows = rows_by_stance(judged(answers(rng, 30, "support"), answers(rng, 30, "oppose")))
    for stance in ("support", "oppose", "total"):
        assert rows[stance]["p_value"] < 0.01
    assert rows["support"]["gap"] > 0.3 and rows["oppose"]["gap"] < -0.3  # signed estimates stay
    assert rows["total"]["n_permutations"] == 2000


def test_a_set_without_a_gap_gets_a_large_p_value_despite_its_positive_total():
    rows = rows_by_stance(null_set(np.random.default_rng(1)))
    # total variation is positive whatever the set: it has no interval, its p-value decides
    assert rows["total"]["gap"] > 0 and np.isnan(rows["total"]["low"]) and np.isnan(rows["total"]["high"])
    assert rows["total"]["p_value"] > 0.05
    assert rows["support"]["p_value"] > 0.05 and rows["oppose"]["p_value"] > 0.05


def test_the_permutation_test_rejects_null_sets_at_its_nominal_rate():
    rng = np.random.default_rng(2)
    p = []
    for _ in range(2000):
        chosen, rejected = null_pairs(rng, 20)
        p.append(permutation_p_values(chosen - rejected, 20, 400, rng))
    rejected = (np.array(p) < 0.05).mean(axis=0)  # per stance and the total
    assert ((rejected > 0.035) & (rejected < 0.07)).all(), rejected


def test_pairs_of_one_prompt_are_swapped_together():
    # one prompt holds every pair: swapping it flips every difference at once, so the only swap
    # distributions are "as observed" and "all reversed", and p cannot fall below 1/2
    rng = np.random.default_rng(3)
    table = judged(answers(rng, 12, "support"), answers(rng, 12, "oppose"), groups=["one"] * 12)
    assert rows_by_stance(table)["total"]["p_value"] > 0.4


def test_permutation_p_values_are_reproducible():
    table = null_set(np.random.default_rng(4))
    runs = [pd.DataFrame(rows_by_stance(table, seed=9).values()) for _ in range(2)]
    pd.testing.assert_frame_equal(*runs, check_exact=True)
