"""`valuedrift plan`: job counts from the real DAG, work and disk estimates that match what the
workflow builds, and the cost table of the paper-scale config."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from valuedrift.config import merge
from valuedrift.plan import count_parameters, estimate, lora_parameters, miniature_config, phase_work

from conftest import TINY_MODEL


@pytest.fixture(scope="module")
def default_config(root):
    return yaml.safe_load((root / "config.yaml").read_text())


def test_parameter_count_of_a_miniature_model_matches_the_model_built_from_it(tiny):
    from transformers import AutoModelForCausalLM

    built = AutoModelForCausalLM.from_pretrained(tiny / "base")
    spec = {**json.loads(TINY_MODEL), "vocab_size": built.config.vocab_size}
    assert count_parameters(miniature_config(spec)) == sum(p.numel() for p in built.parameters())


def test_lora_estimate_is_the_adapter_peft_builds(tiny):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    built = AutoModelForCausalLM.from_pretrained(tiny / "base")
    spec = {"miniature": {**json.loads(TINY_MODEL), "vocab_size": built.config.vocab_size}}
    lora = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}
    adapter = get_peft_model(built, LoraConfig(**lora))
    trainable = sum(p.numel() for p in adapter.parameters() if p.requires_grad)
    assert lora_parameters(0.0, spec, lora, []) == trainable


def test_offline_phase_work_counts_both_sides_of_each_pair_and_the_reference_pass():
    tokens, flops = phase_work("dpo", {"num_train_epochs": 2, "max_length": 100}, rows=50, n=1e6, gpus=1, reward=False)
    assert tokens == 50 * 2 * 2 * 100
    assert flops == tokens * 1e6 * (6 + 2)
    tokens, _ = phase_work("grpo", {"max_steps": 10, "per_device_train_batch_size": 16, "max_completion_length": 64},
                           rows=800, n=1e6, gpus=2, reward=True)
    assert tokens == 10 * 16 * 2 * 64  # a fixed step budget, on every GPU


def test_default_config_estimate_counts_every_probe_and_snapshot(default_config):
    plan = estimate(default_config)
    c = default_config
    runs = 1 + len(c["grid"]["algorithms"]) * len(c["grid"]["preference_datasets"])  # SFT + preference runs
    snapshots = c["snapshots_per_phase"] + 1
    answers = 11 * c["world"]["eval_questions_per_topic"] * c["behaviour"]["samples_per_question"]
    assert plan.stages["generate"].tokens == runs * snapshots * answers * c["behaviour"]["max_new_tokens"]
    texts = 2 * c["probe_pairs"]["miniature"]["size"] * snapshots
    assert plan.stages["hidden states"].tokens == runs * texts * c["representation"]["hidden"]["max_length"]
    reward_models = len(c["grid"]["preference_datasets"])  # PPO and GRPO share one per preference set
    assert plan.snapshots == (runs + reward_models) * snapshots
    n = count_parameters(miniature_config(c["models"]["tiny"]["miniature"]))
    assert plan.disk_bytes == plan.snapshots * n * 4  # float32 snapshots
    assert plan.checkpoint_bytes == n * 4 * 3  # fp32 weights and AdamW's two moments
    half = estimate(merge(c, {"storage": {"snapshot_dtype": "bfloat16"}}))
    assert half.disk_bytes == plan.disk_bytes / 2


def run_plan(root, *args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "valuedrift", "plan", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_plan_prints_the_cost_table_of_the_paper_scale_study(root):
    out = run_plan(root, "config.yaml", "workflow/experiments/value-drifts.yaml")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    total = next(line for line in lines if line.startswith("total")).split()
    assert total[1] == "2555"  # the jobs of the dry run the workflow's own test checks
    rows = {cells[0]: cells for cells in map(str.split, lines) if len(cells) > 1 and cells[1].isdigit()}
    assert rows["generate"][1] == rows["judge"][1] == "1144"
    assert "judge API requests" in out.stdout and "snapshots:" in out.stdout and "device time at the throughput" in out.stdout
    assert "8B parameters read from its name" in out.stdout
    # the 8B models' ZeRO-3 checkpoints: 16-bit weights, fp32 master weights and moments
    assert "resume checkpoints: up to 112.0 GB per training job" in out.stdout


def test_plan_without_a_costs_file_says_how_to_make_one(root, tmp_path):
    out = run_plan(root, "config.yaml", "--costs", str(tmp_path / "none.json"))
    assert out.returncode != 0 and "--save-costs" in out.stderr
