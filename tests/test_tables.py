"""`aggregate` and `drift` on synthetic stance files with several training seeds: the tables'
shape and columns, seeds pooled per snapshot, KL from log-probabilities, and bit-identical
output for the same inputs."""

import json

import numpy as np
import pandas as pd
import pytest

from valuedrift.analysis import aggregate, drift
from valuedrift.io import InputError

RUNS = [("sft", "", "sft", 0.0), ("dpo", "support_chosen", "preference", 0.3), ("ppo", "style_only", "preference", 0.0)]
SEEDS, KS, TOPICS, QUESTIONS, SAMPLES = (0, 1, 2), (0, 1, 2, 3), ("economy", "health"), 4, 3


def stance_rows(algorithm, pref_data, phase, rise, seed, k, rng, logp=True):
    """One snapshot's judged answers: p(support) = a question's base + rise * k / 3 + noise."""
    steps = 30 + seed if algorithm == "ppo" else 30  # an online algorithm: seeds end at different steps
    rows = []
    for topic in TOPICS:
        for q in range(QUESTIONS):
            for sample in range(SAMPLES):
                support = float(np.clip(0.2 + 0.1 * q + rise * k / 3 + rng.normal(0, 0.03), 0.01, 0.97))
                neutral = (1 - support) * 0.6
                row = {"model": "tiny", "sft_data": "wildchat_like", "algorithm": algorithm,
                       "pref_data": pref_data or None, "phase": phase, "seed": seed, "k": k,
                       "step": round(steps * k / 3), "fraction": round(steps * k / 3) / steps, "judge": "j",
                       "judge_version": "v1", "prompts_version": "p1", "topic": topic,
                       "question_id": f"{topic}-{q}", "sample": sample, "p_support": support,
                       "p_neutral": neutral, "p_oppose": 1 - support - neutral}
                if logp:
                    row["logp"] = float(-20 + rng.normal())
                    row["logp_start"] = row["logp"] - 0.1 * k * (1 + rise) + float(rng.normal(0, 0.01))
                rows.append(row)
    return rows


def write_study(folder, logp=True, seeds=SEEDS):
    rng = np.random.default_rng(0)
    paths = []
    for algorithm, pref_data, phase, rise in RUNS:
        for seed in seeds:
            for k in KS:
                path = folder / f"{algorithm}-{seed}-{k}.jsonl"
                rows = stance_rows(algorithm, pref_data, phase, rise, seed, k, rng, logp)
                path.write_text("".join(json.dumps(r) + "\n" for r in rows))
                paths.append(path)
    return paths


def run_cli(folder, paths, extra=True):
    """aggregate then drift, through their command lines; the new outputs only with `extra`."""
    a = [*map(str, paths), "--by-question", str(folder / "q.parquet"), "--distributions", str(folder / "d.parquet"),
         "--bootstrap-samples", "200"]
    d = ["--by-question", str(folder / "q.parquet"), "--output", str(folder / "drift.csv"),
         "--summary", str(folder / "summary.csv"), "--bootstrap-samples", "200"]
    if extra:
        a += ["--distributions-by-seed", str(folder / "ds.parquet")]
        d += ["--by-seed", str(folder / "by_seed.csv"), "--by-snapshot", str(folder / "by_snapshot.csv")]
    aggregate.main(aggregate.make_parser().parse_args(a))
    drift.main(drift.make_parser().parse_args(d))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tables")
    run_cli(folder, write_study(folder))
    return folder


def test_by_question_keys_on_the_seed_and_estimates_kl(study):
    tidy = pd.read_parquet(study / "q.parquet")
    assert len(tidy) == len(RUNS) * len(SEEDS) * len(KS) * len(TOPICS) * QUESTIONS * 3
    assert {"seed", "kl", "n_answers"} <= set(tidy.columns) and (tidy["n_answers"] == SAMPLES).all()
    answers = pd.read_json(study / "dpo-1-2.jsonl", lines=True)
    one = answers[answers["question_id"] == "health-2"]
    row = tidy[(tidy["algorithm"] == "dpo") & (tidy["seed"] == 1) & (tidy["k"] == 2)
               & (tidy["question_id"] == "health-2") & (tidy["stance"] == "support")]
    assert row["kl"].item() == pytest.approx((one["logp"] - one["logp_start"]).mean())
    assert row["p"].item() == pytest.approx(one["p_support"].mean())


def test_distributions_pool_the_seeds_per_snapshot(study):
    dist = pd.read_parquet(study / "d.parquet")
    dist["pref_data"] = dist["pref_data"].fillna("")
    assert len(dist) == len(RUNS) * len(KS) * (len(TOPICS) + 1) * 3
    assert {"share", "ci_low", "ci_high", "n_questions", "n_seeds", "ci_over"} <= set(dist.columns)
    assert (dist["n_seeds"] == 3).all() and (dist["ci_over"] == "seeds x questions, 3 seeds").all()
    assert dist.groupby(["algorithm", "k", "topic"])["share"].sum().between(0.999, 1.001).all()
    assert ((dist["ci_low"] <= dist["share"]) & (dist["share"] <= dist["ci_high"])).all()
    # PPO's seeds reach snapshot 1 at steps 10, 10 and 11 of 30, 31 and 32: one row, mean fraction
    ppo = dist[(dist["algorithm"] == "ppo") & (dist["k"] == 1) & (dist["topic"] == "all")
               & (dist["stance"] == "support")]
    assert len(ppo) == 1
    assert ppo["fraction"].item() == pytest.approx(np.mean([10 / 30, 10 / 31, 11 / 32]))


def test_distributions_by_seed_hold_each_seeds_share(study):
    pooled, seeds = pd.read_parquet(study / "d.parquet"), pd.read_parquet(study / "ds.parquet")
    assert len(seeds) == len(pooled) * len(SEEDS)
    key = ["algorithm", "k", "topic", "stance"]
    mean_of_seeds = seeds.groupby(key)["share"].mean()
    assert np.allclose(mean_of_seeds.to_numpy(), pooled.set_index(key)["share"].loc[mean_of_seeds.index].to_numpy())


def test_drift_table_has_one_row_per_run_topic_and_stance(study):
    table = pd.read_csv(study / "drift.csv", keep_default_na=False)
    assert len(table) == len(RUNS) * (len(TOPICS) + 1) * 3
    for column in ("magnitude", "magnitude_low", "magnitude_high", "p_value", "n_seeds", "ci_over", "seed_min",
                   "seed_max", "seeds_agree", "drift_time", "drift_time_low", "drift_time_high", "drift_time_note",
                   "kl_end", "kl_end_low", "kl_end_high", "drift_per_nat", "drift_per_nat_low", "drift_per_nat_high"):
        assert column in table, column
    assert ((table.magnitude_low <= table.magnitude) & (table.magnitude <= table.magnitude_high)).all()
    eta = pd.to_numeric(table["drift_time"], errors="coerce")
    assert eta.dropna().between(0, 1).all()
    # a drift time, or a note saying why there is none
    assert ((eta.notna()) == (table["drift_time_note"] == "")).all()
    assert (table.loc[eta.isna(), "drift_time_note"] == "no significant change from the start").all()


def test_drift_finds_the_planted_change_and_not_the_absent_one(study):
    table = pd.read_csv(study / "drift.csv", keep_default_na=False).set_index(["algorithm", "topic", "stance"])
    dpo, sft = table.loc[("dpo", "all", "support")], table.loc[("sft", "all", "support")]
    assert dpo["magnitude"] == pytest.approx(0.3, abs=0.03) and dpo["p_value"] < 0.01 and dpo["seeds_agree"]
    assert dpo["seed_min"] > 0.2 and dpo["seed_max"] < 0.4
    assert sft["p_value"] > 0.05 and sft["drift_time_note"] != ""
    # KL of the last snapshot: 0.1 * 3 * (1 + rise) nats by construction
    assert dpo["kl_end"] == pytest.approx(0.39, abs=0.01) and sft["kl_end"] == pytest.approx(0.3, abs=0.01)
    assert dpo["drift_per_nat"] == pytest.approx(dpo["magnitude"] / dpo["kl_end"], rel=1e-3)  # 4 decimals
    assert dpo["drift_per_nat_low"] < dpo["drift_per_nat"] < dpo["drift_per_nat_high"]


def test_summary_marks_only_significant_cells(study):
    summary = pd.read_csv(study / "summary.csv", keep_default_na=False).set_index("algorithm")
    assert len(summary) == len(RUNS)
    assert summary.loc["dpo", "M_support"].endswith("*") and not summary.loc["sft", "M_support"].endswith("*")
    assert summary.loc["sft", "eta_support"] == "none (no significant change)"
    assert float(summary.loc["dpo", "q_support"]) < 0.05 and float(summary.loc["sft", "q_support"]) > 0.05
    assert (summary["ci_over"] == "seeds x questions, 3 seeds").all()


def test_drift_by_seed_has_each_seeds_magnitude(study):
    by_seed = pd.read_csv(study / "by_seed.csv", keep_default_na=False)
    assert len(by_seed) == len(RUNS) * (len(TOPICS) + 1) * 3 * len(SEEDS)
    table = pd.read_csv(study / "drift.csv", keep_default_na=False)
    spread = by_seed.groupby(["algorithm", "topic", "stance"])["magnitude"].agg(["min", "max", "mean"])
    merged = table.set_index(["algorithm", "topic", "stance"]).join(spread)
    assert np.allclose(merged["seed_min"], merged["min"], atol=1e-4)
    assert np.allclose(merged["seed_max"], merged["max"], atol=1e-4)
    assert np.allclose(merged["magnitude"], merged["mean"], atol=1e-4)  # balanced: mean of the seeds' M


def test_drift_by_snapshot_starts_at_zero_and_ends_at_the_magnitude(study):
    snap = pd.read_csv(study / "by_snapshot.csv")
    snap["pref_data"] = snap["pref_data"].fillna("")
    pooled, seeds = snap[snap["level"] == "pooled"], snap[snap["level"] == "seed"]
    assert len(pooled) == len(RUNS) * (len(TOPICS) + 1) * 3 * len(KS) and len(seeds) == len(pooled) * len(SEEDS)
    assert pooled["seed"].isna().all() and set(seeds["seed"]) == set(SEEDS)
    assert np.allclose(pooled.loc[pooled["k"] == 0, ["m", "m_low", "m_high"]], 0)
    end = pooled[(pooled["k"] == 3) & (pooled["topic"] == "all")].set_index(["algorithm", "stance"])
    table = pd.read_csv(study / "drift.csv", keep_default_na=False)
    table = table[table["topic"] == "all"].set_index(["algorithm", "stance"])
    assert np.allclose(end["m"], table.loc[end.index, "magnitude"], atol=1e-4)
    assert np.allclose(end["kl"], table.loc[end.index, "kl_end"], atol=1e-4)
    # KL grows along the run
    dpo = pooled[(pooled["algorithm"] == "dpo") & (pooled["topic"] == "all") & (pooled["stance"] == "support")]
    assert dpo.sort_values("k")["kl"].is_monotonic_increasing


def test_same_inputs_in_another_order_give_identical_files(tmp_path):
    for name, order in (("a", 1), ("b", -1)):
        folder = tmp_path / name
        folder.mkdir()
        run_cli(folder, write_study(folder)[::order])
    for table in ("drift.csv", "summary.csv", "by_seed.csv", "by_snapshot.csv", "q.csv", "d.csv", "ds.csv"):
        assert (tmp_path / "a" / table).read_bytes() == (tmp_path / "b" / table).read_bytes(), table


def test_without_log_probabilities_kl_is_missing_and_the_old_flags_still_work(tmp_path):
    run_cli(tmp_path, write_study(tmp_path, logp=False), extra=False)
    table = pd.read_csv(tmp_path / "drift.csv")
    assert table[["kl_end", "drift_per_nat", "drift_per_nat_low"]].isna().all().all()
    assert not (tmp_path / "by_seed.csv").exists() and not (tmp_path / "ds.parquet").exists()


def test_one_seed_gives_intervals_over_questions_only(tmp_path):
    run_cli(tmp_path, write_study(tmp_path, seeds=(0,)))
    table = pd.read_csv(tmp_path / "drift.csv", keep_default_na=False)
    assert (table["ci_over"] == "questions only, 1 seed").all() and (table["n_seeds"] == 1).all()
    assert (table["seeds_agree"]).all()


def test_a_seed_missing_a_question_is_an_error_naming_the_run(tmp_path):
    paths = write_study(tmp_path)
    broken = tmp_path / "dpo-2-3.jsonl"
    rows = [json.loads(line) for line in broken.read_text().splitlines()]
    broken.write_text("".join(json.dumps(r) + "\n" for r in rows if r["question_id"] != "health-1"))
    with pytest.raises(InputError, match="'algorithm': 'dpo'.*every question"):
        run_cli(tmp_path, paths)
