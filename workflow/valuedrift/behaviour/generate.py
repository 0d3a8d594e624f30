"""`valuedrift generate`: sample answers to every evaluation question from one snapshot.

Prompts are rendered with the model's chat template, sorted by length and batched (left padding,
KV cache, several samples per prompt in one call); generation stops at the end-of-turn token.
Each output row carries the snapshot's position (k, step, fraction) and the caller's tags.

Two backends write the same rows: `hf` (transformers `generate`, the default, any machine) and
`vllm` (continuous batching and paged attention on GPU clusters where vLLM is installed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

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

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise InputError(f"behaviour.backend {self.backend!r} is not one of {', '.join(BACKENDS)}")


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "generate", __doc__)
    parser.add_argument("--model", required=True, help="snapshot folder (or hub id)")
    parser.add_argument("--prompts", required=True, help="evaluation prompts (JSONL: question_id, topic, question)")
    parser.add_argument("--output", required=True, help="generations JSONL to write")
    parser.add_argument("--settings", default="{}", help="JSON: GenerationSettings fields")
    parser.add_argument("--tags", default="{}", help="JSON object copied into every row (run identifiers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
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
    """Yields (question index, sample index, answer, number of new tokens, finished)."""
    import torch

    from valuedrift.llm.local import stop_token_ids

    n = settings.samples_per_question
    prompts = render_prompts(tokenizer, questions)
    stops = stop_token_ids(model.generation_config, tokenizer)
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lengths.__getitem__)  # similar lengths share a batch
    per_batch = max(1, settings.batch_size // n)
    for start in range(0, len(order), per_batch):
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
            yield idx[row // n], row % n, text, n_tokens, finished


def sample_answers_vllm(model_path: str, questions: list[str], settings: GenerationSettings, seed: int):
    """Same yield as `sample_answers`, through vLLM; a LoRA snapshot is served over its base model."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError as e:
        raise InputError("behaviour.backend: vllm needs the vllm package (pip install vllm, on a CUDA "
                         "machine); or set behaviour.backend: hf") from e
    from transformers import AutoTokenizer, GenerationConfig

    from valuedrift.checksums import verify_snapshot
    from valuedrift.llm.local import stop_token_ids

    verify_snapshot(model_path)
    adapter = Path(model_path) / "adapter_config.json"
    base, lora, rank = model_path, None, 16
    if adapter.is_file():
        from vllm.lora.request import LoRARequest

        spec = json.loads(adapter.read_text())
        base, lora, rank = spec["base_model_name_or_path"], LoRARequest("snapshot", 1, str(model_path)), spec["r"]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    try:
        generation_config = GenerationConfig.from_pretrained(base)
    except OSError:  # no generation_config.json: the tokenizer's end of text is the only stop
        generation_config = None
    prompts = render_prompts(tokenizer, questions)
    # the engine's seed, not a per-request one: a request seed would give every question's j-th
    # sample the same random stream
    llm = LLM(model=str(base), tokenizer=str(model_path), dtype=settings.dtype, seed=seed,
              enable_lora=lora is not None, max_lora_rank=rank)
    params = SamplingParams(n=settings.samples_per_question, temperature=settings.temperature,
                            top_p=settings.top_p, max_tokens=settings.max_new_tokens,
                            stop_token_ids=stop_token_ids(generation_config, tokenizer), skip_special_tokens=True)
    for i, request in enumerate(llm.generate(prompts, params, lora_request=lora)):
        for sample, out in enumerate(request.outputs):
            yield i, sample, out.text.strip(), len(out.token_ids), out.finish_reason == "stop"


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


def answers(model_path: str, questions: list[str], settings: GenerationSettings, seed: int):
    """(question index, sample index, answer, new tokens, finished) from the configured backend."""
    if settings.backend == "vllm":
        yield from sample_answers_vllm(model_path, questions, settings, seed)
        return
    model, tokenizer = load_for_inference(model_path, settings.dtype)
    yield from sample_answers(model, tokenizer, questions, settings)


def main(args: argparse.Namespace) -> None:
    import torch
    from transformers import set_seed

    from valuedrift.config import from_dict
    from valuedrift.io import read_jsonl, write_jsonl

    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    settings = from_dict(GenerationSettings, json.loads(args.settings))
    prompts = read_jsonl(args.prompts, required=["question_id", "topic", "question"])
    base = {**json.loads(args.tags), **snapshot_position(args.model), "prompts_version": file_version(args.prompts),
            "generation": asdict(settings)}
    t0 = time.perf_counter()
    rows = []
    for i, sample, text, n_tokens, finished in answers(args.model, [p["question"] for p in prompts], settings, args.seed):
        p = prompts[i]
        rows.append({**base, "question_id": p["question_id"], "topic": p["topic"], "question": p["question"],
                     "sample": sample, "answer": text, "n_tokens": n_tokens, "finished": finished})
    seconds = time.perf_counter() - t0
    rows.sort(key=lambda r: (r["question_id"], r["sample"]))
    write_jsonl(args.output, rows)
    log.info("%d answers, %d new tokens in %.1f s (%.0f tokens/s)", len(rows), sum(r["n_tokens"] for r in rows),
             seconds, sum(r["n_tokens"] for r in rows) / max(seconds, 1e-9))
