"""The whole workflow end to end on the CI-sized miniature world, with known-answer checks of the
measurement chain: the miniature world's true stance mixtures are known, so the measured ones
must follow them. DPO runs on a value-gap set and on its null set (the same pairs, chosen and
rejected swapped in half of them), each with two training seeds."""

import json
import subprocess

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

RUN = "tiny/seed-{seed}/sft-wildchat_like"


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


@pytest.fixture(scope="module")
def drift(study):
    d = pd.read_csv(study / "results" / "report" / "drift.csv", keep_default_na=False)
    return d.assign(drift_time=pd.to_numeric(d["drift_time"], errors="coerce"),
                    p_value=pd.to_numeric(d["p_value"], errors="coerce"))


def cell(drift, pref_data, stance, topic="all"):
    row = drift[(drift.phase == "preference") & (drift.pref_data == pref_data) & (drift.stance == stance)
                & (drift.topic == topic)]
    assert len(row) == 1, row
    return row.iloc[0]


def test_report_files_exist(study):
    for name in ("trajectories.png", "trajectories_by_topic.png", "drift_heatmap.png", "drift.csv", "drift_vs_kl.png",
                 "training_health.png", "drift_by_seed.csv", "judge_sensitivity.csv"):
        path = study / "results" / "report" / name
        assert path.stat().st_size > 100, path


def test_judge_is_accurate_on_held_out_questions(study):
    metrics = json.loads((study / "results" / "judge" / "stance_classifier" / "metrics.json").read_text())
    assert metrics["held_out_accuracy"] >= 0.9


def test_sft_on_neutral_leaning_data_moves_measured_neutral_toward_its_share(dist):
    start, end = share(dist, "sft", "neutral", 0), share(dist, "sft", "neutral", 2)
    assert end > start
    assert abs(end - 0.70) <= 0.15, f"p(neutral) after SFT {end:.3f}, the set's share 0.70"


def test_dpo_moves_support_on_the_value_gap_and_not_on_its_null(drift):
    """The same texts, with and without a net value gap: only the gap moves mass from p(oppose), the
    rejected stance, to p(support), the chosen one, with intervals over seeds and questions that
    exclude zero and every seed agreeing; the null set's interval covers zero."""
    gap, null = cell(drift, "support_chosen", "support"), cell(drift, "support_chosen_null", "support")
    rejected = cell(drift, "support_chosen", "oppose")
    assert gap.magnitude > 0.05 and gap.magnitude_low > 0 and str(gap.seeds_agree) == "True"
    assert rejected.magnitude < -0.05 and rejected.magnitude_high < 0 and str(rejected.seeds_agree) == "True"
    assert gap.magnitude - rejected.magnitude > 0.15, "support gains on oppose"
    assert gap.magnitude > null.magnitude + 0.05
    assert null.magnitude_low < 0 < null.magnitude_high, "the null set's interval covers no drift"


def test_intervals_cover_seeds_and_questions(study, drift):
    assert set(drift.n_seeds) == {2} and set(drift.ci_over) == {"seeds x questions, 2 seeds"}
    # the seeds' spread in the pooled table is that of each seed's own M, and the pooled M lies in it
    by_seed = pd.read_csv(study / "results" / "report" / "drift_by_seed.csv", keep_default_na=False)
    keys = ["sft_data", "algorithm", "pref_data", "topic", "stance"]
    spread = by_seed.groupby(keys)["magnitude"].agg(["min", "max", "size"]).reset_index()
    joined = drift.merge(spread, on=keys)
    assert len(joined) == len(drift) and (joined["size"] == 2).all()
    assert np.allclose(joined.seed_min, joined["min"], atol=1e-3) and np.allclose(joined.seed_max, joined["max"], atol=1e-3)
    assert (drift.seed_min <= drift.magnitude + 1e-9).all() and (drift.magnitude <= drift.seed_max + 1e-9).all()


def test_drift_time_is_reported_only_where_the_stance_moved(drift):
    assert len(drift) == 3 * 12 * 3  # runs (SFT, DPO x 2 sets) x (11 topics + all) x stances
    eta = drift.drift_time
    assert eta.dropna().between(0, 1).all()
    assert (eta.isna() == (drift.drift_time_note != "")).all()
    assert np.isfinite(cell(drift, "support_chosen", "support").drift_time)


def test_probes_read_each_snapshot_not_the_start_again(study, drift):
    """Answers of the end snapshot differ from the start's, and the policy moved away from its
    start: KL(end || start) is positive, larger on the value gap than on the null set."""
    run = study / "results" / RUN.format(seed=0) / "dpo-support_chosen" / "behaviour"
    start, end = ([json.loads(line)["answer"] for line in open(run / str(k) / "generations.jsonl")] for k in (0, 2))
    assert sum(a != b for a, b in zip(start, end)) > 0.5 * len(start)
    gap, null = cell(drift, "support_chosen", "support"), cell(drift, "support_chosen_null", "support")
    assert gap.kl_end > 0 and gap.kl_end_low > 0 and gap.kl_end > null.kl_end
    assert np.isfinite(gap.drift_per_nat)


def test_stance_shares_are_distributions(dist):
    totals = dist.groupby(["phase", "pref_data", "k", "topic"])["share"].sum()
    assert totals.between(0.999, 1.001).all()


def test_training_health_flags_runs_whose_objective_did_not_improve(study):
    health = pd.read_csv(study / "results" / "report" / "training_health_summary.csv", keep_default_na=False)
    dpo = health[(health.method == "dpo") & (health.pref_data == "support_chosen")]
    assert len(dpo) == 2 and (dpo.trained.astype(str) == "True").all(), dpo
    summary = pd.read_csv(study / "results" / "report" / "drift_summary.csv", keep_default_na=False)
    assert set(summary["trained"]) <= {"yes", "no", "unknown"}
    assert summary.loc[summary.pref_data == "support_chosen", "trained"].iloc[0] == "yes"


def test_rows_carry_the_versions_behind_their_numbers(study):
    tidy = pd.read_parquet(study / "results" / "aggregate" / "stances_by_question.parquet")
    assert tidy["judge_version"].nunique() == 1 and tidy["prompts_version"].nunique() == 1
    assert not tidy[["judge", "judge_version", "prompts_version"]].isna().any().any()
    assert set(tidy["seed"]) == {0, 1}


def test_changing_a_probe_setting_never_retrains(root, study, tmp_path):
    probe_change = tmp_path / "probe.yaml"
    probe_change.write_text("behaviour: {max_new_tokens: 40}\n")
    cmd = ["snakemake", "-n", "--snakefile", str(root / "Snakefile"), "--directory", str(study),
           "--configfile", str(root / "config.yaml"), str(root / "tests" / "config-ci.yaml"), str(probe_change)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "generate" in out.stdout
    assert "train_sft" not in out.stdout and "train_preference" not in out.stdout and "build_base_model" not in out.stdout


def test_value_gap_of_the_gap_set_and_of_its_null(study):
    gap = pd.read_csv(study / "results" / "report" / "value_gap.csv").set_index(["pref_data", "stance"])
    value, null = gap.loc["support_chosen"], gap.loc["support_chosen_null"]
    assert value.loc["support", "gap"] > 0.8 and value.loc["support", "low"] > 0.7
    assert value.loc["oppose", "gap"] < -0.8 and value.loc["total", "p_value"] < 0.01
    # the same texts with half the pairs swapped: no net gap, and the test sees none
    assert abs(null.loc["support", "gap"]) < 0.1 and null.loc["support", "low"] < 0 < null.loc["support", "high"]
    assert null.loc["total", "p_value"] > 0.05
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


def test_judge_sensitivity_sets_each_judge_beside_the_main_one(study):
    table = pd.read_csv(study / "results" / "report" / "judge_sensitivity.csv", keep_default_na=False)
    assert set(table["judge"]) == {"stance_classifier_lm"}
    assert len(table) == 3 * 3  # runs x stances, at topic "all"
    assert set(table["same_sign"].astype(str)) <= {"True", "False"}


def test_representation_probe_of_every_snapshot(study):
    table = pd.read_csv(study / "results" / "aggregate" / "representation.csv")
    table["pref_data"] = table["pref_data"].fillna("")
    runs = table.groupby(["seed", "algorithm", "pref_data"]).size()
    # the first seed's SFT run and its run on the value-gap set (representation.seeds: [0],
    # preference_datasets: [support_chosen]), both probe sets, mean pooling (the default)
    assert len(runs) == 2 and set(table["seed"]) == {0} and set(table["pref_data"]) == {"", "support_chosen"}
    assert set(table["k"]) == {0, 1, 2} and set(table["pooling"]) == {"mean"}
    assert set(table["probe_set"]) == {"stance", "quality"}
    start = table[table["k"] == 0]
    assert np.allclose(start["cka"], 1) and np.allclose(start["policy_margin_change"], 0)
    assert (start["transfer_auroc"] == start["auroc"]).all()
    # support vs oppose answers are linearly separable in the tiny model, from the embeddings on
    # (60 pairs here: ~45 evaluated, so a layer's AUROC is noisy)
    stance = table[table["probe_set"] == "stance"]
    assert (stance["auroc"] > 0.6).all() and (stance.groupby("k")["auroc"].max() > 0.8).all()
    # DPO on support_chosen raises the policy's own margin for support over oppose
    dpo = stance[(stance["pref_data"] == "support_chosen") & (stance["k"] == 2) & (stance["layer"] == 0)]
    assert (dpo["policy_margin_change"] > 0).all() and (dpo["policy_margin_change_low"] > 0).all()
    layers = pd.read_csv(study / "results" / "report" / "representation_layers.csv")
    assert len(layers) == 2 * 2 * table["layer"].nunique()  # runs x sets x layers
    assert set(layers["verdict"]) <= {"enhances", "preserves", "degrades"}
    assert (layers["own_low"] <= layers["own_change"]).all() and (layers["own_q"] >= layers["own_p"]).all()
    summary = pd.read_csv(study / "results" / "report" / "representation_summary.csv")
    assert len(summary) == 2 * 2 and (summary["peak_layer"] > 0).all()
    # the SAE and the crosscoder of DPO's run on the value-gap set, at each probe set's peak layer
    features = pd.read_csv(study / "results" / "report" / "representation_features.csv")
    assert len(features) == 2 and set(features["algorithm"]) == {"dpo"}
    assert (features["sae_fve_start"] > 0.5).all()
    shares = features[["share_shared", "share_start_only", "share_end_only"]].sum(axis=1)
    assert np.allclose(shares, 1)
    for name in ("representation_auroc_by_layer.png", "representation_layer_changes.png",
                 "representation_peak_change.png", "representation_cka.png", "representation_features.png"):
        assert (study / "results" / "report" / name).stat().st_size > 1000