"""Config validation: every mistake stops the run with a message naming the key."""

import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from valuedrift.config import ConfigError, validate_config

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())


def broken(edit):
    config = copy.deepcopy(DEFAULT)
    edit(config)
    return config


def problem(config) -> str:
    with pytest.raises(ConfigError) as e:
        validate_config(config)
    return str(e.value)


def test_default_config_is_valid():
    validate_config(copy.deepcopy(DEFAULT))


def test_shipped_configs_are_valid():
    from valuedrift.config import merge

    for path in [ROOT / "tests" / "config-ci.yaml", *sorted((ROOT / "workflow" / "experiments").glob("*.yaml"))]:
        validate_config(merge(DEFAULT, yaml.safe_load(path.read_text())))


def test_unknown_key_is_named():
    msg = problem(broken(lambda c: c["behaviour"].update(temprature=0.7)))
    assert "behaviour" in msg and "'temprature'" in msg and "temperature" in msg


def test_wrong_type_is_named():
    msg = problem(broken(lambda c: c["world"].update(eval_questions_per_topic="five")))
    assert "world.eval_questions_per_topic" in msg and "'five'" in msg


def test_impossible_values_are_named():
    assert "behaviour.temperature" in problem(broken(lambda c: c["behaviour"].update(temperature=0)))
    assert "snapshots_per_phase" in problem(broken(lambda c: c.update(snapshots_per_phase=0)))


def test_mixture_must_sum_to_one():
    msg = problem(broken(lambda c: c["sft_datasets"]["wildchat_like"]["miniature"]["mixture"].update(neutral=0.9)))
    assert "sft_datasets.wildchat_like.miniature.mixture" in msg and "sum to 1" in msg


def test_grid_names_must_be_defined():
    msg = problem(broken(lambda c: c["grid"]["sft_datasets"].append("ultrachat")))
    assert "grid.sft_datasets" in msg and "'ultrachat'" in msg


def test_value_gap_needs_two_stances():
    msg = problem(broken(lambda c: c["preference_datasets"]["support_chosen"]["miniature"].update(rejected="support")))
    assert "support_chosen" in msg and "different stances" in msg


def test_a_model_needs_exactly_one_source():
    msg = problem(broken(lambda c: c["models"]["tiny"].update(path="Qwen/Qwen3-4B-Base")))
    assert "models.tiny" in msg and "exactly one" in msg


def test_snakemake_refuses_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("behaviour: {samples_per_question: -1}\n")
    out = subprocess.run(["snakemake", "-n", "--configfile", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0
    assert "behaviour.samples_per_question" in out.stdout + out.stderr


def test_check_config_command(tmp_path):
    ok = subprocess.run(["valuedrift", "check-config", str(ROOT / "config.yaml")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: -3\n")
    out = subprocess.run(["valuedrift", "check-config", str(ROOT / "config.yaml"), str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "config key seed" in out.stderr


def test_filter_can_only_narrow_the_grid():
    msg = problem(broken(lambda c: c["filter"].update(algorithms=["rloo"])))
    assert "filter.algorithms" in msg and "'rloo'" in msg


def test_judge_reward_needs_value_gap_sets():
    msg = problem(broken(lambda c: c.update(online_reward="judge")))
    assert "online_reward" in msg and "'style_only'" in msg


def dry_run(*args):
    out = subprocess.run(["snakemake", "-n", "--directory", "/tmp/valuedrift-dry-run", "--snakefile",
                          str(ROOT / "Snakefile"), "--configfile", str(ROOT / "config.yaml"), *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_dry_run_shows_every_stage():
    out = dry_run()
    for rule in ("prepare_pretrain_corpus", "prepare_sft_data", "prepare_preference_data", "prepare_eval_prompts",
                 "prepare_judge_data", "build_base_model", "train_sft", "train_reward_model", "train_preference",
                 "train_judge", "generate", "judge", "aggregate", "drift", "plot", "judge_pairs", "value_gap",
                 "judge_labelled", "judge_report"):
        assert f"rule {rule}:" in out, rule
    for algorithm in ("ppo", "dpo", "simpo", "orpo", "kto", "grpo"):
        assert f"sft-wildchat_like/{algorithm}-support_chosen/snapshots/4" in out, algorithm


def test_filter_runs_part_of_the_grid():
    out = dry_run("--config", "filter={algorithms: [kto], preference_datasets: [style_only]}")
    assert "kto-style_only" in out
    assert "dpo-" not in out and "kto-support_chosen" not in out and "train_reward_model" not in out


def test_lint_reports_nothing():
    out = subprocess.run(["snakemake", "--lint", "--directory", "/tmp/valuedrift-dry-run", "--snakefile",
                          str(ROOT / "Snakefile"), "--configfile", str(ROOT / "config.yaml")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_cluster_dry_run_shows_gpus_memory_and_time(root):
    """A dry run of the shipped cluster experiment through the SLURM profile: every heavy job asks
    for the GPUs, memory and time its kind declares, and training launches with DeepSpeed."""
    # from the project folder, as a user runs it: the experiment's DeepSpeed path is relative
    out = subprocess.run(["snakemake", "-n", "-p", "--profile", "slurm", "--configfile", "config.yaml",
                          "workflow/experiments/miniature-cluster.yaml"], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    out = out.stdout
    blocks = {}
    for block in out.split("\nrule ")[1:]:
        name, _, body = block.partition(":")
        resources = next((line for line in body.splitlines() if line.strip().startswith("resources:")), "")
        blocks.setdefault(name, set()).add(resources)
    for rule, (gpu, mem, runtime) in {"train_sft": (2, 64000, 120), "train_preference": (2, 64000, 120),
                                      "train_reward_model": (2, 64000, 120), "generate": (1, 32000, 30)}.items():
        for line in blocks[rule]:
            assert f"gpu={gpu}" in line and f"mem_mb={mem}," in line and f"runtime={runtime}" in line, (rule, line)
    assert "accelerate launch --num_processes 2 --use_deepspeed --deepspeed_config_file workflow/deepspeed/zero2.json" in out


def test_a_hub_loader_must_give_the_sets_kind_of_rows():
    msg = problem(broken(lambda c: c["sft_datasets"].update(
        uf={"hub": {"loader": "ultrafeedback", "path": "HuggingFaceH4/ultrafeedback_binarized"}})))
    assert "sft_datasets.uf.hub.loader" in msg and "preference rows" in msg


def test_a_dataset_needs_exactly_one_source():
    msg = problem(broken(lambda c: c["preference_datasets"]["style_only"].update(
        hub={"loader": "hh_rlhf", "path": "Anthropic/hh-rlhf"})))
    assert "preference_datasets.style_only" in msg and "exactly one of" in msg


def test_judges_must_be_defined():
    assert "judge.name" in problem(broken(lambda c: c["judge"].update(name="gpt4o")))
    msg = problem(broken(lambda c: c["judge"].update(compare=["stance_classifier", "gpt4o"])))
    assert "judge.compare" in msg and "'gpt4o'" in msg
    msg = problem(broken(lambda c: c["judges"].update(gpt4o={"kind": "openai_api"})))
    assert "judges.gpt4o" in msg and "needs `model`" in msg


def test_synthetic_sets_need_the_builder():
    msg = problem(broken(lambda c: c["preference_datasets"].update(gap={"synthetic": {"chosen": "support",
                                                                                      "rejected": "oppose"}})))
    assert "value_gap_builder" in msg and "gap" in msg


def test_real_study_dry_run_builds_the_whole_dag(root):
    """The Value Drifts grid: 4 models x 2 SFT sets x 3 algorithms x 4 preference sets, V-PRISM,
    synthetic value-gap pairs, diagnostics; nothing is downloaded by a dry run."""
    out = subprocess.run(["snakemake", "-n", "-F", "--configfile", "config.yaml", "workflow/experiments/value-drifts.yaml"],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for rule in ("prepare_prism_prompts", "build_vprism", "build_value_gap", "judge_pairs", "judge_report"):
        assert f"rule {rule}:" in out.stdout, rule
    assert "prepare_eval_prompts" not in out.stdout and "build_base_model" not in out.stdout
    # 8 SFT runs, 96 preference runs, 11 snapshots each: every one generated and judged
    assert "generate                    1144" in out.stdout and "train_preference              96" in out.stdout


def test_judge_reward_needs_a_trained_judge():
    def edit(c):
        c.update(online_reward="judge")
        c["grid"]["preference_datasets"] = ["support_chosen"]
        c["judges"]["api"] = {"kind": "openai_api", "model": "gpt-4o"}
        c["judge"]["name"] = "api"
    msg = problem(broken(edit))
    assert "online_reward" in msg and "openai_api" in msg


def test_internals_study_dry_run_skips_sft_and_probes_every_run(root):
    out = subprocess.run(["snakemake", "-n", "-F", "--configfile", "config.yaml",
                          "workflow/experiments/alignment-internals.yaml"], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # 3 instruct models x 6 algorithms on UltraFeedback, no SFT phase
    assert "skip_sft                       3" in out.stdout and "train_sft" not in out.stdout
    assert "probe_representations         18" in out.stdout and "train_preference              18" in out.stdout
