"""`valuedrift feature-report`: every run's SAE and crosscoder rows in one table, and its figure.

The figure has one panel per probe set: per run, the crosscoder's shares of shared, start-only and
end-only features (stacked), and beside each bar the correlation of the SAE features' preference
effects at the start and at the end (1: the same features carry the preference as before).
"""

from __future__ import annotations

import argparse

from valuedrift.representation.layers import RUN


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "feature-report", __doc__)
    parser.add_argument("features", nargs="+", help="features.csv of every run")
    parser.add_argument("--table", required=True, help="combined CSV to write")
    parser.add_argument("--figure", required=True, help="PNG to write")
    return parser


def plot_feature_split(table):
    """Stacked crosscoder feature kinds per run, one panel per probe set."""
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(table["probe_set"]))
    fig, axes = plt.subplots(1, len(sets), figsize=(1.5 + 0.9 * table.groupby("probe_set").size().max() * len(sets), 3.6),
                             squeeze=False, sharey=True)
    kinds = (("share_shared", "shared", "0.7"), ("share_start_only", "start-only", "C0"), ("share_end_only", "end-only", "C3"))
    for ax, name in zip(axes[0], sets):
        d = table[table["probe_set"] == name].sort_values(["pref_data", "algorithm", "seed"])
        labels = [f"{r.algorithm}\n{r.pref_data}\nseed {r.seed}" for r in d.itertuples()]
        bottom = 0
        for column, label, color in kinds:
            ax.bar(labels, d[column], bottom=bottom, color=color, label=label)
            bottom = bottom + d[column].to_numpy()
        for i, r in enumerate(d.itertuples()):
            ax.text(i, 1.02, f"r={r.effect_correlation:.2f}", ha="center", fontsize=7)
        ax.set_title(f"{name} pairs (layer {', '.join(map(str, sorted(set(d['layer']))))})", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_ylim(0, 1.12)
    axes[0, 0].set_ylabel("share of live crosscoder features")
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Start vs end crosscoder; r = correlation of SAE preference effects, start vs end", fontsize=10)
    fig.tight_layout()
    return fig


def main(args: argparse.Namespace) -> None:
    import matplotlib
    import pandas as pd

    from valuedrift.analysis.plots import save
    from valuedrift.io import write_csv

    matplotlib.use("Agg")  # files only, no display
    table = pd.concat([pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in args.features], ignore_index=True)
    write_csv(table.sort_values([c for c in RUN + ["seed", "probe_set"] if c in table]), args.table)
    save(plot_feature_split(table), args.figure)
