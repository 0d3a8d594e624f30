"""`valuedrift plan`: what a config will cost, before it is submitted.

    valuedrift plan config.yaml workflow/experiments/value-drifts.yaml [--gpu H100]

Jobs per stage come from Snakemake's own dry run of the config. Work per stage is estimated from
the config: tokens processed (upper bounds: answers at max_new_tokens, texts at max_length) times
about 2·N floating-point operations per token for a forward pass and 6·N for a training step, for
a model of N parameters. Device time is that work over the throughput the benchmarks measured on
one device (`--costs`, a file written by `benchmarks/*.py --save-costs`): GPU hours when the costs
were measured on one GPU. Scaling by FLOPs holds for models big enough to keep the device busy;
models as small as the miniature one spend their time on overheads instead. Disk is the snapshots'
weights in their stored dtype, and the working space of the largest resume checkpoint.

With `--gpu` the plan also estimates GPU-hours on that GPU from its vendor peak figures: FLOPs at a
model-FLOPs utilisation (`--mfu`, stated in the output), and decoding (answers, and the sampling of
PPO, GRPO and RLOO) at the bandwidth roofline, since a decoding step reads every weight to write one
token per sequence of its batch. GPU-hours are work over one GPU's rate, whatever the GPUs per job.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import yaml

from valuedrift.gpus import GPU, GPUS

DEFAULT_COSTS = Path(__file__).resolve().parents[2] / "benchmarks" / "costs" / "cpu-2core.json"
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# TRL's defaults where a config leaves these out
TRL_DEFAULTS = {"num_train_epochs": 3, "max_length": 1024, "max_completion_length": 256, "num_generations": 8,
                "response_length": 53, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1}
JUDGE_PROMPT_TOKENS = 200  # the judge's instructions and the question around each answer
# Model-FLOPs utilisation the GPU estimate assumes. Dense 3-8B models trained with ZeRO and
# activation checkpointing reach about 35-45 % (MFU counts 6·N per token, so recomputation counts
# as lost utilisation); forward passes over long batched texts skip backward and optimizer and do better.
MFU = {"train": 0.4, "forward": 0.5}
# TRL's PPO decodes its rollout batch in chunks of this many sequences unless a config sets it
PPO_ROLLOUT_CHUNK = 64


@dataclass
class Decoding:
    """One run's sampling, as the bandwidth roofline needs it."""
    flops: float
    bytes: float              # read from GPU memory: the weights once per step, each sequence's KV cache


@dataclass
class Stage:
    name: str
    operation: str            # generate, forward or train: which measured throughput applies
    jobs: int = 0
    tokens: float = 0.0
    flops: float = 0.0
    requests: int = 0         # API calls (judging through an API costs no GPU time)
    decoding: list[Decoding] = field(default_factory=list)  # the part of `flops` spent sampling, per run


@dataclass
class Plan:
    stages: dict[str, Stage]
    disk_bytes: float = 0.0
    snapshots: int = 0
    checkpoint_bytes: float = 0.0  # the largest resume checkpoint one training job holds
    notes: list[str] = field(default_factory=list)
    decoding_notes: list[str] = field(default_factory=list)  # the GPU estimate's batch assumptions
    no_kv: list[str] = field(default_factory=list)           # models whose KV cache the estimate leaves out


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "plan", __doc__)
    parser.add_argument("configs", nargs="+", help="YAML config files, merged left to right like --configfile")
    parser.add_argument("--costs", default=str(DEFAULT_COSTS),
                        help="measured throughput (JSON from benchmarks/*.py --save-costs); default: %(default)s")
    parser.add_argument("--snakefile", default="Snakefile", help="the workflow whose dry run counts the jobs")
    parser.add_argument("--gpu", type=str.upper, choices=sorted(GPUS),
                        help="also estimate GPU-hours on this GPU from its vendor peak figures")
    parser.add_argument("--mfu", type=mfu_setting, action="append", default=[], metavar="[train=|forward=]X",
                        help="model-FLOPs utilisation of the GPU estimate, for training or forward passes (and "
                             "compute-bound decoding), or both without a name; default: "
                             + ", ".join(f"{k}={v}" for k, v in MFU.items()))
    return parser


def mfu_setting(value: str) -> dict[str, float]:
    """`train=0.3` sets one operation's MFU, a bare `0.3` every operation's."""
    name, _, number = value.rpartition("=")
    if name and name not in MFU:
        raise argparse.ArgumentTypeError(f"{name!r} is not one of {', '.join(MFU)}")
    try:
        mfu = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{number!r} is not a number") from None
    if not 0 < mfu <= 1:
        raise argparse.ArgumentTypeError(f"{mfu} is not a fraction in (0, 1]")
    return dict.fromkeys([name] if name else MFU, mfu)


# ---- sizes -------------------------------------------------------------------------------------

def parameter_count(name: str, spec: dict, notes: list[str]) -> float:
    """N of a model of `models`: exact for a miniature or a readable config, else from its name."""
    if "miniature" in spec:
        return count_parameters(miniature_config(spec["miniature"]))
    path = spec["path"]
    config = readable_config(path)
    if config is not None:
        return count_parameters(config)
    match = re.search(r"(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])", path)
    if not match:
        raise SystemExit(f"plan: cannot tell the size of model {name} ({path}): no readable config.json and no "
                         "'<N>B' in its name")
    notes.append(f"{name}: {match.group(1)}B parameters read from its name ({path}; its config was not readable here)")
    return float(match.group(1)) * 1e9


def miniature_config(m: dict):
    from transformers import Qwen3Config

    h = m["hidden_size"]
    return Qwen3Config(vocab_size=m["vocab_size"], hidden_size=h, intermediate_size=4 * h,
                       num_hidden_layers=m["num_layers"], num_attention_heads=m["num_heads"],
                       num_key_value_heads=m["num_heads"], head_dim=h // m["num_heads"], tie_word_embeddings=True)


def model_config(spec: dict):
    """The transformers config of a model of `models`; None where it is not readable here."""
    return miniature_config(spec["miniature"]) if "miniature" in spec else readable_config(spec["path"])


@functools.cache
def hub_reachable() -> bool:
    """One quick connection instead of the hub client's retries, which take minutes offline."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


@functools.cache  # the size, the adapters and the KV cache all ask
def readable_config(path: str):
    """The model's config from a folder, the local hub cache or the hub; None where none has it."""
    from transformers import AutoConfig

    sources = (True, False) if not Path(path).is_dir() and hub_reachable() else (True,)
    for local_only in sources:
        try:
            return AutoConfig.from_pretrained(path, local_files_only=local_only)
        except (OSError, ValueError):
            continue
    return None


def meta_model(config):
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def count_parameters(config) -> float:
    return float(sum(p.numel() for p in meta_model(config).parameters()))


def kv_values_per_token(spec: dict) -> int | None:
    """Numbers a model's KV cache holds per token (a key and a value per layer and KV head); None
    where its config is not readable here."""
    config = model_config(spec)
    if config is None:
        return None
    text = config.get_text_config()
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return 2 * text.num_hidden_layers * heads * head_dim


def lora_parameters(n: float, spec: dict, lora: dict, notes: list[str]) -> float:
    """Adapter size: r·(in + out) per targeted linear layer, exact from a readable config."""
    import torch

    config = model_config(spec)
    r, targets = lora.get("r", 8), lora.get("target_modules", "all-linear")
    if config is None:
        notes.append(f"LoRA adapters of {spec.get('path')}: about 0.6 % of the weights at r 16 (config not readable)")
        return n * 0.006 * r / 16
    total = 0
    for name, module in meta_model(config).named_modules():
        short = name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Linear) and short != "lm_head" and (targets == "all-linear" or short in targets):
            total += r * (module.in_features + module.out_features)
    return float(total)


def dataset_rows(kind: str, name: str, sets: dict, notes: list[str]) -> int | None:
    """Rows of an SFT or preference set (`sets`: its section of the config); a prepared file counts
    where the config leaves the size open, and a derived set has its source's."""
    spec = sets[name]
    if "derived" in spec:
        return dataset_rows(kind, spec["derived"]["from"], sets, notes)
    for source in ("miniature", "hub", "synthetic"):
        if spec.get(source, {}).get("size"):
            return int(spec[source]["size"])
    prepared = Path("results") / "data" / kind / f"{name}.jsonl"
    if prepared.is_file():
        with open(prepared, encoding="utf-8") as f:
            return sum(1 for _ in f)
    notes.append(f"{kind} set {name}: size not set and not prepared yet; its training is left out of the totals")
    return None


def eval_questions(config: dict) -> int:
    if config["eval_prompts"]["source"] == "vprism":
        v = config["eval_prompts"]["vprism"]
        return v["topics"] * v["per_topic"]
    return 11 * config["world"]["eval_questions_per_topic"]  # the miniature world's 11 topics


def probe_pairs(config: dict) -> int:
    """Pairs of every probe set together."""
    return sum(int(spec[spec["source"]].get("size") or 0) for spec in config["probe_pairs"].values())


# ---- work --------------------------------------------------------------------------------------

def trl(settings: dict, key: str):
    return settings.get(key, TRL_DEFAULTS.get(key))


def sequences(settings: dict, rows: int, per_row: int, gpus: int) -> float:
    """Sequences a training phase processes: a fixed max_steps budget, or epochs over the rows."""
    if settings.get("max_steps", -1) > 0:
        return (settings["max_steps"] * trl(settings, "per_device_train_batch_size")
                * trl(settings, "gradient_accumulation_steps") * max(gpus, 1))
    return rows * per_row * trl(settings, "num_train_epochs")


def phase_work(algorithm: str, settings: dict, rows: int, n: float, gpus: int, reward: bool) -> tuple[float, float]:
    """(tokens, FLOPs) of one training phase of a model of n parameters."""
    from valuedrift.training.trainers import ALGORITHMS

    algo = ALGORITHMS[algorithm]
    if algorithm == "ppo":  # sample, then policy and value steps, reference and reward forwards
        tokens = settings.get("total_episodes", rows) * trl(settings, "response_length")
        return tokens, tokens * n * (2 + 6 + 6 + 2 + 2)
    if algo.data == "prompt":  # GRPO, RLOO: sample groups, score, step
        tokens = sequences(settings, rows, trl(settings, "num_generations"), gpus) * trl(settings, "max_completion_length")
        return tokens, tokens * n * (2 + 6 + (2 if settings.get("beta", 0) else 0) + (2 if reward else 0))
    per_row = 1 if algorithm == "sft" else 2  # preference rows are a chosen and a rejected sequence
    tokens = sequences(settings, rows, per_row, gpus) * trl(settings, "max_length")
    return tokens, tokens * n * (6 + (2 if algo.reference_model else 0))


def decoding(tokens: float, n: float, batch: int, dtype: str, kv: int, new_tokens: int) -> Decoding:
    """Writing `tokens` with a model of n parameters, `batch` sequences per step on one GPU: each step
    reads the weights once for the whole batch, and each sequence its own KV cache of kv values per
    token, on average half its new tokens long (the prompt's cache is left out)."""
    steps = tokens / batch
    return Decoding(2 * n * tokens, (steps * n + tokens * kv * new_tokens / 2) * BYTES[dtype])


def sampling_batch(algorithm: str, settings: dict, gpus: int) -> tuple[int, str]:
    """Sequences one GPU decodes per step while an online algorithm samples with transformers'
    generate (TRL 1.x), and where that number comes from."""
    per_device = trl(settings, "per_device_train_batch_size")
    if algorithm == "ppo":  # its rollout batch, decoded in chunks
        rollout = per_device * trl(settings, "gradient_accumulation_steps")
        chunk = settings.get("local_rollout_forward_batch_size", PPO_ROLLOUT_CHUNK)
        return min(rollout, chunk), f"per_device_train_batch_size x gradient_accumulation_steps, at most {chunk}"
    if settings.get("generation_batch_size"):
        return settings["generation_batch_size"] // max(gpus, 1), "generation_batch_size over the GPUs"
    steps = settings.get("steps_per_generation") or trl(settings, "gradient_accumulation_steps")
    return per_device * steps, "per_device_train_batch_size x steps_per_generation"


def kv_cache(plan: Plan, config: dict, model: str) -> int:
    """KV values per token of `model`; 0, noted, where its config is not readable."""
    kv = kv_values_per_token(config["models"][model])
    if kv is None and model not in plan.no_kv:
        plan.no_kv.append(model)
    return kv or 0


def sampling(plan: Plan, config: dict, model: str, algorithm: str, settings: dict, tokens: float,
             n: float) -> Decoding:
    """The sampling of an online phase, whose counted tokens are all sampled ones."""
    batch, source = sampling_batch(algorithm, settings, train_gpus(config, model))
    plan.decoding_notes.append(f"{algorithm} sampling: {batch} sequences per GPU ({source})")
    new_tokens = trl(settings, "response_length" if algorithm == "ppo" else "max_completion_length")
    return decoding(tokens, n, batch, trained_dtype(config, model), kv_cache(plan, config, model), new_tokens)


def add(stage: Stage, tokens: float, flops: float) -> None:
    stage.tokens += tokens
    stage.flops += flops


def train_gpus(config: dict, model: str) -> int:
    return {**config["resources"]["train"], **config["models"][model].get("resources", {}).get("train", {})}["gpu"]


def trained_dtype(config: dict, model: str) -> str:
    """fp32 for a miniature model; a hub checkpoint's stored bf16, which transformers loads as stored."""
    return "float32" if "miniature" in config["models"][model] else "bfloat16"


def snapshot_bytes(config: dict, model: str, params: float) -> float:
    """auto stores snapshots as trained."""
    dtype = config["storage"]["snapshot_dtype"]
    return params * BYTES[trained_dtype(config, model) if dtype == "auto" else dtype]


def checkpoint_bytes(config: dict, model: str, trainable: float, lora: bool) -> float:
    """A resume checkpoint: the trained weights and AdamW's two moments. DeepSpeed writes 16-bit
    weights plus fp32 master weights and moments (2 + 12 bytes per parameter); the plain Trainer
    keeps all three in the training dtype, which is fp32 for LoRA adapters (peft makes them so)."""
    if config["deepspeed"]:
        return trainable * (2 + 12)
    return trainable * 3 * BYTES["float32" if lora else trained_dtype(config, model)]


def add_phase(plan: Plan, config: dict, run, n: float) -> None:
    """One training phase (an SFT, preference or reward-model `grid.Run`): its work and its snapshots."""
    from valuedrift import grid
    from valuedrift.training.trainers import ALGORITHMS

    model, sft_data, snapshots = run.model, run.sft_data, len(grid.snapshot_fractions(config)) + 1
    if run.phase == "sft" and sft_data in grid.skipped_sft(config):  # the start model once, linked K times
        plan.disk_bytes += snapshot_bytes(config, model, n)
        plan.snapshots += 1
        return
    algorithm, pref_data = grid.method(config, run.algorithm), run.pref_data
    if algorithm == "sft":
        stage, settings = plan.stages["SFT"], config["sft"]
        rows = dataset_rows("sft", sft_data, config["sft_datasets"], plan.notes)
    else:
        stage = plan.stages["reward models" if algorithm == "reward" else "preference"]
        settings = config["reward_model"] if algorithm == "reward" else grid.trainer_settings(config, run.algorithm)
        rows = dataset_rows("preference", pref_data, config["preference_datasets"], plan.notes)
    if rows is not None:
        tokens, flops = phase_work(algorithm, settings, rows, n, train_gpus(config, model), algorithm != "reward")
        add(stage, tokens, flops)
        if ALGORITHMS[algorithm].data in ("prompt", "prompt_ids"):  # online: it samples what it learns from
            stage.decoding.append(sampling(plan, config, model, algorithm, settings, tokens, n))
    lora = bool(config["lora"]) and algorithm not in ("sft", "reward") and ALGORITHMS[algorithm].lora
    params = lora_parameters(n, config["models"][model], config["lora"], plan.notes) if lora else n
    plan.disk_bytes += snapshots * snapshot_bytes(config, model, params)
    plan.snapshots += snapshots
    if ALGORITHMS[algorithm].resumable:  # PPO cannot resume, so it writes no checkpoint
        plan.checkpoint_bytes = max(plan.checkpoint_bytes, checkpoint_bytes(config, model, params, lora))


def probe_judges(config: dict) -> list[str]:
    """Every judge that labels every run's answers: the main one and those compared with it."""
    return list(dict.fromkeys([config["judge"]["name"], *(config["judge"].get("compare") or [])]))


def add_probes(plan: Plan, config: dict, model: str, n: float, judge_sizes: dict[str, float]) -> None:
    """The behaviour and representation probes of one run's snapshots."""
    from valuedrift import grid

    snapshots, behaviour = len(grid.snapshot_fractions(config)) + 1, config["behaviour"]
    answers = snapshots * eval_questions(config) * behaviour["samples_per_question"]
    add(plan.stages["generate"], answers * behaviour["max_new_tokens"], 2 * n * answers * behaviour["max_new_tokens"])
    add_answers(plan, config, model, n, answers * behaviour["max_new_tokens"])
    tokens = 2 * probe_pairs(config) * snapshots * config["representation"]["hidden"].get("max_length", 2048)
    add(plan.stages["hidden states"], tokens, 2 * n * tokens)
    for name in probe_judges(config):
        judge = config["judges"][name]
        if judge["kind"] == "openai_api":
            plan.stages["judge"].requests += answers
            if judge.get("mode") == "batch":
                plan.notes.append(f"judge {name}: Batch API (mode: batch), half the online price per request; "
                                  "one batch per run's judge job, answered within 24 h")
        elif judge["kind"] == "local_llm":
            tokens = answers * (behaviour["max_new_tokens"] + JUDGE_PROMPT_TOKENS)
            add(plan.stages["judge"], tokens, 2 * judge_sizes[name] * tokens)


def add_dictionaries(plan: Plan, config: dict, model: str, n: float) -> None:
    """A run's SAE and crosscoder: the start's and the end's hidden states of the probe pairs, and
    per probe set's peak layer (at most one layer per set) a TopK SAE (12·d·F FLOPs per token per
    epoch: encoder and decoder, forward and backward) and a crosscoder of two models (24·d·F)."""
    from valuedrift.config import dictionary_settings

    tokens = 2 * probe_pairs(config) * 2 * config["representation"]["hidden"].get("max_length", 2048)
    add(plan.stages["dictionaries"], tokens, 2 * n * tokens)
    spec = model_config(config["models"][model])
    if spec is None:
        plan.notes.append(f"dictionaries of {model}: training FLOPs left out (config not readable here)")
        return
    settings = dictionary_settings(config)
    d = spec.get_text_config().hidden_size
    features = settings.get("width", 4) * d
    trained = len(config["probe_pairs"]) * settings["max_tokens"] * settings.get("epochs", 4)
    plan.stages["dictionaries"].flops += (12 + 24) * d * features * trained


def add_answers(plan: Plan, config: dict, model: str, n: float, tokens: float) -> None:
    """The behaviour probe's decoding: one generate() call holds batch_size sequences, fewer where a
    snapshot has fewer answers to write."""
    behaviour = config["behaviour"]
    batch = min(behaviour["batch_size"], eval_questions(config) * behaviour["samples_per_question"])
    dtype = behaviour.get("dtype", "auto").replace("auto", "bfloat16")  # auto is bf16 on each GPU of GPUS
    plan.decoding_notes.append(f"generate: {batch} sequences per step on one GPU (behaviour.batch_size), "
                               f"weights in {dtype}")
    plan.stages["generate"].decoding.append(
        decoding(tokens, n, batch, dtype, kv_cache(plan, config, model), behaviour["max_new_tokens"]))


def with_external_models(config: dict) -> dict:
    """The config with each external run's model label as an entry of `models` whose path is a
    folder that has its config: the start, the adapters' base, or the first checkpoint."""
    from valuedrift import grid
    from valuedrift.training.external import checkpoint_folders

    models = dict(config["models"])
    for run in grid.external_runs(config):
        spec = config["external_runs"][run.external]
        first = next(iter(checkpoint_folders(spec)), None)
        adapter = first / "adapter_config.json" if first else None
        base = spec.get("base") or (json.loads(adapter.read_text())["base_model_name_or_path"]
                                    if adapter and adapter.is_file() else None)
        models.setdefault(run.model, {"path": str(spec.get("start") or base or first)})
    return {**config, "models": models}


def estimate(config: dict) -> Plan:
    from valuedrift import grid
    from valuedrift.config import feature_run

    config = with_external_models(config)
    plan = Plan({s.name: s for s in (Stage("SFT", "train"), Stage("reward models", "train"),
                                      Stage("preference", "train"), Stage("generate", "generate"),
                                      Stage("judge", "forward"), Stage("hidden states", "forward"),
                                      Stage("dictionaries", "train"), Stage("other", "none"))})
    models = {run.model for run in grid.runs(config)}
    sizes = {m: parameter_count(m, config["models"][m], plan.notes) for m in models}
    judges = {name: config["judges"][name] for name in probe_judges(config)}
    judge_sizes = {name: parameter_count(name, {"path": j["model"]}, plan.notes)
                   for name, j in judges.items() if j["kind"] == "local_llm"}
    for run in grid.runs(config) + grid.reward_models(config):
        if run.external:  # trained elsewhere: its checkpoints are linked as snapshots, not copied
            plan.snapshots += len(grid.snapshot_fractions(config)) + 1
            plan.notes.append(f"external run {run.external}: its checkpoints become snapshots as links (no copy, "
                              "no training); DeepSpeed ZeRO checkpoints are converted, one fp32 copy each")
        else:
            add_phase(plan, config, run, sizes[run.model])
    for model in (run.model for run in grid.runs(config)):
        add_probes(plan, config, model, sizes[model], judge_sizes)
    for run in (run for run in grid.runs(config) if feature_run(config, run)):
        add_dictionaries(plan, config, run.model, sizes[run.model])
    for name, j in judges.items():
        if j["kind"] == "stance_classifier":
            plan.notes.append(f"judge {name}: a trained stance classifier, seconds of CPU per snapshot")
    return plan


# ---- jobs and the table ------------------------------------------------------------------------

STAGE_OF_RULE = {"train_sft": "SFT", "skip_sft": "SFT", "train_reward_model": "reward models",
                 "train_preference": "preference", "generate": "generate", "judge": "judge",
                 "probe_representations": "hidden states", "probe_features": "dictionaries"}


def job_counts(snakefile: str, configs: list[str]) -> dict[str, int]:
    """Jobs per rule from Snakemake's dry run of the whole DAG."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", snakefile, "--dry-run", "--forceall", "--nolock",
           "--quiet", "rules", "--configfile", *configs]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"plan: the dry run failed:\n{out.stderr[-3000:]}")
    table = (out.stdout + out.stderr).split("Job stats:", 1)[-1]
    counts = {}
    for line in table.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("job", "total"):
            counts[parts[0]] = int(parts[1])
    return counts


def human(x: float, unit: str = "") -> str:
    for scale, suffix in ((1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.1f} {suffix}{unit}"
    return f"{x:.0f} {unit}".rstrip()


def duration(hours: float) -> str:
    if hours >= 100:
        return f"{hours:,.0f} h"
    if hours * 60 < 0.1:  # a miniature study's stages on a GPU
        return f"{hours * 3600:.1f} s"
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"


def gpu_hours(stage: Stage, gpu: GPU, mfu: dict[str, float]) -> float:
    """Estimated GPU-hours of a stage: its FLOPs at `mfu` of the GPU's peak, its decoding at the
    roofline. Work over one GPU's rate, so a job on k GPUs counts k GPU-hours per hour."""
    sampled = sum(d.flops for d in stage.decoding)
    rate = gpu.flops_per_s * mfu["train" if stage.operation == "train" else "forward"]
    decoding_s = sum(roofline_seconds(d, gpu, mfu["forward"]) for d in stage.decoding)
    return ((stage.flops - sampled) / rate + decoding_s) / 3600


def roofline_seconds(d: Decoding, gpu: GPU, mfu: float) -> float:
    """Decoding takes the longer of reading its bytes at peak bandwidth and its FLOPs at `mfu`."""
    return max(d.bytes / gpu.bytes_per_s, d.flops / (gpu.flops_per_s * mfu))


def legend(costs: dict, costs_file: str, gpu: GPU | None, mfu: dict[str, float]) -> list[str]:
    """What each time column is: measured throughput, or an estimate from vendor peaks."""
    lines = [f"device time at the throughput measured on: {costs['device']}",
             f"  (measured: the benchmarks' costs file {costs_file})"]
    if gpu is None:
        return lines
    text = (f"{gpu.name} GPU-h: estimated, not measured, from vendor peak figures of the {gpu.model}: FLOPs at "
            f"MFU {mfu['train']} (training) and {mfu['forward']} (forward passes; --mfu) of {gpu.flops_per_s / 1e12:g} "
            "TFLOP/s (dense BF16); decoding (generate; PPO, GRPO and RLOO sampling) at the bandwidth roofline: "
            "each step reads the weights once for its whole batch, and each sequence its KV cache, at "
            f"{gpu.bytes_per_s / 1e12:g} TB/s (HBM), or takes its FLOPs at MFU {mfu['forward']} where that is longer. "
            "GPU-hours count every GPU of a job.")
    return lines + textwrap.wrap(text, 100, subsequent_indent="  ", break_on_hyphens=False)


def table(plan: Plan, rate: dict, gpu: GPU | None, mfu: dict[str, float]) -> list[str]:
    """One row per stage and the total: measured device time, and GPU-hours where `gpu` is named."""
    head = f"{'stage':<15}{'jobs':>7}{'tokens (at most)':>19}{'FLOPs':>12}{'device time':>14}"
    lines = [head + (f"{gpu.name + ' GPU-h':>14}" if gpu else "")]
    measured = estimated = 0.0
    for stage in plan.stages.values():
        hours = stage.flops / rate[stage.operation] / 3600 if stage.operation in rate else 0.0
        gpu_h = gpu_hours(stage, gpu, mfu) if gpu else 0.0
        measured, estimated = measured + hours, estimated + gpu_h
        cells = [human(stage.tokens), human(stage.flops), duration(hours), duration(gpu_h)] if stage.flops else [""] * 4
        lines.append(f"{stage.name:<15}{stage.jobs:>7}{cells[0]:>19}{cells[1]:>12}{cells[2]:>14}"
                     + (f"{cells[3]:>14}" if gpu else ""))
    lines.append(f"{'total':<15}{sum(s.jobs for s in plan.stages.values()):>7}{'':>19}"
                 f"{human(sum(s.flops for s in plan.stages.values())):>12}{duration(measured):>14}"
                 + (f"{duration(estimated):>14}" if gpu else ""))
    return [line.rstrip() for line in lines]


def render(plan: Plan, counts: dict[str, int], costs: dict, config: dict, title: str, costs_file: str = "",
           gpu: GPU | None = None, mfu: dict[str, float] = MFU) -> str:
    for rule, n in counts.items():
        plan.stages[STAGE_OF_RULE.get(rule, "other")].jobs += n
    lines = [f"valuedrift plan: {title}", *legend(costs, costs_file, gpu, mfu), "",
             *table(plan, costs["flops_per_s"], gpu, mfu)]
    if plan.stages["judge"].requests:
        lines.append(f"\njudge API requests: {plan.stages['judge'].requests:,} (cached; a rerun sends none again)")
    if gpu is not None:
        lines += ["", f"{gpu.name} GPU-h, decoding steps (the prompts' KV cache left out):"]
        lines += [f"  - {note}" for note in dict.fromkeys(plan.decoding_notes)]
        if plan.no_kv:
            lines.append(f"  - KV cache left out for {', '.join(plan.no_kv)} (config not readable here): weights only")
    storage = config["storage"]
    lines += ["", f"snapshots: {plan.snapshots:,}, {human(plan.disk_bytes, 'B')} in all "
                  f"(stored as {storage['snapshot_dtype'].replace('auto', 'trained')})",
              "  deleted as soon as every job that reads them is done (storage.keep_snapshots: false)"
              if not storage["keep_snapshots"] else
              "  all kept (storage.keep_snapshots: true); false deletes each once its probes are done"]
    if plan.checkpoint_bytes:
        lines += [f"resume checkpoints: up to {human(plan.checkpoint_bytes, 'B')} per training job while it runs",
                  "  weights and optimizer state, twice that while a new one replaces the last; deleted when the "
                  "phase ends"]
    if plan.notes:
        lines += ["", "notes:"] + [f"  - {note}" for note in dict.fromkeys(plan.notes)]
    return "\n".join(lines)


def shown(path: Path) -> str:
    """A path as short as it reads unambiguously from here."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def main(args: argparse.Namespace) -> None:
    from valuedrift.config import merge, validate_config, workflow_file

    config: dict = {}
    for path in args.configs:
        config = merge(config, yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})
    # as the workflow does: the experiments' DeepSpeed files are found beside the Snakefile
    config["deepspeed"] = workflow_file(config.get("deepspeed"), Path(args.snakefile).resolve().parent)
    validate_config(config)
    costs_path = Path(args.costs)
    if not costs_path.is_file():
        raise SystemExit(f"plan: no costs file {costs_path}; write one with benchmarks/*.py --save-costs")
    costs = json.loads(costs_path.read_text())
    mfu = {name: value for setting in (MFU, *args.mfu) for name, value in setting.items()}
    plan = estimate(config)
    print(render(plan, job_counts(args.snakefile, args.configs), costs, config, " + ".join(args.configs),
                 shown(costs_path), GPUS.get(args.gpu), mfu))
