"""Training health: each run's curves from its trainer state, and whether its objective improved."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from valuedrift.analysis import training_health as th
from valuedrift.io import InputError

STATES = Path(__file__).parent / "fixtures" / "trainer_states"
TRAINED_FIXTURES = ("sft", "reward", "dpo", "ipo", "simpo", "orpo", "kto", "grpo", "rloo", "ppo")


def tags(method, seed=0, algorithm=None, pref_data="p", sft_data="s"):
    return {"model": "tiny", "seed": seed, "sft_data": sft_data, "algorithm": algorithm or method, "method": method,
            "pref_data": "" if method == "sft" else pref_data, "phase": "sft" if method == "sft" else "preference"}


def state(values, metric, max_steps=None):
    """A trainer state whose log holds `values` of `metric`, one per step, and the final summary
    entry the Trainer adds."""
    history = [{"step": i + 1, metric: v, "learning_rate": 1e-4} for i, v in enumerate(values)]
    history.append({"step": len(values), "train_loss": 0.5, "train_runtime": 1.0})
    return {"max_steps": max_steps or len(values), "log_history": history}


def verdict(method, values):
    table, summary = th.health_tables([state(values, th.METHODS[method].objective)], [tags(method)])
    return summary.iloc[0]


def test_the_command_answers_help_without_loading_heavy_libraries():
    import subprocess
    import sys

    code = ("import argparse, sys; from valuedrift.analysis import training_health as th; "
            "th.make_parser(argparse.ArgumentParser().add_subparsers()); "
            "print(sorted(m for m in ('torch', 'trl', 'pandas', 'numpy', 'scipy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_algorithm_has_an_objective():
    from valuedrift.training.trainers import ALGORITHMS

    assert set(ALGORITHMS) <= set(th.METHODS)
    for name, method in th.METHODS.items():
        assert method.direction in ("up", "down"), name
        assert method.objective in method.curves, name


@pytest.mark.parametrize("method", TRAINED_FIXTURES)
def test_each_objective_is_what_trl_logs_for_its_method(method):
    s = th.read_state(STATES / f"{method}.json")
    logged = set().union(*(e for e in s["log_history"]))
    assert th.METHODS[method].objective in logged
    assert len(th.curve_rows(s, tags(method))) > 0


def test_a_rising_curve_is_trained():
    rng = np.random.default_rng(0)
    row = verdict("dpo", np.linspace(0, 0.5, 40) + rng.normal(0, 0.1, 40))
    assert row["trained"]
    assert row["change"] > 0.3 and row["p_value"] < 0.05
    assert row["note"].startswith("rewards/margins rose")


def test_a_flat_noisy_curve_is_not_trained():
    rng = np.random.default_rng(1)
    row = verdict("ppo", -0.4 + rng.normal(0, 0.05, 40))  # objective/scores flat over 40 updates
    assert not row["trained"]
    assert "did not reliably rise" in row["note"]


def test_flat_curves_are_called_trained_about_as_often_as_alpha():
    rng = np.random.default_rng(2)
    calls = [th.judge(rng.normal(0, 1, 40), "up")["trained"] for _ in range(400)]
    assert np.mean(calls) < 2 * th.ALPHA


def test_a_falling_loss_trains_sft_and_a_rising_one_does_not():
    rng = np.random.default_rng(3)
    falling = 3 * np.exp(-np.arange(30) / 10) + 2 + rng.normal(0, 0.05, 30)
    assert verdict("sft", falling)["trained"]
    rising = verdict("sft", falling[::-1])
    assert not rising["trained"] and rising["change"] > 0


def test_a_log_too_short_to_tell_is_unknown():
    row = verdict("dpo", [0.0, 0.1, 0.2, 0.3, 0.4])
    assert pd.isna(row["trained"])
    assert "too few logged steps to tell" in row["note"]


def test_an_objective_missing_from_the_log_is_unknown():
    _, summary = th.health_tables([state([0.1] * 10, "loss")], [tags("grpo")])
    assert pd.isna(summary["trained"].iloc[0])
    assert "reward is not in the log history" in summary["note"].iloc[0]


def test_identical_values_are_not_a_change():
    # a learning rate too small to change a float32 weight logs the same margin at every step
    row = th.judge([0.0] * 16, "up")
    assert row["trained"] is False and row["p_value"] == 1.0
    # nor is a consistent shift at the level of float rounding, however small its p-value
    rng = np.random.default_rng(5)
    dust = 1.0 + rng.normal(0, 1e-9, 16) + np.repeat([0, 1e-8], 8)
    row = th.judge(dust, "up")
    assert row["trained"] is False and row["p_value"] < 0.05
    assert row["note"].startswith("changed by float rounding only")


def test_a_noiseless_step_up_is_trained():
    # accuracy over a batch can sit at one value, then jump and stay: no variance, a certain change
    row = th.judge([0.5] * 6 + [1.0] * 6, "up")
    assert row["trained"] is True and row["p_value"] == 0.0


def test_nan_margins_are_not_trained():
    """SimPO with answers truncated away (max_length 96 here) logs NaN at every step; its loss is 0."""
    s = th.read_state(STATES / "simpo_max_length_96.json")
    _, summary = th.health_tables([s], [tags("simpo")])
    assert not summary["trained"].iloc[0]
    assert "NaN" in summary["note"].iloc[0]


def test_curves_are_tidy_with_the_fraction_of_the_phase():
    s = state([0.1, 0.2, 0.3, 0.4], "rewards/margins", max_steps=8)
    s["log_history"].insert(2, {"step": 2, "rewards/margins": 0.25, "rewards/accuracies": 1.0})  # resumed: logged twice
    s["log_history"].append({"step": 4, "eval_loss": 0.3})
    rows = pd.DataFrame(th.curve_rows(s, tags("dpo")))
    margins = rows[rows["metric"] == "rewards/margins"].sort_values("step")
    assert margins["step"].tolist() == [1, 2, 3, 4]
    assert margins["fraction"].tolist() == [0.125, 0.25, 0.375, 0.5]
    assert margins["value"].tolist() == [0.1, 0.25, 0.3, 0.4]  # the later entry of a step counts
    assert set(rows["metric"]) == {"rewards/margins", "rewards/accuracies"}  # no learning_rate, eval_ or train_ keys
    assert set(th.TAG_KEYS) <= set(rows.columns)


@pytest.mark.parametrize("text, message", [
    ('[{"method": "dpo"}]', "lacks model, seed"),
    ("[]", "0 objects for 1 state files"),
    ('{"method": "dpo"}', "a JSON list of objects"),
    ("not json", "not JSON"),
])
def test_bad_tags_are_refused(text, message):
    with pytest.raises(InputError, match=message):
        th.parse_tags(text, 1)


def test_tags_name_a_known_method_and_no_run_twice():
    with pytest.raises(InputError, match="unknown method 'dpoo'"):
        th.parse_tags(json.dumps([tags("dpo", algorithm="dpo") | {"method": "dpoo"}]), 1)
    with pytest.raises(InputError, match="same tags"):
        th.parse_tags(json.dumps([tags("dpo"), tags("dpo")]), 2)


def test_command_writes_the_table_summary_and_figure(tmp_path):
    files = [STATES / f"{m}.json" for m in ("sft", "dpo", "ppo", "simpo_max_length_96")]
    runs = [tags("sft"), tags("dpo"), tags("ppo"), tags("simpo")]
    (tmp_path / "tags.json").write_text(json.dumps(runs))
    out = {k: tmp_path / f"{k}.{ext}" for k, ext in (("table", "csv"), ("summary", "csv"), ("figure", "png"))}
    args = th.make_parser().parse_args(["--states", *map(str, files), "--tags", f"@{tmp_path / 'tags.json'}",
                                        *(a for k, p in out.items() for a in (f"--{k}", str(p)))])
    th.main(args)
    table, summary = pd.read_csv(out["table"], keep_default_na=False), pd.read_csv(out["summary"])
    assert list(table.columns) == [*th.TAG_KEYS, "step", "fraction", "metric", "value"]
    assert list(summary.columns) == [*th.TAG_KEYS, "objective", "direction", "n_points", "window", "early", "late",
                                     "change", "p_value", "trained", "note"]
    assert summary.set_index("method")["objective"].to_dict() == {
        "sft": "loss", "dpo": "rewards/margins", "ppo": "objective/scores", "simpo": "rewards/margins"}
    assert summary.set_index("method")["trained"].to_dict() == {"sft": True, "dpo": True, "ppo": False, "simpo": False}
    assert {"objective/kl", "objective/rlhf_reward"} <= set(table.loc[table["method"] == "ppo", "metric"])
    assert out["figure"].read_bytes()[:4] == b"\x89PNG"


def test_the_figure_dashes_and_names_the_runs_that_did_not_train():
    rng = np.random.default_rng(4)
    runs = [tags("dpo", seed=0), tags("dpo", seed=1), tags("dpo", seed=2), tags("grpo")]
    states = [state(np.linspace(0, 0.5, 20) + rng.normal(0, 0.05, 20), "rewards/margins"),
              state(np.linspace(0, 0.5, 20) + rng.normal(0, 0.05, 20), "rewards/margins"),
              state(rng.normal(0, 0.05, 20), "rewards/margins"),
              state([0.2, 0.3, 0.4], "reward")]
    table, summary = th.health_tables(states, runs)
    assert summary["trained"].tolist()[:3] == [True, True, False]
    fig = th.plot_training_health(table, summary)
    dpo, grpo = [ax for ax in fig.axes if ax.get_visible()]
    assert dpo.get_title() == "DPO on p" and grpo.get_title() == "GRPO on p"
    assert "not trained: dpo, SFT s, seed 2" in " ".join(t.get_text() for t in dpo.texts)
    assert "seed 0" not in " ".join(t.get_text() for t in dpo.texts)
    assert "too few steps: grpo, SFT s, seed 0" in " ".join(t.get_text() for t in grpo.texts)
    styles = [line.get_linestyle() for line in dpo.get_lines() if len(line.get_xdata()) == 20]
    assert styles.count("--") == 1 and styles.count("-") == 2  # the flat seed dashed, the others solid
    assert any(line.get_marker() == "x" for line in dpo.get_lines())


def test_runs_of_two_models_are_told_apart_and_an_empty_log_is_named():
    """External runs: one model per run, and checkpoints may come without a logged curve."""
    rng = np.random.default_rng(5)
    runs = [tags("dpo"), {**tags("dpo"), "model": "other"}]
    states = [state(np.linspace(0, 0.5, 20) + rng.normal(0, 0.05, 20), "rewards/margins"), {"log_history": []}]
    table, summary = th.health_tables(states, runs)
    assert summary["trained"].tolist()[0] is True and pd.isna(summary["trained"].iloc[1])
    fig = th.plot_training_health(table, summary)
    (ax,) = [ax for ax in fig.axes if ax.get_visible()]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["other: dpo (SFT s)", "tiny: dpo (SFT s)"]
    assert "objective not logged: other, dpo, SFT s, seed 0" in " ".join(t.get_text() for t in ax.texts)
    assert len([line for line in ax.get_lines() if len(line.get_xdata()) == 51]) == 0  # no mean across models


def test_a_real_dpo_run_trains_and_one_that_cannot_move_does_not(tiny, tmp_path):
    """Two brief real DPO trainings on the tiny world: a learning rate that moves the margins, and
    one too small to change a float32 weight."""
    from valuedrift.cli import main as cli

    states = []
    for lr in (1e-3, 1e-12):
        run_dir = tmp_path / f"dpo-{lr}"
        settings = {"per_device_train_batch_size": 4, "num_train_epochs": 2, "beta": 0.1, "max_length": 96,
                    "learning_rate": lr, "logging_steps": 1}
        cli(["train", "--algorithm", "dpo", "--model", str(tiny / "base"), "--data", str(tiny / "pref.jsonl"),
             "--run-dir", str(run_dir), "--snapshots", "2", "--settings", json.dumps(settings)])
        states.append(th.read_state(run_dir / "trainer_state.json"))
    _, summary = th.health_tables(states, [tags("dpo", algorithm="dpo"), tags("dpo", algorithm="dpo_frozen")])
    assert summary["n_points"].tolist() == [16, 16]  # 32 pairs / 4 per step x 2 epochs, each step logged
    assert summary["trained"].tolist() == [True, False], summary["note"].tolist()
