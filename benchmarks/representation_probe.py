"""Time and peak memory of the representation probe per snapshot, on a randomly initialized model
shaped like Qwen3-0.6B (28 layers, hidden 1024, 16 query / 8 key-value heads, vocabulary 151,936).

    python benchmarks/representation_probe.py [--pairs 200] [--dtype float32|bfloat16]
                                              [--save-costs benchmarks/costs/<device>.json]

A snapshot's probe is two parts, timed apart: the hidden states of every layer for prompt+chosen and
prompt+rejected of each held-out pair (one forward pass per batch, with the policy's log-probabilities),
and the probes of every layer against the start (C chosen on the selection prompts, CV, CKA,
transfer, and the refit replicates of the start-vs-end change). The pairs come from the
miniature world, tokenized by its BPE tokenizer (ids fit the large vocabulary). Prints figures; it
asserts nothing. Peak memory is the process's maximum resident set size. With --save-costs the
hidden states' tokens per second become the `forward` throughput that `valuedrift plan` uses.
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


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def probe_pairs(n: int) -> list[dict]:
    from valuedrift.world.datasets import World

    world = World(0, 5, 2)
    return list(world.preference_rows("benchmark", n, "value_gap", {}, "support", "oppose", split=("eval", "judge_test")))


def main() -> None:
    import numpy as np
    import torch

    from valuedrift.representation.hidden import HiddenSettings, answer_lengths, extract, texts_of
    from valuedrift.representation.probe_run import set_rows
    from valuedrift.representation.probes import ProbeSettings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save-costs", default=None, help="costs file to update with the hidden-state figure")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer = shapes.world_tokenizer()
    pairs = probe_pairs(args.pairs)
    hidden_settings = HiddenSettings(batch_size=args.batch_size)
    tokens = sum(len(ids) for ids in texts_of(pairs, tokenizer, hidden_settings.max_length)[0])
    lengths = answer_lengths(pairs, tokenizer)
    settings = ProbeSettings(folds=5, inner_folds=2, Cs=(0.01, 0.1, 1.0), refits=20, n_boot=1000)
    figures = {"pairs": len(pairs), "tokens_per_snapshot": tokens, "dtype": args.dtype, "threads": args.threads}
    with tempfile.TemporaryDirectory() as scratch:
        states = {}
        for k in (0, 1):  # the start and one snapshot: a second random model stands in for training
            model = shapes.build("qwen3-0.6b", tokenizer, args.dtype)
            parameters = shapes.parameters(model)
            if k:
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(0.01 * torch.randn_like(p))
            (Path(scratch) / str(k)).mkdir()
            t0 = time.perf_counter()
            states[k] = {"stance": extract(model, tokenizer, pairs, hidden_settings, Path(scratch) / str(k))}
            figures[f"hidden_states_s_snapshot{k}"] = round(time.perf_counter() - t0, 1)
            del model
        figures["hidden_file_mb_per_snapshot"] = round(sum(a.nbytes for a in states[1]["stance"][0].values()) / 2**20, 1)
        t0 = time.perf_counter()
        rows, _ = set_rows(states, "stance", pairs, lengths, hidden_settings, settings)
        figures["probe_s_two_snapshots"] = round(time.perf_counter() - t0, 1)
        figures["layers"] = int(states[1]["stance"][0][("chosen", "mean")].shape[0])
        figures["peak_rss_gb"] = round(peak_rss_gb(), 2)
        last = [r for r in rows if r["k"] == 1 and r["pooling"] == "mean"]
        figures["auroc_range_snapshot1"] = [round(float(np.min([r["auroc"] for r in last])), 3),
                                            round(float(np.max([r["auroc"] for r in last])), 3)]
    figures["seconds_per_snapshot"] = round(figures["hidden_states_s_snapshot1"] + figures["probe_s_two_snapshots"] / 2, 1)
    print(json.dumps(figures, indent=2))
    if args.save_costs:
        costs.save(args.save_costs, "forward", round(tokens / figures["hidden_states_s_snapshot1"], 1), parameters,
                   {**figures, "device": costs.device(args.threads, args.dtype)})


if __name__ == "__main__":
    main()
