"""`valuedrift probe-representations`: the representation probe of every snapshot of one run.

The run's snapshots are loaded one at a time; the pooled hidden states of the held-out pairs go
to temporary memory-mapped files (deleted at the end), the start's (k=0) kept for comparison.
Then, per snapshot, pooling and layer, `valuedrift.representation.probes.layer_metrics` fits the
probes and compares with the start on identical inputs; the change of AUROC from the start comes
with a paired bootstrap interval over prompts. One CSV row per (snapshot, pooling, layer).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "probe-representations", __doc__)
    parser.add_argument("--run-dir", required=True, help="the run's folder (snapshots/0..K inside)")
    parser.add_argument("--snapshots", type=int, required=True, help="K: the last snapshot")
    parser.add_argument("--pairs", required=True, help="held-out probe pairs (JSONL: prompt, chosen, rejected)")
    parser.add_argument("--settings", default="{}", help="JSON: {hidden: HiddenSettings, probe: ProbeSettings}")
    parser.add_argument("--tags", default="{}", help="JSON object copied into every row (run identifiers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", required=True, help="probes CSV to write")
    return parser


def prompt_groups(pairs: list[dict]):
    """The prompt of each pair, as an integer id: pairs of one prompt stay in one fold."""
    texts = [json.dumps(p["prompt"], sort_keys=True) for p in pairs]
    index = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    return np.array([index[t] for t in texts])


def extract_run(run_dir: Path, k_max: int, pairs: list[dict], settings, scratch: Path):
    """k -> {(side, pooling): array (layers, pairs, hidden)}, and the answers' token lengths."""
    from valuedrift.behaviour.generate import load_for_inference
    from valuedrift.representation.hidden import answer_lengths, extract

    states, lengths = {}, None
    for k in range(k_max + 1):
        t0 = time.perf_counter()
        model, tokenizer = load_for_inference(str(run_dir / "snapshots" / str(k)), settings.dtype)
        (scratch / str(k)).mkdir()
        states[k] = extract(model, tokenizer, pairs, settings, scratch / str(k))
        lengths = answer_lengths(pairs, tokenizer) if lengths is None else lengths
        log.info("snapshot %d: hidden states of %d texts in %.1f s", k, 2 * len(pairs), time.perf_counter() - t0)
        del model
    return states, lengths


def layer_rows(states: dict, groups, length, settings):
    """Rows of every snapshot at every pooling and layer; the start's probe of a layer is fitted once
    and serves as the baseline of the change and as the transferred probe."""
    from valuedrift.representation.hidden import POOLINGS
    from valuedrift.representation.probes import auroc_change, fit_probe, layer_metrics

    for pooling in POOLINGS:
        for layer in range(states[0][("chosen", pooling)].shape[0]):
            start = [np.asarray(states[0][(side, pooling)][layer]) for side in ("chosen", "rejected")]
            start_fit = fit_probe(*start, groups, settings)
            for k in sorted(states):
                now = [np.asarray(states[k][(side, pooling)][layer]) for side in ("chosen", "rejected")]
                # the shuffled control depends on little but the pair set: once per layer, mean pooling
                metrics, own = layer_metrics(*now, groups, start_fit, *start, settings, length,
                                             shuffled=pooling == "mean", own=start_fit if k == 0 else None)
                delta, low, high = auroc_change(start_fit, own, settings)
                yield {"k": k, "pooling": pooling, "layer": layer, **metrics,
                       "delta_auroc": delta, "delta_low": low, "delta_high": high}


def main(args: argparse.Namespace) -> None:
    import pandas as pd
    import torch

    from valuedrift.config import from_dict
    from valuedrift.io import read_json, read_jsonl, write_csv
    from valuedrift.representation.hidden import HiddenSettings
    from valuedrift.representation.probes import ProbeSettings, length_probe

    torch.set_num_threads(args.threads)
    settings = json.loads(args.settings)
    hidden = from_dict(HiddenSettings, settings.get("hidden", {}))
    probe = from_dict(ProbeSettings, {"seed": args.seed, **settings.get("probe", {})})
    pairs = read_jsonl(args.pairs, required=("prompt", "chosen", "rejected"))
    groups = prompt_groups(pairs)
    run_dir = Path(args.run_dir)
    version = hashlib.sha256(Path(args.pairs).read_bytes() + args.settings.encode()).hexdigest()[:12]
    metas = [read_json(run_dir / "snapshots" / str(k) / "meta.json") for k in range(args.snapshots + 1)]
    with tempfile.TemporaryDirectory(prefix=".hidden-", dir=run_dir) as scratch:
        states, lengths = extract_run(run_dir, args.snapshots, pairs, hidden, Path(scratch))
        t0 = time.perf_counter()
        length = length_probe(lengths, groups, probe)
        rows = [{**json.loads(args.tags), "step": metas[row["k"]]["step"], "fraction": metas[row["k"]]["fraction"],
                 **row, "n_pairs": len(pairs), "probe_version": version}
                for row in layer_rows(states, groups, length, probe)]
        log.info("probes of %d (snapshot, pooling, layer) cells in %.1f s", len(rows), time.perf_counter() - t0)
    write_csv(pd.DataFrame(rows).sort_values(["k", "pooling", "layer"]), args.output)
