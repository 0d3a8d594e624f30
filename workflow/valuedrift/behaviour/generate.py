"""`valuedrift generate`: sample answers to every evaluation question from each snapshot of a run.

One process probes a run's snapshots one after another (`--model` lists them, `--output` names one
generations file per snapshot): the libraries load once per run instead of once per snapshot, and
each snapshot still gets a file of its own. Sampling is reseeded for every snapshot, so a
snapshot's answers do not depend on which other snapshots share the process.

Prompts are rendered with the model's chat template, sorted by length and batched (left padding,
KV cache, several samples per prompt in one call); generation stops at the end-of-turn token.
Each output row carries the snapshot's position (k, step, fraction) and the caller's tags.

Two backends write the same rows: `hf` (transformers `generate`, the default, any machine) and
`vllm` (continuous batching and paged attention on GPU clusters where vLLM is installed). With
vLLM one engine serves the whole run: LoRA snapshots are adapters over its base model, and a full
snapshot's weights are loaded into the running engine instead of starting a new one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from valuedrift.behaviour.judge import judge_file, outputs_by_judge
from valuedrift.io import InputError

log = logging.getLogger(__name__)

BACKENDS = ("hf", "vllm")


@dataclass(frozen=True)
class GenerationSettings:
    samples_per_question: int = 5
    temperature: float = 0.7
    max_new_tokens: int = 256
    batch_size: int = 64        # sequences per generate() call (hf; vllm schedules its own batches)
    top_p: float = 1.0
    backend: str = "hf"         # hf or vllm
    dtype: str = "auto"         # auto: bfloat16 on a GPU that has it, else float32; or a torch dtype name
    kl_samples: int = 2         # answers per question scored for the KL estimate (hf backend; 0: none)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise InputError(f"behaviour.backend {self.backend!r} is not one of {', '.join(BACKENDS)}")


class Sample(NamedTuple):
    """One sampled answer; `logp` and `logp_start` are its log-probability under the snapshot's
    policy and under the run's start policy, as sampled (at the sampling temperature), or None."""

    question: int            # index into the questions
    sample: int
    text: str
    n_tokens: int            # new tokens up to and including the stop token
    finished: bool           # it ended with a stop token (not at max_new_tokens)
    token_ids: list[int]
    logp: float | None = None
    logp_start: float | None = None


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "generate", __doc__)
    parser.add_argument("--model", required=True, nargs="+", help="snapshot folders (or hub ids) of one run")
    parser.add_argument("--prompts", required=True, help="evaluation prompts (JSONL: question_id, topic, question)")
    parser.add_argument("--output", required=True, nargs="+", help="generations JSONL to write, one per --model")
    parser.add_argument("--settings", default="{}", help="JSON: GenerationSettings fields")
    parser.add_argument("--tags", default="{}", help="JSON object copied into every row (run identifiers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--judges", default=None, type=json.loads,
                        help="JSON list of judges [{name, settings, model_dir}] that also judge every snapshot's "
                             "answers in this process (cheap local judges), as `valuedrift judge --judges` does")
    parser.add_argument("--stances", nargs="*", default=[],
                        help="with --judges: stances JSONL to write per judge and --model, judge by judge")
    return parser


def snapshot_position(model: str) -> dict:
    meta = Path(model) / "meta.json"
    if not meta.is_file():
        return {"k": 0, "step": 0, "fraction": 0.0}
    m = json.loads(meta.read_text())
    return {"k": m["k"], "step": m["step"], "fraction": m["fraction"]}


def file_version(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def render_prompts(tokenizer, questions: list[str]) -> list[str]:
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q in questions]


def answer_length(tokens, stops: list[int]) -> tuple[int, bool]:
    """(new tokens up to and including the first stop token, whether there was one); what follows
    a stop is padding, whichever id the tokenizer pads with."""
    import torch

    hits = torch.isin(tokens, torch.tensor(stops, device=tokens.device)).nonzero()
    return (int(hits[0]) + 1, True) if len(hits) else (len(tokens), False)


def sample_answers(model, tokenizer, questions: list[str], settings: GenerationSettings):
    """Yields a `Sample` per answer (without log-probabilities)."""
    import torch

    from valuedrift.llm.local import stop_token_ids
    from valuedrift.progress import batches

    n = settings.samples_per_question
    prompts = render_prompts(tokenizer, questions)
    stops = stop_token_ids(model.generation_config, tokenizer)
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lengths.__getitem__)  # similar lengths share a batch
    per_batch = max(1, settings.batch_size // n)
    for start in batches(range(0, len(order), per_batch), "generate"):
        idx = order[start:start + per_batch]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            out = model.generate(
                **enc, do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0,
                max_new_tokens=settings.max_new_tokens, num_return_sequences=n,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=stops,
            )
        new = out[:, enc["input_ids"].shape[1]:]
        for row, tokens in enumerate(new):
            n_tokens, finished = answer_length(tokens, stops)
            text = tokenizer.decode(tokens[:n_tokens], skip_special_tokens=True).strip()
            yield Sample(idx[row // n], row % n, text, n_tokens, finished, tokens[:n_tokens].tolist())


class VllmEngine:
    """One vLLM engine for all snapshots of a run. The engine starts on the first snapshot; a LoRA
    snapshot is then one more adapter over the engine's base model, and a full snapshot's weights
    are reloaded into the running engine (`update_config` + `reload_weights`, vLLM >= 0.10) rather
    than starting a new engine, which costs tens of seconds to minutes per snapshot."""

    def __init__(self, settings: GenerationSettings, seed: int):
        try:
            from vllm import LLM, SamplingParams
            from vllm.lora.request import LoRARequest
        except ImportError as e:
            raise InputError("behaviour.backend: vllm needs the vllm package (pip install vllm, on a CUDA "
                             "machine); or set behaviour.backend: hf") from e
        self.LLM, self.SamplingParams, self.LoRARequest = LLM, SamplingParams, LoRARequest
        self.settings, self.seed = settings, seed
        self.llm = None
        self.base = None       # the folder or hub id whose weights the engine holds
        self.adapters = 0      # LoRA adapters served so far; each needs an id of its own

    def _start(self, model: str, lora_rank: int | None) -> None:
        self.llm = self.LLM(model=model, dtype=self.settings.dtype, seed=self.seed, enable_lora=lora_rank is not None,
                            max_lora_rank=lora_rank or 16)
        self.base = model

    def _load(self, model_path: str):
        """Point the engine at a snapshot; returns the LoRA request to generate with, if any."""
        adapter = Path(model_path) / "adapter_config.json"
        if adapter.is_file():
            spec = json.loads(adapter.read_text())
            if self.llm is None:
                self._start(spec["base_model_name_or_path"], spec["r"])
            self.adapters += 1
            return self.LoRARequest(f"snapshot-{self.adapters}", self.adapters, str(model_path))
        if self.llm is None:
            self._start(str(model_path), None)
        elif self.base != str(model_path):
            self._reload(str(model_path))
        return None

    def _reload(self, model: str) -> None:
        try:
            self.llm.collective_rpc("update_config", args=({"model_config": {"model": model}},))
            self.llm.collective_rpc("reload_weights")
        except Exception as e:  # a vLLM without in-place reloading: a new engine, as before
            log.warning("vLLM could not reload weights in place (%s); starting a new engine for %s", e, model)
            self.llm = None
            self._start(model, None)
            return
        self.llm.reset_prefix_cache()  # cached prefixes hold the previous weights' keys and values
        self.base = model

    def sampling(self, n_prompts: int, stops: list[int]) -> list:
        """One SamplingParams per prompt, each with its own seed: a snapshot's samples then depend only
        on the seed and the question, never on what the engine generated before. (One seed for all
        prompts would give every question's j-th sample the same random stream.)"""
        s = self.settings
        return [self.SamplingParams(n=s.samples_per_question, temperature=s.temperature, top_p=s.top_p,
                                    max_tokens=s.max_new_tokens, stop_token_ids=stops, skip_special_tokens=True,
                                    seed=self.seed * 1_000_003 + i)
                for i in range(n_prompts)]

    def answers(self, model_path: str, questions: list[str]):
        """Same yield as `sample_answers`; no log-probabilities (KL is measured with the hf backend)."""
        from transformers import AutoTokenizer, GenerationConfig

        from valuedrift.checksums import verify_snapshot
        from valuedrift.llm.local import stop_token_ids

        verify_snapshot(model_path)
        lora = self._load(model_path)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        try:
            generation_config = GenerationConfig.from_pretrained(self.base)
        except OSError:  # no generation_config.json: the tokenizer's end of text is the only stop
            generation_config = None
        prompts = render_prompts(tokenizer, questions)
        params = self.sampling(len(prompts), stop_token_ids(generation_config, tokenizer))
        for i, request in enumerate(self.llm.generate(prompts, params, lora_request=lora)):
            for sample, out in enumerate(request.outputs):
                yield Sample(i, sample, out.text.strip(), len(out.token_ids), out.finish_reason == "stop",
                             list(out.token_ids))


class HfGenerator:
    """transformers `generate`: each snapshot loaded in turn, reseeded before it is sampled.

    It also scores each answer under the snapshot's policy and under the run's start policy (the
    first snapshot, k=0, kept loaded), both at the sampling temperature, for the Monte-Carlo
    estimate of KL(snapshot ‖ start) on the evaluation questions. Nucleus sampling (top_p < 1)
    truncates the policy in a way the scores do not follow, so no scores are written then."""

    def __init__(self, settings: GenerationSettings, seed: int):
        self.settings, self.seed = settings, seed
        self.start = None  # (model, tokenizer) of the run's start, once its snapshot came by
        self.scores = settings.top_p == 1.0 and settings.kl_samples > 0

    def answers(self, model_path: str, questions: list[str]):
        from transformers import set_seed

        set_seed(self.seed)
        model, tokenizer = load_for_inference(model_path, self.settings.dtype)
        samples = list(sample_answers(model, tokenizer, questions, self.settings))
        if not self.scores:
            return samples
        if self.start is None and snapshot_position(model_path)["k"] == 0:
            self.start = (model, tokenizer)
        if self.start is None:
            log.warning("%s: no start snapshot (k=0) came first, so its answers are not scored for KL", model_path)
            return samples
        # the first kl_samples answers of each question: the estimate needs far fewer answers than
        # the stance shares, and each scored answer costs two forward passes
        scored = [s for s in samples if s.sample < self.settings.kl_samples]
        prompts = render_prompts(tokenizer, questions)
        logp = answer_logprobs(model, tokenizer, prompts, scored, self.settings)
        logp_start = logp if self.start[0] is model else answer_logprobs(*self.start, prompts, scored, self.settings)
        scores = {(s.question, s.sample): (a, b) for s, a, b in zip(scored, logp, logp_start)}
        return [s._replace(logp=scores[s.question, s.sample][0], logp_start=scores[s.question, s.sample][1])
                if (s.question, s.sample) in scores else s for s in samples]


def answer_logprobs(model, tokenizer, prompts: list[str], samples: list[Sample], settings: GenerationSettings,
                    batch_size: int = 64) -> list[float]:
    """log p(answer | prompt) of each sample under `model` at the sampling temperature: the sum of
    its tokens' log-probabilities, read from one teacher-forced forward pass per batch."""
    import torch

    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    texts = [prompt_ids[s.question] + s.token_ids for s in samples]
    pad = tokenizer.pad_token_id
    out = []
    for start in range(0, len(samples), batch_size):
        batch = list(range(start, min(start + batch_size, len(samples))))
        width = max(len(texts[i]) for i in batch)
        ids = torch.tensor([texts[i] + [pad] * (width - len(texts[i])) for i in batch], device=model.device)
        mask = torch.tensor([[1] * len(texts[i]) + [0] * (width - len(texts[i])) for i in batch], device=model.device)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits.float() / settings.temperature
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        for row, i in enumerate(batch):
            first = len(prompt_ids[samples[i].question]) - 1  # the position that predicts the answer's first token
            out.append(float(logprobs[row, first:len(texts[i]) - 1].sum()))
    return out


def load_for_inference(model_path: str, dtype: str = "auto"):
    """A snapshot (or hub model) ready to probe; a snapshot whose files changed since training is
    refused (valuedrift.checksums)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from valuedrift.checksums import verify_snapshot
    from valuedrift.llm.local import prepare_tokenizer, torch_dtype

    verify_snapshot(model_path)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(model_path))
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype(dtype))
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval(), tokenizer


def generation_rows(generator, model: str, prompts: list[dict], base: dict) -> list[dict]:
    """The answers of one snapshot, as rows sorted by question and sample."""
    position = snapshot_position(model)
    rows = [{**base, **position, "question_id": prompts[s.question]["question_id"], "topic": prompts[s.question]["topic"],
             "question": prompts[s.question]["question"], "sample": s.sample, "answer": s.text,
             "n_tokens": s.n_tokens, "finished": s.finished, "logp": s.logp, "logp_start": s.logp_start}
            for s in generator.answers(model, [p["question"] for p in prompts])]
    return sorted(rows, key=lambda r: (r["question_id"], r["sample"]))


def main(args: argparse.Namespace) -> None:
    import torch

    from valuedrift.config import from_dict
    from valuedrift.io import read_jsonl, write_jsonl

    if len(args.model) != len(args.output):
        raise InputError(f"{len(args.model)} --model folders but {len(args.output)} --output files; give one "
                         "output per model, in the same order")
    judges = args.judges or []
    stances = outputs_by_judge(len(judges), args.model, args.stances, "--stances")
    torch.set_num_threads(args.threads)
    settings = from_dict(GenerationSettings, json.loads(args.settings))
    prompts = read_jsonl(args.prompts, required=["question_id", "topic", "question"])
    base = {**json.loads(args.tags), "prompts_version": file_version(args.prompts), "generation": asdict(settings)}
    generator = (VllmEngine if settings.backend == "vllm" else HfGenerator)(settings, args.seed)
    judging = local_judging(judges, stances)
    for i, (model, output) in enumerate(zip(args.model, args.output), start=1):
        log.info("snapshot %d/%d: %s", i, len(args.model), model)  # its bar of batches follows
        t0 = time.perf_counter()
        rows = generation_rows(generator, model, prompts, base)
        write_jsonl(output, rows)
        seconds, tokens = time.perf_counter() - t0, sum(r["n_tokens"] for r in rows)
        log.info("snapshot %d of %d (%s): %d answers, %d new tokens in %.1f s (%.0f tokens/s)", i, len(args.model),
                 model, len(rows), tokens, seconds, tokens / max(seconds, 1e-9))
        for judge, files in judging:
            judge_file(judge, output, files[i - 1])


def local_judging(judges: list[dict], stances: list[list[str]]) -> list:
    """(judge, its stances files) of each judge to run here: a trained stance classifier judges a
    run's answers in a second, which a process of its own would spend several times over loading
    libraries."""
    from valuedrift.behaviour.judges import load_judge

    return [(load_judge(spec["name"], spec["settings"], spec.get("model_dir")), files)
            for spec, files in zip(judges, stances)]
