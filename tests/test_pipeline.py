"""The whole workflow end to end on the CI-sized miniature world, with known-answer checks of the
measurement chain: the miniature world's true stance mixtures are known, so the measured ones
must follow them."""

import json
import subprocess

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(root, tmp_path_factory):
    """Run the DAG once in a scratch folder; return that folder."""
    work = tmp_path_factory.mktemp("study")
    cmd = ["snakemake", "--snakefile", str(root / "Snakefile"), "--directory", str(work), "--cores", "2",
           "--configfile", str(root / "config.yaml"), str(root / "tests" / "config-ci.yaml")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    if out.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in (work / "results" / "logs").rglob("*.log"))
        pytest.fail(f"snakemake failed:\n{out.stderr[-5000:]}\n{logs[-20000:]}")
    return work


def share(dist, phase, stance, k, pref_data=""):
    row = dist[(dist.topic == "all") & (dist.phase == phase) & (dist.stance == stance)
               & (dist.k == k) & (dist.pref_data == pref_data)]
    assert len(row) == 1, row
    return float(row.share.iloc[0])


@pytest.fixture(scope="module")
def dist(study):
    d = pd.read_parquet(study / "results" / "aggregate" / "stance_distributions.parquet")
    d["pref_data"] = d["pref_data"].fillna("")
    return d


def test_report_files_exist(study):
    for name in ("trajectories.png", "trajectories_by_topic.png", "drift_heatmap.png", "drift.csv"):
        path = study / "results" / "report" / name
        assert path.stat().st_size > 1000, path


def test_judge_is_accurate_on_held_out_questions(study):
    metrics = json.loads((study / "results" / "judge" / "stance_classifier" / "metrics.json").read_text())
    assert metrics["held_out_accuracy"] >= 0.9


def test_sft_on_neutral_leaning_data_moves_measured_neutral_toward_its_share(dist):
    start, end = share(dist, "sft", "neutral", 0), share(dist, "sft", "neutral", 2)
    assert end > start
    assert abs(end - 0.70) <= 0.15, f"p(neutral) after SFT {end:.3f}, the set's share 0.70"


def test_dpo_on_support_chosen_pairs_raises_support_more_than_style_only(dist):
    gain = {p: share(dist, "preference", "support", 2, p) - share(dist, "preference", "support", 0, p)
            for p in ("support_chosen", "style_only")}
    assert gain["support_chosen"] > gain["style_only"], gain


def test_stance_shares_are_distributions(dist):
    totals = dist.groupby(["phase", "pref_data", "k", "topic"])["share"].sum()
    assert totals.between(0.999, 1.001).all()


def test_drift_table_covers_every_phase_topic_and_stance(study):
    drift = pd.read_csv(study / "results" / "report" / "drift.csv", keep_default_na=False)
    assert len(drift) == 3 * 12 * 3  # phases x (11 topics + all) x stances
    assert (drift.magnitude_low <= drift.magnitude + 1e-9).all() and (drift.magnitude <= drift.magnitude_high + 1e-9).all()
    assert drift.drift_time.between(0, 1).all()


def test_rows_carry_the_versions_behind_their_numbers(study):
    tidy = pd.read_parquet(study / "results" / "aggregate" / "stances_by_question.parquet")
    assert tidy["judge_version"].nunique() == 1 and tidy["prompts_version"].nunique() == 1
    assert not tidy[["judge", "judge_version", "prompts_version"]].isna().any().any()


def test_changing_a_probe_setting_never_retrains(root, study, tmp_path):
    probe_change = tmp_path / "probe.yaml"
    probe_change.write_text("behaviour: {max_new_tokens: 40}\n")
    cmd = ["snakemake", "-n", "--snakefile", str(root / "Snakefile"), "--directory", str(study),
           "--configfile", str(root / "config.yaml"), str(root / "tests" / "config-ci.yaml"), str(probe_change)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "generate" in out.stdout
    assert "train_sft" not in out.stdout and "train_preference" not in out.stdout and "build_base_model" not in out.stdout


def test_value_gap_is_near_zero_for_style_only_pairs_and_large_for_value_gap_pairs(study):
    gap = pd.read_csv(study / "results" / "report" / "value_gap.csv").set_index(["pref_data", "stance"])
    style, value = gap.loc["style_only"], gap.loc["support_chosen"]
    assert abs(style.loc["total", "gap"]) < 0.05 and style.loc["total", "n_value_laden"] == style.loc["total", "n_pairs"]
    for stance in ("support", "neutral", "oppose"):  # the interval covers no gap, or misses it by a hair
        assert style.loc[stance, "low"] < 0.03 and style.loc[stance, "high"] > -0.03
    assert value.loc["support", "gap"] > 0.8 and value.loc["support", "low"] > 0.7
    assert value.loc["oppose", "gap"] < -0.8 and value.loc["total", "gap"] > 0.8
    assert (study / "results" / "report" / "value_gap.png").stat().st_size > 1000


def test_judge_report_compares_the_judges_on_the_labelled_answers(study):
    calibration = pd.read_csv(study / "results" / "report" / "judge_calibration.csv").set_index("judge")
    assert list(calibration.index) == ["stance_classifier", "stance_classifier_lm"]
    row = calibration.loc["stance_classifier"]
    assert row["accuracy"] >= 0.9 and row["kappa_vs_labels"] >= 0.85 and 0 <= row["ece"] < 0.2
    assert abs(row["mean_p_neutral"] - row["true_share_neutral"]) < 0.1
    # the tiny model's hidden states carry stance, less cleanly than the words do
    assert 0.45 < calibration.loc["stance_classifier_lm", "accuracy"] < row["accuracy"]
    agreement = pd.read_csv(study / "results" / "report" / "judge_agreement.csv")
    assert len(agreement) == 1 and 0.1 < agreement.loc[0, "kappa"] < 1


def test_representation_probe_of_every_snapshot(study):
    table = pd.read_csv(study / "results" / "aggregate" / "representation.csv")
    table["pref_data"] = table["pref_data"].fillna("")
    runs = table.groupby(["algorithm", "pref_data"]).size()
    assert len(runs) == 3 and set(table["k"]) == {0, 1, 2} and set(table["pooling"]) == {"mean", "last"}
    start = table[table["k"] == 0]
    assert np.allclose(start["delta_auroc"], 0) and np.allclose(start[start["pooling"] == "mean"]["cka"], 1)
    mean = table[table["pooling"] == "mean"]
    # support vs oppose answers are linearly separable in the tiny model; shuffled labels are not
    assert (mean["auroc"] > 0.75).all() and (abs(mean["shuffled_auroc"] - 0.5) < 0.2).all()
    summary = pd.read_csv(study / "results" / "report" / "representation_summary.csv")
    assert len(summary) == 3 and set(summary["verdict"]) <= {"enhances", "preserves", "degrades"}
    for name in ("representation_auroc_by_layer.png", "representation_peak_change.png", "representation_cka.png"):
        assert (study / "results" / "report" / name).stat().st_size > 1000
