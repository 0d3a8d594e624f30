"""Training throughput of a supervised fine-tuning step, on a randomly initialized model shaped like
Qwen3-0.6B (or the tiny model), through the project's own TRL trainer factory.

    python benchmarks/training.py [--model qwen3-0.6b|tiny] [--steps 5] [--batch-size 4]
                                  [--save-costs benchmarks/costs/<device>.json]

Trains on the miniature world's SFT answers with full fine-tuning (AdamW), counts the tokens the
trainer saw and times the steps after the first (which pays for allocation). Prints tokens per
second, seconds per step and peak memory; asserts nothing. With --save-costs the figure becomes
the `train` throughput that `valuedrift plan` uses.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import costs
import shapes


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.marks = []  # (time, tokens seen) at the end of each step

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

    return StepTimer()


def main() -> None:
    import torch

    from valuedrift.io import write_jsonl
    from valuedrift.training.data import load_training_data
    from valuedrift.training.trainers import Models, make_config, make_trainer
    from valuedrift.world.datasets import World

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen3-0.6b", choices=sorted(shapes.SHAPES))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save-costs", default=None, help="costs file to update with the training figure")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer = shapes.world_tokenizer()
    model = shapes.build(args.model, tokenizer).train()
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "sft.jsonl"
        write_jsonl(data, World(0, 5, 2).sft_rows("benchmark", args.steps * args.batch_size,
                                                  {"support": 0.34, "neutral": 0.33, "oppose": 0.33}))
        config = make_config("sft", {"max_steps": args.steps, "per_device_train_batch_size": args.batch_size,
                                     "max_length": args.max_length, "include_num_input_tokens_seen": "all",
                                     "save_strategy": "no", "report_to": []}, Path(scratch) / "out", 0)
        timer = step_timer()
        trainer = make_trainer("sft", Models(model, tokenizer), load_training_data("sft", str(data), tokenizer),
                               config, [timer])
        trainer.train()
    (t0, seen0), (t1, seen1) = timer.marks[0], timer.marks[-1]
    tokens_per_s = round((seen1 - seen0) / (t1 - t0), 1)
    figures = {"model": args.model, "parameters": shapes.parameters(model), "dtype": "float32",
               "threads": args.threads, "steps_timed": len(timer.marks) - 1, "batch_size": args.batch_size,
               "max_length": args.max_length, "tokens_per_s": tokens_per_s,
               "seconds_per_step": round((t1 - t0) / (len(timer.marks) - 1), 2),
               "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    print(json.dumps(figures, indent=2))
    if args.save_costs:
        costs.save(args.save_costs, "train", tokens_per_s, figures["parameters"],
                   {**figures, "device": costs.device(args.threads, "float32")})


if __name__ == "__main__":
    main()
