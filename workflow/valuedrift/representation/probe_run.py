"""`valuedrift probe-representations`: the representation probe of every snapshot of one run.

The run's snapshots are loaded one at a time; for every probe set (e.g. `stance` and `quality`)
the pooled hidden states of its held-out pairs go to temporary memory-mapped files (deleted at the
end), and the policy's log-probabilities of both answers of each pair are kept. Then, per probe
set, pooling and layer (valuedrift.representation.probes):

- a seeded share of the prompts (the selection rows) chooses each snapshot's regularization C and
  gives the start's selection score, from which the report picks its peak layer; every other
  number uses the remaining (evaluation) rows only;
- every snapshot's own probe, the start's probe transferred to it, CKA and the difference-of-means
  cosine against the start (point estimates: `probes.csv`, one row per snapshot, set, pooling and
  layer, with the policy's margin on the set);
- between the start and the last snapshot, `refits` bootstrap replicates over prompts with every
  probe refitted (`refits.csv`, one row per set, pooling, layer and replicate), from which the
  report computes intervals, p-values and corrected verdicts.
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
    parser.add_argument("--pairs", required=True, nargs="+", metavar="SET=PATH",
                        help="held-out probe pairs per probe set (JSONL: prompt, chosen, rejected)")
    parser.add_argument("--settings", default="{}", help="JSON: {hidden: HiddenSettings, probe: ProbeSettings}")
    parser.add_argument("--tags", default="{}", help="JSON object copied into every row (run identifiers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", required=True, help="probes CSV to write")
    parser.add_argument("--refits", required=True, help="refit replicates CSV to write")
    return parser


def prompt_groups(pairs: list[dict]):
    """The prompt of each pair, as an integer id: pairs of one prompt stay in one fold."""
    texts = [json.dumps(p["prompt"], sort_keys=True) for p in pairs]
    index = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    return np.array([index[t] for t in texts])


def probe_sets(specs: list[str]) -> dict[str, Path]:
    """SET=PATH arguments as {set: path}."""
    from valuedrift.io import InputError

    sets = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--pairs takes SET=PATH (e.g. stance=results/data/probe_pairs/stance.jsonl), got {spec!r}")
        sets[name] = Path(path)
    return sets


def extract_run(run_dir: Path, k_max: int, pairs: dict[str, list[dict]], settings, scratch: Path):
    """{k: {set: (states by (side, pooling), logprobs)}}, and {set: answer token lengths}."""
    from transformers.utils import logging as transformers_logging

    from valuedrift.behaviour.generate import load_for_inference
    from valuedrift.progress import items
    from valuedrift.representation.hidden import answer_lengths, extract

    # snapshots load inside the bar over snapshots: their own loading bars would break into it
    transformers_logging.disable_progress_bar()
    states, lengths = {}, {}
    for k in items(range(k_max + 1), "hidden states"):
        t0 = time.perf_counter()
        model, tokenizer = load_for_inference(str(run_dir / "snapshots" / str(k)), settings.dtype)
        states[k] = {}
        for name, rows in pairs.items():
            (scratch / str(k) / name).mkdir(parents=True)
            states[k][name] = extract(model, tokenizer, rows, settings, scratch / str(k) / name)
            lengths.setdefault(name, answer_lengths(rows, tokenizer))
        log.info("snapshot %d: hidden states of %d texts in %.1f s", k, 2 * sum(map(len, pairs.values())),
                 time.perf_counter() - t0)
        del model
    return states, lengths


def margin_columns(logprobs: np.ndarray, start: np.ndarray, groups, settings) -> dict:
    """The policy's own preference on the pairs, margin = log p(chosen) - log p(rejected): its mean
    with a CI over prompts, the share of pairs where it prefers the chosen answer, and its paired
    change from the start."""
    from valuedrift.representation.probes import mean_ci

    margin, start_margin = logprobs[:, 0] - logprobs[:, 1], start[:, 0] - start[:, 1]
    mean, low, high = mean_ci(margin, groups, settings)
    change, change_low, change_high = mean_ci(margin - start_margin, groups, settings)
    return {"policy_margin": mean, "policy_margin_low": low, "policy_margin_high": high,
            "policy_accuracy": float(np.mean(margin > 0)), "policy_margin_change": change,
            "policy_margin_change_low": change_low, "policy_margin_change_high": change_high}


def data_value_gap(pairs: list[dict]) -> float:
    """The pairs' own value gap where they carry stance labels (chosen_stance, rejected_stance):
    the total variation distance between the chosen and the rejected answers' stance shares
    (1 for support vs oppose, 0 for pairs of one stance); NaN for unlabelled pairs."""
    if not all("chosen_stance" in p and "rejected_stance" in p for p in pairs):
        return float("nan")
    stances = {p[side] for p in pairs for side in ("chosen_stance", "rejected_stance")}
    share = {side: np.array([np.mean([p[side] == s for p in pairs]) for s in sorted(stances)])
             for side in ("chosen_stance", "rejected_stance")}
    return float(0.5 * np.abs(share["chosen_stance"] - share["rejected_stance"]).sum())


def layer_rows(states: dict, name: str, groups, select, pooling: str, layer: int, settings):
    """Point-estimate rows of every snapshot at one layer, and the refit replicates start vs end."""
    from valuedrift.representation.probes import choose_C, fit_probe, refit_replicates, snapshot_metrics

    def at(k, rows):
        return [np.asarray(states[k][name][0][(side, pooling)][layer])[rows] for side in ("chosen", "rejected")]

    evaluate, k_end = ~select, max(states)
    choices = {k: choose_C(*at(k, select), groups[select], settings) for k in states}
    start = at(0, evaluate)
    start_fit = fit_probe(*start, groups[evaluate], choices[0][0], settings)
    rows = []
    for k in sorted(states):
        metrics, _ = snapshot_metrics(*at(k, evaluate), groups[evaluate], start_fit, *start, choices[k][0], settings,
                                      own=start_fit if k == 0 else None)
        rows.append({"k": k, "probe_set": name, "pooling": pooling, "layer": layer, **metrics, "C": choices[k][0],
                     "select_score": choices[0][1]})
    replicates = refit_replicates(start, at(k_end, evaluate), groups[evaluate], choices[0][0], choices[k_end][0],
                                  settings)
    refits = [{"probe_set": name, "pooling": pooling, "layer": layer, "k": k_end, "replicate": i,
               **{column: float(values[i]) for column, values in replicates.items()}}
              for i in range(settings.refits)]
    return rows, refits


def set_rows(states: dict, name: str, pairs: list[dict], lengths, hidden, settings):
    """Every row of one probe set: per snapshot, pooling and layer, and the refit replicates."""
    from valuedrift.representation.probes import length_probe, selection_mask

    groups = prompt_groups(pairs)
    select = selection_mask(groups, settings)
    length_auroc, length_low, length_high = length_probe(lengths[~select], groups[~select], settings)
    common = {"n_pairs": int((~select).sum()), "n_prompts": len(np.unique(groups[~select])),
              "n_select_prompts": len(np.unique(groups[select])), "length_auroc": length_auroc,
              "length_low": length_low, "length_high": length_high,
              "data_value_gap": data_value_gap(pairs)}
    margins = {k: margin_columns(states[k][name][1][~select], states[0][name][1][~select], groups[~select], settings)
               for k in states}
    rows, refits = [], []
    n_layers = states[0][name][0][("chosen", "mean")].shape[0]
    for pooling in hidden.poolings:
        for layer in range(n_layers):
            point, replicates = layer_rows(states, name, groups, select, pooling, layer, settings)
            rows += [{**r, **common, **margins[r["k"]]} for r in point]
            refits += replicates
    return rows, refits


def main(args: argparse.Namespace) -> None:
    import pandas as pd
    import torch

    from valuedrift.config import from_dict
    from valuedrift.io import read_json, read_jsonl, write_csv
    from valuedrift.representation.hidden import HiddenSettings
    from valuedrift.representation.probes import ProbeSettings

    torch.set_num_threads(args.threads)
    settings = json.loads(args.settings)
    hidden = from_dict(HiddenSettings, settings.get("hidden", {}))
    probe = from_dict(ProbeSettings, {"seed": args.seed, **settings.get("probe", {})})
    paths = probe_sets(args.pairs)
    pairs = {name: read_jsonl(path, required=("prompt", "chosen", "rejected")) for name, path in paths.items()}
    run_dir = Path(args.run_dir)
    version = hashlib.sha256(b"".join(p.read_bytes() for p in paths.values()) + args.settings.encode()).hexdigest()[:12]
    metas = [read_json(run_dir / "snapshots" / str(k) / "meta.json") for k in range(args.snapshots + 1)]
    tags = json.loads(args.tags)
    rows, refits = [], []
    with tempfile.TemporaryDirectory(prefix=".hidden-", dir=run_dir) as scratch:
        states, lengths = extract_run(run_dir, args.snapshots, pairs, hidden, Path(scratch))
        for name in pairs:
            t0 = time.perf_counter()
            point, replicates = set_rows(states, name, pairs[name], lengths[name], hidden, probe)
            rows += point
            refits += replicates
            log.info("probe set %s: %d (snapshot, pooling, layer) cells and %d refits in %.1f s", name, len(point),
                     len(replicates), time.perf_counter() - t0)
    rows = [{**tags, "step": metas[r["k"]]["step"], "fraction": metas[r["k"]]["fraction"], **r,
             "probe_version": version} for r in rows]
    write_csv(pd.DataFrame(rows).sort_values(["probe_set", "k", "pooling", "layer"]), args.output)
    write_csv(pd.DataFrame([{**tags, **r, "probe_version": version} for r in refits]), args.refits)
