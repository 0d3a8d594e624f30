"""`valuedrift value-gap`: the value gap of every preference set, measured before training.

For each set and stance s, over its value-laden pairs: gap_s = mean p_s(chosen) - mean p_s(rejected),
with a bootstrap confidence interval that resamples prompts (pairs sharing a question move
together). A set whose pairs differ only in style has gap_s near 0 for every stance, and preference
optimization has no stance to learn from it; a value-gap set has a large gap. `total` is the total
variation distance between the chosen and the rejected answers' mean stance distributions.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import bootstrap_arguments, command_parser

    parser = command_parser(subparsers, "value-gap", __doc__)
    parser.add_argument("judged", nargs="+", help="judged pairs JSONL, one per preference set (named <set>.jsonl)")
    parser.add_argument("--table", required=True, help="CSV to write")
    parser.add_argument("--figure", required=True, help="PNG to write")
    bootstrap_arguments(parser)
    return parser


def gap_rows(name: str, judged, n_boot: int, confidence: float, rng: np.random.Generator) -> list[dict]:
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
    boot_total = 0.5 * np.abs(boot).sum(axis=1)
    low, high = percentile_ci(np.column_stack([boot, boot_total]), confidence)
    estimates = [*gap, 0.5 * np.abs(gap).sum()]
    means = [*[(chosen[:, i].mean(), rejected[:, i].mean()) for i in range(3)], (np.nan, np.nan)]
    return [{**base, "stance": s, "chosen": c, "rejected": r, "gap": g, "low": lo, "high": hi}
            for s, (c, r), g, lo, hi in zip((*STANCES, "total"), means, estimates, low, high)]


def plot_value_gap(table):
    """Bars of gap_s per preference set and stance, with their confidence intervals."""
    import matplotlib.pyplot as plt

    from valuedrift import STANCES

    d = table[table["stance"].isin(STANCES)].dropna(subset=["gap"])
    sets = list(dict.fromkeys(d["pref_data"]))
    fig, ax = plt.subplots(figsize=(1.8 + 1.4 * len(sets), 3.6))
    width = 0.8 / len(STANCES)
    for i, stance in enumerate(STANCES):
        s = d[d["stance"] == stance].set_index("pref_data").reindex(sets)
        x = np.arange(len(sets)) + (i - 1) * width
        err = np.vstack([s["gap"] - s["low"], s["high"] - s["gap"]])
        ax.bar(x, s["gap"], width, yerr=err, capsize=3, label=stance)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(sets)), sets, rotation=20, ha="right")
    ax.set_ylabel("p(stance | chosen) - p(stance | rejected)")
    ax.set_title("Value gap of each preference set (before training)")
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
        rows += gap_rows(Path(path).stem, judged, args.bootstrap_samples, args.confidence, rng)
    table = pd.DataFrame(rows)
    write_csv(table, args.table)
    save(plot_value_gap(table), args.figure)
    for r in rows:
        if r["stance"] == "total" and "gap" in r:
            log.info("%s: value gap (total variation) %.3f [%.3f, %.3f] over %d value-laden pairs",
                     r["pref_data"], r["gap"], r["low"], r["high"], r["n_value_laden"])
