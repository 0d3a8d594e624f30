"""`valuedrift plan`: job counts from the real DAG, work and disk estimates that match what the
workflow builds, the cost table of the paper-scale config, and its GPU-hours on a named GPU."""

import argparse
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from valuedrift.config import merge
from valuedrift.gpus import GPUS
from valuedrift.plan import (MFU, Stage, count_parameters, decoding, duration, estimate, gpu_hours, lora_parameters,
                             mfu_setting, miniature_config, phase_work, sampling_batch)

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
    seeds = len(c["grid"]["seeds"])  # every seed a whole replicate
    runs = seeds * (1 + len(c["grid"]["algorithms"]) * len(c["grid"]["preference_datasets"]))  # SFT + preference
    snapshots = len(c["snapshots_per_phase"]) + 1  # the fractions, and the start
    answers = 11 * c["world"]["eval_questions_per_topic"] * c["behaviour"]["samples_per_question"]
    assert plan.stages["generate"].tokens == runs * snapshots * answers * c["behaviour"]["max_new_tokens"]
    texts = 2 * sum(s["miniature"]["size"] for s in c["probe_pairs"].values()) * snapshots  # every probe set
    assert plan.stages["hidden states"].tokens == runs * texts * c["representation"]["hidden"]["max_length"]
    reward_models = seeds * len(c["grid"]["preference_datasets"])  # PPO and GRPO share one per seed and set
    assert plan.snapshots == (runs + reward_models) * snapshots
    n = count_parameters(miniature_config(c["models"]["tiny"]["miniature"]))
    assert plan.disk_bytes == plan.snapshots * n * 4  # float32 snapshots
    assert plan.checkpoint_bytes == n * 4 * 3  # fp32 weights and AdamW's two moments
    half = estimate(merge(c, {"storage": {"snapshot_dtype": "bfloat16"}}))
    assert half.disk_bytes == plan.disk_bytes / 2


def run_plan(root, *args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "valuedrift", "plan", *args], cwd=cwd or root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_plan_prints_the_cost_table_of_the_paper_scale_study(root):
    out = run_plan(root, "config.yaml", "workflow/experiments/value-drifts.yaml")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    total = next(line for line in lines if line.startswith("total")).split()
    assert total[1] == "478"  # the jobs of the dry run the workflow's own test checks
    rows = {cells[0]: cells for cells in map(str.split, lines) if len(cells) > 1 and cells[1].isdigit()}
    assert rows["generate"][1] == rows["judge"][1] == "104"  # one job each per run
    assert "judge API requests" in out.stdout and "snapshots:" in out.stdout and "device time at the throughput" in out.stdout
    assert "(measured: the benchmarks' costs file benchmarks/costs/cpu-2core.json)" in out.stdout
    assert "GPU-h" not in out.stdout  # no estimate unless a GPU is named
    assert "8B parameters read from its name" in out.stdout
    # the 8B models' ZeRO-3 checkpoints: 16-bit weights, fp32 master weights and moments
    assert "resume checkpoints: up to 112.0 GB per training job" in out.stdout


def test_plan_without_a_costs_file_says_how_to_make_one(root, tmp_path):
    out = run_plan(root, "config.yaml", "--costs", str(tmp_path / "none.json"))
    assert out.returncode != 0 and "--save-costs" in out.stderr


# ---- GPU-hours on a named GPU ------------------------------------------------------------------

def test_gpu_hours_are_flops_at_mfu_of_the_peak_and_decoding_at_the_bandwidth_roofline():
    h100 = GPUS["H100"]
    n, tokens = 1e9, 1e6
    sampled = decoding(tokens, n, batch=16, dtype="bfloat16", kv=0, new_tokens=256)
    assert sampled.flops == 2 * n * tokens
    assert sampled.bytes == tokens / 16 * n * 2  # the bf16 weights once per step of 16 tokens
    stage = Stage("preference", "train", flops=3.6e18 + sampled.flops, decoding=[sampled])
    train_s = 3.6e18 / (989e12 * 0.4)
    memory_s = tokens / 16 * 2e9 / 3.35e12  # 37 s, above the 4 s its FLOPs take at MFU 0.5
    assert gpu_hours(stage, h100, MFU) == pytest.approx((train_s + memory_s) / 3600)
    # at 1024 sequences a step the weights take 2.3 s to read: the FLOPs bound it instead
    wide = decoding(tokens, n, batch=1024, dtype="bfloat16", kv=0, new_tokens=256)
    stage = Stage("generate", "generate", flops=wide.flops, decoding=[wide])
    assert gpu_hours(stage, h100, MFU) == pytest.approx(2 * n * tokens / (989e12 * 0.5) / 3600)
    assert gpu_hours(stage, GPUS["A100"], {"train": 0.4, "forward": 0.25}) == pytest.approx(
        2 * n * tokens / (312e12 * 0.25) / 3600)


def test_decoding_reads_each_sequences_kv_cache_half_its_new_tokens_long_on_average():
    d = decoding(1000, 1e6, batch=10, dtype="float32", kv=128, new_tokens=100)
    assert d.bytes == (1000 / 10 * 1e6 + 1000 * 128 * 100 / 2) * 4


def test_sampling_batch_is_what_trl_decodes_at_once_on_one_gpu():
    assert sampling_batch("ppo", {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 4}, 8)[0] == 16
    assert sampling_batch("ppo", {"per_device_train_batch_size": 32, "gradient_accumulation_steps": 4}, 1)[0] == 64
    assert sampling_batch("grpo", {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 2}, 2)[0] == 16
    assert sampling_batch("grpo", {"per_device_train_batch_size": 8, "steps_per_generation": 4}, 2)[0] == 32
    assert sampling_batch("rloo", {"generation_batch_size": 64}, 2)[0] == 32


def test_estimate_decodes_answers_and_online_samples_with_their_kv_cache(default_config):
    c = default_config
    plan = estimate(c)
    m, b = c["models"]["tiny"]["miniature"], c["behaviour"]
    n = count_parameters(miniature_config(m))
    kv = 2 * m["num_layers"] * m["hidden_size"]  # a key and a value per layer, every head
    batch = min(b["batch_size"], 11 * c["world"]["eval_questions_per_topic"] * b["samples_per_question"])
    generate = plan.stages["generate"]
    assert sum(d.flops for d in generate.decoding) == pytest.approx(generate.flops)
    tokens = generate.tokens / len(generate.decoding)  # one entry per run, all of the same model
    for d in generate.decoding:  # auto is bf16 on a GPU
        assert d.bytes == pytest.approx((tokens / batch * n + tokens * kv * b["max_new_tokens"] / 2) * 2)
    online = [a for a in c["grid"]["algorithms"] if a in ("ppo", "grpo", "rloo")]
    assert len(plan.stages["preference"].decoding) == len(online) * len(c["grid"]["preference_datasets"]) * len(c["grid"]["seeds"])
    assert not plan.stages["SFT"].decoding and not plan.no_kv


def test_gpu_hours_of_a_training_job_do_not_shrink_with_its_gpus(default_config):
    """GPU-hours are the work over one GPU's rate: more GPUs per job, the same GPU-hours."""
    c = merge(default_config, {"grid": {"algorithms": ["dpo", "ppo"]}})
    hours = [sum(gpu_hours(s, GPUS["H100"], MFU) for s in estimate(merge(c, {"resources": {"train": {"gpu": g}}}))
                 .stages.values()) for g in (1, 8)]
    assert hours[0] == pytest.approx(hours[1]) and hours[0] > 0


def test_mfu_settings_name_an_operation_or_set_all():
    assert mfu_setting("train=0.3") == {"train": 0.3}
    assert mfu_setting("0.3") == {"train": 0.3, "forward": 0.3}
    for bad in ("decode=0.3", "train=1.5", "train=0", "fast"):
        with pytest.raises(argparse.ArgumentTypeError):
            mfu_setting(bad)


def time_cells(line: str) -> list[str]:
    return re.findall(r"([\d,.]+ (?:h|min|s))(?=\s|$)", line)


def test_plan_on_a_named_gpu_prints_its_gpu_hours_beside_the_measured_device_time(root):
    out = run_plan(root, "config.yaml", "workflow/experiments/value-drifts.yaml", "--gpu", "H100")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # the legend is wrapped
    assert "H100 GPU-h: estimated, not measured, from vendor peak figures of the H100 SXM" in text
    assert "MFU 0.4 (training) and 0.5 (forward passes; --mfu) of 989 TFLOP/s (dense BF16)" in text
    assert "at the bandwidth roofline" in text and "at 3.35 TB/s" in text
    assert "(measured: the benchmarks' costs file benchmarks/costs/cpu-2core.json)" in text
    assert "generate: 256 sequences per step on one GPU (behaviour.batch_size)" in text
    assert "ppo sampling: 16 sequences per GPU" in text
    lines = out.stdout.splitlines()
    assert next(line for line in lines if line.startswith("stage")).endswith("device time    H100 GPU-h")
    total = time_cells(next(line for line in lines if line.startswith("total")))
    assert len(total) == 2  # measured, then estimated
    c = {}
    for path in ("config.yaml", "workflow/experiments/value-drifts.yaml"):
        c = merge(c, yaml.safe_load((root / path).read_text()))
    expected = sum(gpu_hours(stage, GPUS["H100"], MFU) for stage in estimate(c).stages.values())
    assert total[1] == duration(expected)


def test_plan_refuses_an_unknown_gpu_and_names_the_known_ones(root):
    out = run_plan(root, "config.yaml", "--gpu", "V100")
    assert out.returncode != 0
    assert "V100" in out.stderr and all(name in out.stderr for name in ("H100", "H200", "A100"))


def test_plan_prices_the_internals_studys_dictionaries(root):
    """Every run of the internals study gets an SAE and a crosscoder job: 3 models x 6 algorithms."""
    out = run_plan(root, "config.yaml", "workflow/experiments/alignment-internals.yaml")
    assert out.returncode == 0, out.stderr
    rows = {cells[0]: cells for cells in map(str.split, out.stdout.splitlines()) if len(cells) > 1 and cells[1].isdigit()}
    assert rows["dictionaries"][1] == rows["preference"][1] == "18"
    assert "dictionaries of llama32_3b_instruct: training FLOPs left out" in out.stdout  # offline: no config


def test_plan_runs_from_a_study_folder_outside_the_workflow(root, tmp_path):
    """Found by the internals rehearsal: `valuedrift plan` in a study's own folder (as `snakemake
    --directory` runs it) refused the experiment's `deepspeed: workflow/deepspeed/zero2.json`,
    which the workflow itself finds beside its Snakefile."""
    out = run_plan(root, str(root / "config.yaml"), str(root / "workflow/experiments/alignment-internals.yaml"),
                   "--snakefile", str(root / "Snakefile"), "--costs", str(root / "benchmarks/costs/cpu-2core.json"),
                   cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert next(line for line in out.stdout.splitlines() if line.startswith("total")).split()[1] == "117"  # as from the repository
