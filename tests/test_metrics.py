"""Drift metrics against hand-computed examples."""

import numpy as np
import pytest

from valuedrift.analysis.metrics import bootstrap_shares, drift, drift_time, extreme_index, percentile_ci


def test_magnitude_is_end_minus_start_of_question_means():
    # two questions, three snapshots: v = (0.3, 0.5, 0.7) -> M = 0.7 - 0.3
    P = np.array([[0.2, 0.5, 0.6], [0.4, 0.5, 0.8]])
    d = drift(P, np.array([0.0, 0.5, 1.0]), n_boot=200, confidence=0.95)
    assert d.start == pytest.approx(0.3)
    assert d.end == pytest.approx(0.7)
    assert d.magnitude == pytest.approx(0.4)
    assert d.magnitude_low <= 0.4 <= d.magnitude_high


def test_negative_drift_keeps_its_sign():
    P = np.array([[0.9, 0.5, 0.2], [0.7, 0.4, 0.2]])
    assert drift(P, np.array([0.0, 0.5, 1.0]), 100, 0.95).magnitude == pytest.approx(-0.6)


def test_drift_time_is_first_entry_into_the_extreme_interval():
    v = np.array([0.10, 0.50, 0.52, 0.50])
    fractions = np.array([0.0, 1 / 3, 2 / 3, 1.0])
    assert extreme_index(v) == 2
    # CI of the extreme (0.52) is [0.48, 0.56]: v enters it at snapshot 1
    assert drift_time(v, fractions, 0.48, 0.56) == pytest.approx(1 / 3)
    # a narrow CI around the extreme: entered only at the extreme itself
    assert drift_time(v, fractions, 0.515, 0.525) == pytest.approx(2 / 3)


def test_drift_time_of_a_stance_that_settles_early():
    # 0.09 of the phase, as the study reports for SFT on WildChat: settled after the first snapshot
    fractions = np.linspace(0, 1, 12)
    v = np.array([0.2] + [0.6] * 11)
    assert drift_time(v, fractions, 0.58, 0.62) == pytest.approx(1 / 11)


def test_identical_questions_give_a_degenerate_interval():
    P = np.tile([0.2, 0.4, 0.6], (5, 1))
    d = drift(P, np.array([0.0, 0.5, 1.0]), 100, 0.95)
    assert d.magnitude == d.magnitude_low == d.magnitude_high == pytest.approx(0.4)
    assert d.drift_time == d.drift_time_low == d.drift_time_high == pytest.approx(1.0)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_more_questions():
    rng = np.random.default_rng(0)
    small = rng.uniform(size=(10, 1))
    large = rng.uniform(size=(1000, 1))
    widths = []
    for P in (small, large):
        low, high = percentile_ci(bootstrap_shares(P, 500, np.random.default_rng(1)), 0.95)
        assert low[0] <= P.mean() <= high[0]
        widths.append(high[0] - low[0])
    assert widths[1] < widths[0] / 3
