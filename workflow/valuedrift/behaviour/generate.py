"""`valuedrift generate`: sample answers to every evaluation question from one snapshot.

Prompts are rendered with the model's chat template, sorted by length and batched (left padding,
KV cache, several samples per prompt in one call); generation stops at the end-of-turn token.
Each output row carries the snapshot's position (k, step, fraction) and the caller's tags.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    samples_per_question: int = 5
    temperature: float = 0.7
    max_new_tokens: int = 256
    batch_size: int = 64        # sequences per generate() call
    top_p: float = 1.0


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


def sample_answers(model, tokenizer, questions: list[str], settings: GenerationSettings):
    """Yields (question index, sample index, answer, number of new tokens, finished)."""
    import torch

    n = settings.samples_per_question
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                             add_generation_prompt=True) for q in questions]
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
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
        new = out[:, enc["input_ids"].shape[1]:]
        for row, tokens in enumerate(new):
            finished = bool((tokens == tokenizer.eos_token_id).any())
            n_tokens = int((tokens != tokenizer.pad_token_id).sum())
            text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
            yield idx[row // n], row % n, text, n_tokens, finished


def load_for_inference(model_path: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from valuedrift.llm.local import torch_dtype

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"  # decoder-only batches must be padded on the left
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype("auto"))
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval(), tokenizer


def main(args: argparse.Namespace) -> None:
    import torch
    from transformers import set_seed

    from valuedrift.config import from_dict
    from valuedrift.io import read_jsonl, write_jsonl

    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    settings = from_dict(GenerationSettings, json.loads(args.settings))
    prompts = read_jsonl(args.prompts, required=["question_id", "topic", "question"])
    model, tokenizer = load_for_inference(args.model)
    base = {**json.loads(args.tags), **snapshot_position(args.model), "prompts_version": file_version(args.prompts),
            "generation": asdict(settings)}
    t0 = time.perf_counter()
    rows = []
    for i, sample, text, n_tokens, finished in sample_answers(model, tokenizer, [p["question"] for p in prompts], settings):
        p = prompts[i]
        rows.append({**base, "question_id": p["question_id"], "topic": p["topic"], "question": p["question"],
                     "sample": sample, "answer": text, "n_tokens": n_tokens, "finished": finished})
    seconds = time.perf_counter() - t0
    rows.sort(key=lambda r: (r["question_id"], r["sample"]))
    write_jsonl(args.output, rows)
    log.info("%d answers, %d new tokens in %.1f s (%.0f tokens/s)", len(rows), sum(r["n_tokens"] for r in rows),
             seconds, sum(r["n_tokens"] for r in rows) / max(seconds, 1e-9))
