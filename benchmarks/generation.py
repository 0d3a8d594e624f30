"""Tokens per second of the behaviour probe's generation path against a naive loop, measured in one run.

    python benchmarks/generation.py [--model tiny|qwen3-0.6b|both] [--repeats 3] [--dtype bfloat16]
                                    [--save-costs benchmarks/costs/<device>.json]

The pipeline's path is `valuedrift.behaviour.generate.sample_answers`: chat-rendered prompts sorted by
length into batches, several samples per prompt in one `generate` call, KV cache, stop at
end-of-turn. The naive loop calls `generate` once per prompt and sample. Both sample the same
questions (the miniature world's evaluation questions) with the same settings on the same randomly
initialized model, shaped like the miniature world's tiny model or like Qwen3-0.6B, with the world's
BPE tokenizer; a random model rarely ends early, so both write about max_new_tokens per answer.
Prints medians over the repeats and their ratio; asserts nothing. With --save-costs the pipeline's
median on the 0.6B-shaped model becomes the `generate` throughput that `valuedrift plan` uses.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import costs
import shapes


def naive(model, tokenizer, questions, settings) -> int:
    """One generate call per prompt and sample; returns the new tokens written."""
    import torch

    tokens = 0
    for q in questions:
        text = tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        for _ in range(settings.samples_per_question):
            with torch.inference_mode():
                out = model.generate(**enc, do_sample=True, temperature=settings.temperature, top_k=0,
                                     max_new_tokens=settings.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id)
            tokens += out.shape[1] - enc["input_ids"].shape[1]
    return tokens


def pipeline(model, tokenizer, questions, settings) -> int:
    from valuedrift.behaviour.generate import sample_answers

    return sum(s.n_tokens for s in sample_answers(model, tokenizer, questions, settings))


def measure(fn, repeats: int, *args) -> dict:
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tokens = fn(*args)
        rates.append(tokens / (time.perf_counter() - t0))
    return {"tokens_per_s_median": round(statistics.median(rates), 1), "runs": [round(r, 1) for r in rates],
            "tokens_per_run": tokens}


def main() -> None:
    import torch

    from valuedrift.behaviour.generate import GenerationSettings
    from valuedrift.world.datasets import World

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="both", choices=["tiny", "qwen3-0.6b", "both"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--questions", type=int, default=None, help="default: 55 (tiny), 11 (0.6B)")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save-costs", default=None, help="costs file to update with the 0.6B pipeline figure")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer = shapes.world_tokenizer()
    tokenizer.padding_side = "left"
    questions = [q.question for q in World(0, 5, 2).split("eval")]
    for shape in (["tiny", "qwen3-0.6b"] if args.model == "both" else [args.model]):
        n = args.questions or (55 if shape == "tiny" else 11)
        settings = GenerationSettings(samples_per_question=args.samples, temperature=1.0,
                                      max_new_tokens=args.max_new_tokens, batch_size=256)
        model = shapes.build(shape, tokenizer, args.dtype)
        torch.manual_seed(0)
        fast = measure(pipeline, args.repeats, model, tokenizer, questions[:n], settings)
        slow = measure(naive, args.repeats, model, tokenizer, questions[:n], settings)
        figures = {"model": shape, "dtype": args.dtype, "threads": args.threads, "questions": n,
                   "samples": args.samples, "max_new_tokens": args.max_new_tokens, "pipeline": fast, "naive": slow,
                   "ratio_of_medians": round(fast["tokens_per_s_median"] / slow["tokens_per_s_median"], 1),
                   "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
        print(json.dumps(figures, indent=2))
        if args.save_costs and shape == "qwen3-0.6b":
            costs.save(args.save_costs, "generate", fast["tokens_per_s_median"], shapes.parameters(model),
                       {**figures, "device": costs.device(args.threads, args.dtype)})
        del model


if __name__ == "__main__":
    main()
