"""Drift metrics against hand-computed examples: the crossed interval, Benjamini-Hochberg, the
drift time and its gate, seed agreement and drift per nat."""

import numpy as np
import pytest
from scipy import stats

from valuedrift.analysis.metrics import (
    NO_SIGNIFICANT_CHANGE,
    anova_sums,
    benjamini_hochberg,
    crossed_interval,
    drift,
    drift_time,
    extreme_index,
    per_nat,
    significant,
)

FRACTIONS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])


# -- Benjamini-Hochberg ----------------------------------------------------------------------


def test_benjamini_hochberg_by_hand():
    # sorted p: .01 .03 .04 .20 -> p * m / rank: .04 .06 .0533 .20 -> running minimum from the top
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.20])
    assert q == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])


def test_benjamini_hochberg_skips_missing_p_values_and_caps_at_one():
    q = benjamini_hochberg([0.02, np.nan, 0.9, 0.8])
    # three tests, not four: .02 * 3 = .06; .8 * 3 / 2 = 1.2 -> capped by the .9 above it
    assert q[0] == pytest.approx(0.06) and np.isnan(q[1])
    assert q[2] == pytest.approx(0.9) and q[3] == pytest.approx(0.9)


def test_a_cell_counts_only_where_q_is_small_and_every_seed_agrees():
    p = np.array([0.001, 0.001, 0.001, 0.5])
    marked = significant(p, seeds_agree=[True, False, False, True], n_seeds=[3, 3, 1, 3])
    # the second has seeds on both sides of 0; the third has one seed, so nothing to disagree
    assert marked.tolist() == [True, False, True, False]


# -- the crossed interval --------------------------------------------------------------------


def test_mean_squares_and_satterthwaite_by_hand():
    # seeds (rows) x questions: seed means 3, 4.25, 4.5; question means 1, 8/3, 5, 7; mean 47/12
    X = np.array([[0.0, 2, 4, 6], [1, 3, 5, 8], [2, 3, 6, 7]])
    m, ss_seed, ss_question, ss_residual = anova_sums(X)
    assert (m, ss_seed, ss_question, ss_residual) == pytest.approx((47 / 12, 31 / 6, 62.25, 1.5))
    ms_s, ms_q, ms_e = 31 / 12, 20.75, 0.25
    var = (ms_s + ms_q - ms_e) / 12
    df = (ms_s + ms_q - ms_e) ** 2 / (ms_s**2 / 2 + ms_q**2 / 3 + ms_e**2 / 6)
    interval = crossed_interval(X, 0.95)
    assert interval.df == pytest.approx(df) and df == pytest.approx(3.628, abs=1e-3)
    half = stats.t.ppf(0.975, df) * np.sqrt(var)
    assert (interval.low, interval.high) == pytest.approx((m - half, m + half))
    assert interval.p_value == pytest.approx(2 * stats.t.sf(m / np.sqrt(var), df))


def test_a_negative_seed_component_leaves_the_t_interval_over_question_means():
    # MS_seed 0.0625 < MS_residual 0.146: no seed variance to speak of
    X = np.array([[0.0, 1, 2, 4], [0.5, 1, 2.5, 3.5], [0, 1.5, 2, 4.5]])
    interval = crossed_interval(X, 0.95)
    expected = stats.t.interval(0.95, 3, loc=X.mean(), scale=stats.sem(X.mean(axis=0)))
    assert (interval.low, interval.high) == pytest.approx(expected)


def test_two_seeds_that_disagree_widen_the_interval_to_the_seed_means_t():
    # seed means 2 and 5: on 1 degree of freedom, the t interval over the seed means is the floor
    X = np.array([[1.0, 2, 3], [3, 4, 8]])
    interval = crossed_interval(X, 0.95)
    half = stats.t.ppf(0.975, 1) * np.sqrt(13.5 / 6)
    assert (interval.low, interval.high) == pytest.approx((3.5 - half, 3.5 + half))
    assert interval.over == "seeds x questions, 2 seeds"


def test_one_seed_is_the_t_interval_over_questions():
    x = np.array([0.1, 0.3, 0.2, 0.6, 0.4])
    interval = crossed_interval(x[None, :], 0.9)
    assert (interval.low, interval.high) == pytest.approx(stats.t.interval(0.9, 4, loc=x.mean(), scale=stats.sem(x)))
    assert interval.p_value == pytest.approx(stats.ttest_1samp(x, 0).pvalue)
    assert interval.over == "questions only, 1 seed"


def test_the_p_value_rejects_exactly_where_the_interval_excludes_zero():
    rng = np.random.default_rng(3)
    X = 0.05 + rng.normal(size=(400, 1, 1)) * 0.05 * rng.uniform(size=(400, 1, 1)) \
        + rng.normal(size=(400, 1, 6)) * 0.1 + rng.normal(size=(400, 3, 6)) * 0.1 + rng.normal(size=(400, 3, 1)) * 0.05
    interval = crossed_interval(X, 0.95)
    excludes = (interval.low > 0) | (interval.high < 0)
    assert 20 < excludes.sum() < 380  # both outcomes occur
    assert ((interval.p_value < 0.05) == excludes).all()


def test_the_paired_interval_is_narrow_where_an_unpaired_one_cannot_be():
    """Strong question effects shared by start and end, and a small true change of +0.02: pairing
    cancels the question effects. An interval that resamples start and end independently keeps
    them and must be about as wide as the spread of the questions (shown below) — it cannot
    pass the width bound this test asserts."""
    rng = np.random.default_rng(0)
    S, Q = 3, 20
    questions = rng.normal(0, 0.15, size=Q)
    start = 0.5 + questions + rng.normal(0, 0.005, size=(S, Q))
    end = start + 0.02 + rng.normal(0, 0.005, size=(S, Q))
    paired = crossed_interval(end - start, 0.95)
    assert paired.high - paired.low < 0.02
    assert paired.low > 0
    # what an unpaired bootstrap would report: its width is set by the question effects
    draws = rng.integers(0, Q, size=(2, 2000, Q))
    unpaired = end.mean(axis=0)[draws[1]].mean(axis=1) - start.mean(axis=0)[draws[0]].mean(axis=1)
    low, high = np.quantile(unpaired, [0.025, 0.975])
    assert high - low > 0.1 and low < 0


# -- drift of one cell -----------------------------------------------------------------------


def cell(curve, seeds: int = 3, noise: float = 0.01) -> np.ndarray:
    """P[s, q, t] = curve[t] + a question offset + a seed offset + interaction noise whose mean
    over (seed, question) is 0 at every snapshot, so v_t = curve[t] + a constant."""
    questions = np.array([-0.04, -0.02, 0.0, 0.02, 0.04])
    seed_offsets = np.linspace(-0.005, 0.005, seeds)
    s, q, t = np.meshgrid(np.arange(seeds), np.arange(5), np.arange(len(curve)), indexing="ij")
    e = noise * np.sin(1 + 7 * s + 3 * q + 11 * t)
    e -= e.mean(axis=(0, 1), keepdims=True)
    return np.asarray(curve)[None, None, :] + questions[None, :, None] + seed_offsets[:, None, None] + e


def test_magnitude_is_end_minus_start_of_the_means():
    P = np.array([[0.2, 0.5, 0.6], [0.4, 0.5, 0.8]])  # one seed, two questions
    d = drift(P, np.array([0.0, 0.5, 1.0]), n_boot=200, confidence=0.95)
    assert (d.start, d.end, d.magnitude) == pytest.approx((0.3, 0.7, 0.4))
    assert d.n_seeds == 1 and d.ci_over == "questions only, 1 seed"


def test_negative_drift_keeps_its_sign():
    P = np.array([[0.9, 0.5, 0.2], [0.7, 0.4, 0.2]])
    assert drift(P, np.array([0.0, 0.5, 1.0]), 100, 0.95).magnitude == pytest.approx(-0.6)


def test_extreme_is_the_first_furthest_snapshot_after_the_start():
    assert extreme_index(np.array([0.2, 0.6, 0.6, 0.5])) == 1
    assert extreme_index(np.array([0.5, 0.3, 0.7])) == 1  # equally far below and above: the first
    assert extreme_index(np.array([0.5, 0.5, 0.5])) == 1


def test_drift_time_is_first_entry_after_the_start_into_the_extreme_interval():
    v = np.array([0.10, 0.50, 0.52, 0.50])
    fractions = np.array([0.0, 1 / 3, 2 / 3, 1.0])
    assert drift_time(v, fractions, 0.48, 0.56) == pytest.approx(1 / 3)
    assert drift_time(v, fractions, 0.515, 0.525) == pytest.approx(2 / 3)
    # the start never counts, even where it lies inside the interval
    assert drift_time(np.array([0.5, 0.1, 0.5]), np.array([0, 0.5, 1]), 0.45, 0.55) == pytest.approx(1.0)


def test_rising_curve():
    d = drift(cell([0.2, 0.45, 0.68, 0.70, 0.69]), FRACTIONS, 500, 0.95)
    assert d.magnitude == pytest.approx(0.49) and d.magnitude_low > 0.4
    assert d.extreme_fraction == 0.75 and d.extreme_change == pytest.approx(0.5)
    # 0.68 lies inside the extreme's interval (about +-0.04), 0.45 does not
    assert d.drift_time == 0.5 and d.drift_time_note == ""
    assert d.drift_time_low <= 0.5 <= d.drift_time_high <= 0.75


def test_falling_curve():
    d = drift(cell([0.8, 0.55, 0.32, 0.30, 0.31]), FRACTIONS, 500, 0.95)
    assert d.magnitude == pytest.approx(-0.49) and d.magnitude_high < -0.4
    assert d.extreme_fraction == 0.75 and d.drift_time == 0.5


def test_rise_then_fall_back_reports_the_peak_and_no_net_drift():
    d = drift(cell([0.2, 0.5, 0.7, 0.45, 0.2]), FRACTIONS, 500, 0.95)
    assert d.magnitude == pytest.approx(0.0, abs=1e-9) and d.p_value > 0.5
    assert d.extreme_fraction == 0.5 and d.extreme_change == pytest.approx(0.5)
    assert d.drift_time == 0.5


def test_nothing_drifts_so_there_is_no_drift_time():
    d = drift(cell([0.4] * 5), FRACTIONS, 500, 0.95)
    assert np.isnan(d.drift_time) and np.isnan(d.drift_time_low) and np.isnan(d.drift_time_high)
    assert d.drift_time_note == NO_SIGNIFICANT_CHANGE
    assert d.extreme_p_value > 0.05


def test_identical_questions_give_a_degenerate_interval():
    P = np.tile([0.2, 0.4, 0.6], (5, 1))
    d = drift(P, np.array([0.0, 0.5, 1.0]), 100, 0.95)
    assert d.magnitude == d.magnitude_low == d.magnitude_high == pytest.approx(0.4)
    assert d.p_value == 0.0
    assert d.drift_time == d.drift_time_low == d.drift_time_high == pytest.approx(1.0)


def test_seed_spread_and_agreement():
    base = cell([0.3, 0.35, 0.4, 0.45, 0.5])
    agreeing = drift(base, FRACTIONS, 100, 0.95)
    assert agreeing.seeds_agree and agreeing.seed_min == pytest.approx(agreeing.seed_max, abs=0.02)
    # one seed of three goes the other way
    split = base.copy()
    split[2] = split[2, :, :1] - (split[2] - split[2, :, :1])
    d = drift(split, FRACTIONS, 100, 0.95)
    assert not d.seeds_agree
    assert d.seed_min == pytest.approx(-0.2, abs=0.02) and d.seed_max == pytest.approx(0.2, abs=0.02)


def test_drift_time_interval_widens_when_seeds_settle_at_different_times():
    early = np.array([0.2, 0.6, 0.6, 0.6, 0.6])
    late = np.array([0.2, 0.25, 0.3, 0.35, 0.6])
    same = drift(cell(early, seeds=4), FRACTIONS, 1000, 0.95, seed=1)
    P = cell(early, seeds=4)
    P[2:] += (late - early)[None, None, :]  # two of four seeds settle only at the end
    mixed = drift(P, FRACTIONS, 1000, 0.95, seed=1)
    assert same.extreme_fraction == 0.25  # four equal shares after the start: the first one
    assert same.drift_time_high - same.drift_time_low == 0
    # seeds resampled: replicates drawing mostly late seeds settle late
    assert mixed.drift_time_high - mixed.drift_time_low >= 0.5


def test_drift_time_bootstrap_is_reproducible():
    P = cell([0.2, 0.45, 0.6, 0.66, 0.7], noise=0.05)
    runs = [drift(P, FRACTIONS, 300, 0.95, seed=7) for _ in range(2)]
    assert runs[0] == runs[1]


# -- drift per nat ---------------------------------------------------------------------------


def test_drift_per_nat_with_the_same_kl_everywhere_scales_the_drift_interval():
    rng = np.random.default_rng(2)
    D = 0.1 + rng.normal(0, 0.05, size=(3, 8))
    K = np.full((3, 8), 0.5)
    ratio, low, high = per_nat(D, K, 0.95)
    M = crossed_interval(D, 0.95)
    assert ratio == pytest.approx(M.estimate / 0.5)
    assert (low, high) == pytest.approx((M.low / 0.5, M.high / 0.5))


def test_drift_per_nat_is_missing_without_a_positive_kl():
    D = np.full((2, 4), 0.1)
    assert np.isnan(per_nat(D, np.full((2, 4), np.nan), 0.95)).all()
    assert np.isnan(per_nat(D, np.full((2, 4), -0.01), 0.95)).all()
    # KL barely above 0 with an interval reaching below it: a ratio, but an unbounded interval
    ratio, low, high = per_nat(D, np.array([[0.02, -0.01, 0.015, -0.005], [0.01, 0.0, -0.01, 0.02]]), 0.95)
    assert np.isfinite(ratio) and np.isnan(low) and np.isnan(high)
