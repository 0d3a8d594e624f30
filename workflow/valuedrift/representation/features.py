"""`valuedrift probe-features`: sparse dictionaries of a run's start and end at each probe set's peak layer.

The peak layer of a probe set is the one the run's representation probe chose on its selection
prompts (its `probes.csv`: the start's best selection score among the transformer layers). At each
such layer, the token activations of every answer of the probe pairs, at the start (snapshot 0)
and at the end (snapshot K), feed (valuedrift.representation.dictionaries):

- an SAE trained on the start's activations (SAELens, TopK): its reconstruction of held-out
  prompts' tokens at the start and at the end (how well the start's dictionary still explains the
  end), L0, dead features;
- feature activation shifts: per feature, the preference effect = mean over pairs of its mean
  activation on the chosen answer minus on the rejected one, at the start and at the end (the
  end's activations through the start's SAE); a t-test across prompts with BH across features
  counts the preference features of each, their overlap and the correlation of the effects;
- a start-vs-end crosscoder: shares of shared, start-only and end-only features (relative decoder
  norm), its reconstruction of both, and how many features of each kind carry a preference effect.

One row per probe set in `--output`; every feature's effects in `--shifts`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FDR = 0.05


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "probe-features", __doc__)
    parser.add_argument("--run-dir", required=True, help="the run's folder (snapshots/0..K inside)")
    parser.add_argument("--snapshots", type=int, required=True, help="K: the last snapshot")
    parser.add_argument("--pairs", required=True, nargs="+", metavar="SET=PATH", help="held-out probe pairs per set")
    parser.add_argument("--probes", required=True, help="the run's probes.csv (for each set's peak layer)")
    parser.add_argument("--settings", default="{}", help="JSON: fields of DictionarySettings, max_tokens, hidden")
    parser.add_argument("--tags", default="{}", help="JSON object copied into every row (run identifiers)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", required=True, help="features CSV to write (one row per probe set)")
    parser.add_argument("--shifts", required=True, help="per-feature CSV to write")
    return parser


def peak_layers(probes) -> dict[str, int]:
    """Probe set -> the start's best selection score among the transformer layers (mean pooling
    where probed, as the representation report's peak)."""
    pooling = "mean" if (probes["pooling"] == "mean").any() else probes["pooling"].iloc[0]
    start = probes[(probes["k"] == 0) & (probes["layer"] > 0) & (probes["pooling"] == pooling)]
    return {name: int(rows.loc[rows["select_score"].idxmax(), "layer"]) for name, rows in start.groupby("probe_set")}


def token_states(model, tokenizer, pairs: list[dict], layers: list[int], max_length: int, batch_size: int):
    """{layer: (tokens, hidden) activations of every answer token}, and each token's text (pair i's
    chosen answer is text 2i, its rejected 2i + 1)."""
    from valuedrift.representation.hidden import forward_batches, texts_of

    ids, starts, _ = texts_of(pairs, tokenizer, max_length)
    out, texts = {layer: [] for layer in layers}, []
    for batch, output in forward_batches(model, tokenizer, ids, list(range(len(ids))), batch_size):
        hidden = output.hidden_states
        for j, i in enumerate(batch):
            for layer in layers:
                out[layer].append(hidden[layer][j, starts[i]:len(ids[i])].float().cpu().numpy())
            texts += [i] * (len(ids[i]) - starts[i])
    return {layer: np.concatenate(rows) for layer, rows in out.items()}, np.array(texts)


def preference_effects(codes: np.ndarray, texts: np.ndarray, groups: np.ndarray):
    """Per feature: the mean over pairs of (mean activation on the chosen answer - on the rejected),
    and a two-sided p-value of a one-sample t-test across prompts (pairs of a prompt averaged first,
    so correlated pairs do not count twice)."""
    import pandas as pd
    from scipy import stats

    per_text = pd.DataFrame(codes).groupby(texts).mean()
    n_pairs = len(groups)
    per_text = per_text.reindex(range(2 * n_pairs), fill_value=0.0).to_numpy()
    difference = per_text[0::2] - per_text[1::2]                     # (pairs, features)
    by_prompt = pd.DataFrame(difference).groupby(groups).mean().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        p = stats.ttest_1samp(by_prompt, 0.0, axis=0).pvalue
    return difference.mean(axis=0), np.where(np.isfinite(p), p, 1.0)


def _subsample(n: int, limit: int, seed: int) -> np.ndarray:
    return np.arange(n) if n <= limit else np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def layer_dictionaries(start: np.ndarray, end: np.ndarray, train: np.ndarray, settings, max_tokens: int) -> dict:
    """The SAE and the crosscoder of one layer, trained on the training prompts' tokens."""
    from valuedrift.representation.dictionaries import (crosscoder_codes, crosscoder_reconstruction, feature_kinds,
                                                        fraction_explained, sae_codes, sae_reconstruction, scale,
                                                        train_crosscoder, train_sae)

    rows = np.flatnonzero(train)[_subsample(int(train.sum()), max_tokens, settings.seed)]
    held = ~train
    s0, s1 = scale(start[rows]), scale(end[rows])
    t0 = time.perf_counter()
    sae = train_sae(start[rows] * s0, settings)
    codes = sae_codes(sae, start[rows] * s0)
    crosscoder = train_crosscoder(start[rows] * s0, end[rows] * s1, settings)
    cc_alive = (crosscoder_codes(crosscoder, start[rows] * s0, end[rows] * s1) > 0).any(axis=0)
    cc_start, cc_end = crosscoder_reconstruction(crosscoder, start[held] * s0, end[held] * s1)
    log.info("SAE and crosscoder on %d tokens in %.1f s", len(rows), time.perf_counter() - t0)
    kinds = feature_kinds(crosscoder, cc_alive, settings)
    alive = kinds != "dead"
    return {"sae": sae, "scales": (s0, s1), "crosscoder": crosscoder, "kinds": kinds, "metrics": {
        "sae_features": codes.shape[1], "sae_l0": float((codes > 0).sum(axis=1).mean()),
        "sae_dead_share": float(np.mean(~(codes > 0).any(axis=0))), "train_tokens": len(rows),
        "sae_fve_start": fraction_explained(start[held] * s0, sae_reconstruction(sae, start[held] * s0)),
        "sae_fve_end": fraction_explained(end[held] * s0, sae_reconstruction(sae, end[held] * s0)),
        "crosscoder_fve_start": fraction_explained(start[held] * s0, cc_start),
        "crosscoder_fve_end": fraction_explained(end[held] * s1, cc_end),
        **{f"share_{kind.replace('-', '_')}": float(np.mean(kinds[alive] == kind)) if alive.any() else np.nan
           for kind in ("shared", "start-only", "end-only")}}}


def set_rows(name: str, layer: int, fitted: dict, start, end, texts, groups) -> tuple[dict, list[dict]]:
    """One probe set's row (preference features and their shifts) and its per-feature rows."""
    from valuedrift.analysis.metrics import benjamini_hochberg
    from valuedrift.representation.dictionaries import crosscoder_codes, sae_codes

    s0, s1 = fitted["scales"]
    effect_start, p_start = preference_effects(sae_codes(fitted["sae"], start * s0), texts, groups)
    effect_end, p_end = preference_effects(sae_codes(fitted["sae"], end * s0), texts, groups)
    cc_effect, cc_p = preference_effects(crosscoder_codes(fitted["crosscoder"], start * s0, end * s1), texts, groups)
    q_start, q_end, cc_q = (benjamini_hochberg(p) for p in (p_start, p_end, cc_p))
    pref_start, pref_end = q_start < FDR, q_end < FDR
    norm = np.linalg.norm(effect_start)
    row = {"probe_set": name, "layer": layer, **fitted["metrics"],
           "pref_features_start": int(pref_start.sum()), "pref_features_end": int(pref_end.sum()),
           "pref_features_both": int((pref_start & pref_end).sum()),
           "effect_correlation": float(np.corrcoef(effect_start, effect_end)[0, 1]) if norm > 0 else np.nan,
           "effect_shift": float(np.linalg.norm(effect_end - effect_start) / norm) if norm > 0 else np.nan,
           **{f"pref_{kind.replace('-', '_')}": int(((cc_q < FDR) & (fitted["kinds"] == kind)).sum())
              for kind in ("shared", "start-only", "end-only")}}
    features = [{"probe_set": name, "layer": layer, "feature": f, "effect_start": effect_start[f],
                 "effect_end": effect_end[f], "q_start": q_start[f], "q_end": q_end[f]}
                for f in range(len(effect_start))]
    return row, features


def main(args: argparse.Namespace) -> None:
    import pandas as pd
    import torch

    from valuedrift.behaviour.generate import load_for_inference
    from valuedrift.config import from_dict
    from valuedrift.io import read_jsonl, write_csv
    from valuedrift.representation.dictionaries import DictionarySettings
    from valuedrift.representation.probe_run import probe_sets, prompt_groups

    torch.set_num_threads(args.threads)
    options = json.loads(args.settings)
    hidden = options.pop("hidden", {})
    max_tokens = options.pop("max_tokens", 20000)
    settings = from_dict(DictionarySettings, options)
    pairs = {name: read_jsonl(path, required=("prompt", "chosen", "rejected")) for name, path in probe_sets(args.pairs).items()}
    peaks = peak_layers(pd.read_csv(args.probes))
    layers = sorted(set(peaks.values()))
    states = {}
    for k in (0, args.snapshots):
        model, tokenizer = load_for_inference(str(Path(args.run_dir) / "snapshots" / str(k)), hidden.get("dtype", "auto"))
        states[k] = {name: token_states(model, tokenizer, rows, layers, hidden.get("max_length", 2048),
                                        hidden.get("batch_size", 16)) for name, rows in pairs.items()}
        del model
    rows, features = [], []
    held_out = {name: np.random.default_rng([settings.seed, 6]).random(len(np.unique(prompt_groups(p)))) < 0.2
                for name, p in pairs.items()}  # a fifth of each set's prompts: reconstruction is tested there
    for layer in layers:
        def stacked(k):
            return np.concatenate([states[k][name][0][layer] for name in pairs])
        train = np.concatenate([~held_out[name][prompt_groups(p)[states[0][name][1] // 2]] for name, p in pairs.items()])
        fitted = layer_dictionaries(stacked(0), stacked(args.snapshots), train, settings, max_tokens)
        for name in (n for n in pairs if peaks[n] == layer):
            (start, texts), (end, _) = states[0][name], states[args.snapshots][name]
            row, shifts = set_rows(name, layer, fitted, start[layer], end[layer], texts, prompt_groups(pairs[name]))
            rows.append(row)
            features += shifts
    tags = json.loads(args.tags)
    write_csv(pd.DataFrame([{**tags, **r} for r in rows]), args.output)
    write_csv(pd.DataFrame([{**tags, **r} for r in features]), args.shifts)
