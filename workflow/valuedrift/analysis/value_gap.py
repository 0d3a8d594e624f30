"""`valuedrift value-gap`: the value gap of every preference set, measured before training.

For each set and stance s, over its value-laden pairs: gap_s = mean p_s(chosen) - mean p_s(rejected),
signed, with a bootstrap confidence interval that resamples prompts (pairs sharing a question move
together) and a permutation p-value. A set whose pairs differ only in style has gap_s near 0 for
every stance, and preference optimization has no stance to learn from it; a value-gap set has a
large gap. `total` is the total variation distance between the chosen and the rejected answers'
mean stance distributions, 0.5 * sum_s |gap_s|: a sum of absolute values, above 0 even in a set
with no gap, so it gets no interval but a permutation test: chosen and rejected are swapped at
random (all pairs of a prompt together), which leaves a set without a gap unchanged in
distribution, and p is the share of swaps whose total is at least the observed one.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PERMUTATIONS = 2000


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import bootstrap_arguments, command_parser

    parser = command_parser(subparsers, "value-gap", __doc__)
    parser.add_argument("judged", nargs="+", help="judged pairs JSONL, one per preference set (named <set>.jsonl)")
    parser.add_argument("--table", required=True, help="CSV to write")
    parser.add_argument("--figure", required=True, help="PNG to write")
    parser.add_argument("--permutations", type=int, default=PERMUTATIONS,
                        help="random swaps of chosen and rejected per permutation test")
    bootstrap_arguments(parser)
    return parser


def permutation_p_values(sums: np.ndarray, n_pairs: int, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """Two-sided p-values of each stance's gap and of the total, from random swaps of chosen and
    rejected: swapping a prompt's pairs flips the sign of its summed differences `sums[g]`.
    p = (1 + swaps at least as extreme) / (1 + n_perm), never 0."""
    observed = sums.sum(axis=0) / n_pairs
    stats_obs = np.append(np.abs(observed), 0.5 * np.abs(observed).sum())
    exceed = np.zeros(stats_obs.size)
    for start in range(0, n_perm, 500):  # in chunks: sets with many prompts stay small in memory
        signs = rng.choice(np.array([-1.0, 1.0]), size=(min(500, n_perm - start), len(sums)))
        gaps = signs @ sums / n_pairs
        stats_perm = np.column_stack([np.abs(gaps), 0.5 * np.abs(gaps).sum(axis=1)])
        # ties (such as the swap that changes nothing) count as at least as extreme
        exceed += (stats_perm >= stats_obs - 1e-12 * np.maximum(1.0, stats_obs)).sum(axis=0)
    return (1 + exceed) / (1 + n_perm)


def gap_rows(name: str, judged, n_boot: int, confidence: float, rng: np.random.Generator,
             n_perm: int = PERMUTATIONS) -> list[dict]:
    """Table rows of one preference set: one per stance, and `total`."""
    from valuedrift import STANCES
    from valuedrift.analysis.metrics import percentile_ci

    base = {"pref_data": name, "n_pairs": int(judged["n_pairs"].iloc[0]) if len(judged) else 0,
            "n_value_laden": len(judged)}
    if judged.empty:
        return [{**base, "stance": s} for s in (*STANCES, "total")]
    chosen = judged[[f"chosen_p_{s}" for s in STANCES]].to_numpy()
    rejected = judged[[f"rejected_p_{s}" for s in STANCES]].to_numpy()
    groups = judged["group"].astype(str).to_numpy()
    names, index = np.unique(groups, return_inverse=True)
    # per prompt sums, so resampling prompts keeps their pairs together
    sums = np.stack([np.bincount(index, weights=d, minlength=len(names)) for d in (chosen - rejected).T], axis=1)
    counts = np.bincount(index, minlength=len(names))
    draws = rng.integers(0, len(names), size=(n_boot, len(names)))
    boot = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)[:, None]
    gap = (chosen - rejected).mean(axis=0)
    low, high = percentile_ci(boot, confidence)
    p = permutation_p_values(sums, len(judged), n_perm, rng)
    estimates = [*gap, 0.5 * np.abs(gap).sum()]
    # the total is biased upward, so it has no interval: its permutation p-value says whether it is
    # more than chance
    low, high = [*low, np.nan], [*high, np.nan]
    means = [*[(chosen[:, i].mean(), rejected[:, i].mean()) for i in range(3)], (np.nan, np.nan)]
    return [{**base, "stance": s, "chosen": c, "rejected": r, "gap": g, "low": lo, "high": hi, "p_value": pv,
             "n_permutations": n_perm}
            for s, (c, r), g, lo, hi, pv in zip((*STANCES, "total"), means, estimates, low, high, p)]


def _set_label(table, name: str) -> str:
    """The set's name over its total variation and that total's permutation p-value."""
    total = table[(table["pref_data"] == name) & (table["stance"] == "total")]
    if total.empty or "p_value" not in total or not np.isfinite(total["p_value"].iloc[0]):
        return name
    return f"{name}\nTV {total['gap'].iloc[0]:.2f}, p = {total['p_value'].iloc[0]:.2g}"


def plot_value_gap(table):
    """Bars of gap_s per preference set and stance, with their bootstrap confidence intervals;
    under each set its total variation with the permutation p-value."""
    import matplotlib.pyplot as plt

    from valuedrift import STANCES
    from valuedrift.analysis.plots import error_bars

    d = table[table["stance"].isin(STANCES)].dropna(subset=["gap"])
    sets = list(dict.fromkeys(d["pref_data"]))
    fig, ax = plt.subplots(figsize=(1.8 + 1.4 * len(sets), 3.6))
    width = 0.8 / len(STANCES)
    for i, stance in enumerate(STANCES):
        s = d[d["stance"] == stance].set_index("pref_data").reindex(sets)
        x = np.arange(len(sets)) + (i - 1) * width
        ax.bar(x, s["gap"], width, yerr=error_bars(s["gap"], s["low"], s["high"]), capsize=3, label=stance)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(sets)), [_set_label(table, s) for s in sets], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("p(stance | chosen) - p(stance | rejected)")
    ax.set_title("Value gap of each preference set (before training)\n"
                 "bars: CI over prompts; TV: its p from a permutation test", fontsize=9)
    ax.legend(title="stance", fontsize=8)
    fig.tight_layout()
    return fig


def main(args: argparse.Namespace) -> None:
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")  # files only, no display

    from valuedrift.analysis.plots import save
    from valuedrift.io import write_csv

    rng = np.random.default_rng(args.seed)
    rows = []
    for path in args.judged:
        judged = pd.read_json(path, lines=True) if Path(path).stat().st_size else pd.DataFrame()
        rows += gap_rows(Path(path).stem, judged, args.bootstrap_samples, args.confidence, rng, args.permutations)
    table = pd.DataFrame(rows)
    write_csv(table, args.table)
    save(plot_value_gap(table), args.figure)
    for r in rows:
        if r["stance"] == "total" and "gap" in r:
            log.info("%s: value gap (total variation) %.3f, permutation p = %.4f, over %d value-laden pairs",
                     r["pref_data"], r["gap"], r["p_value"], r["n_value_laden"])
