"""`valuedrift representation-report`: every run's probe table in one, the study's summary and the figures.

The summary has one row per run (mean pooling): the peak layer, chosen on the START model's inner
cross-validation scores (never on test folds) among the transformer layers (not the embeddings); the AUROC there at the start and the end of the run,
their paired change with its bootstrap interval and the verdict (enhances / preserves / degrades:
only when the interval excludes zero); and at the end, at the peak layer, linear CKA with the start,
the cosine of the difference-of-means directions, probe transfer, selectivity over shuffled labels
and the length-only baseline. Figures read only the combined table.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

# one row per run and training seed (the representation study's own statistics pool no seeds yet)
RUN = ["model", "seed", "sft_data", "algorithm", "pref_data", "phase"]


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "representation-report", __doc__)
    parser.add_argument("probes", nargs="+", help="probes.csv of every run")
    parser.add_argument("--table", required=True, help="combined CSV to write")
    parser.add_argument("--summary", required=True, help="per-run summary CSV to write")
    parser.add_argument("--auroc-by-layer", required=True, help="PNG to write")
    parser.add_argument("--peak-change", required=True, help="PNG to write")
    parser.add_argument("--cka", required=True, help="PNG to write")
    return parser


def run_label(row) -> str:
    name = "SFT" if row["phase"] == "sft" else f"{row['algorithm']} / {row['pref_data']}"
    return f"{name} (seed {row['seed']})" if "seed" in row else name


def peak_layers(table):
    """Run -> peak layer: the best inner-CV score of the run's start (k=0), mean pooling, among the
    transformer layers. Layer 0, the token embeddings, is not a candidate: mean-pooled, it is a bag of
    words, which separates texts by their vocabulary rather than by what the model makes of them."""
    start = table[(table["k"] == 0) & (table["pooling"] == "mean") & (table["layer"] > 0)]
    best = start.loc[start.groupby(RUN, dropna=False)["select_score"].idxmax()]
    return best.set_index(RUN)["layer"]


def summary(table):
    import pandas as pd

    from valuedrift.representation.probes import verdict

    rows = []
    peaks = peak_layers(table)
    for key, run in table[table["pooling"] == "mean"].groupby(RUN, dropna=False):
        layer = peaks.loc[key]
        run = run[run["layer"] == layer]
        start, end = run[run["k"] == 0].iloc[0], run[run["k"] == run["k"].max()].iloc[0]
        rows.append({**dict(zip(RUN, key)), "peak_layer": int(layer), "auroc_start": start["auroc"],
                     "auroc_end": end["auroc"], "change": end["delta_auroc"], "change_low": end["delta_low"],
                     "change_high": end["delta_high"], "verdict": verdict(end["delta_low"], end["delta_high"]),
                     "cka_end": end["cka"], "dom_cosine_end": end["dom_cosine"],
                     "transfer_auroc_end": end["transfer_auroc"], "selectivity_end": end["selectivity"],
                     "length_auroc": end["length_auroc"]})
    return pd.DataFrame(rows)


def _runs(table):
    d = table[table["pooling"] == "mean"].copy()
    d["run"] = d.apply(run_label, axis=1)
    return d, list(dict.fromkeys(d.sort_values(["phase", "pref_data", "algorithm"], ascending=[False, True, True])["run"]))


def plot_auroc_by_layer(table, max_columns: int = 4):
    """AUROC per layer at the start and the end of every run, with intervals and the length baseline."""
    import matplotlib.pyplot as plt

    d, runs = _runs(table)
    columns = min(max_columns, len(runs))
    rows = -(-len(runs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), sharey=True, squeeze=False)
    for ax, run in zip(axes.flat, runs):
        r = d[d["run"] == run]
        for k, label, color in ((0, "start", "grey"), (r["k"].max(), "end", "C0")):
            s = r[r["k"] == k].sort_values("layer")
            ax.plot(s["layer"], s["auroc"], marker="o", color=color, label=label)
            ax.fill_between(s["layer"], s["auroc_low"], s["auroc_high"], color=color, alpha=0.2)
        ax.axhline(r["length_auroc"].iloc[0], color="C3", ls="--", lw=1, label="length only")
        ax.axhline(0.5, color="black", lw=0.5)
        ax.set_title(run, fontsize=9)
        ax.set_xlabel("layer")
    for ax in axes.flat[len(runs):]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel("probe AUROC")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Linear separability of chosen vs rejected, by layer")
    fig.tight_layout()
    return fig


def _per_algorithm(table, draw, xlabel: str, ylabel: str):
    """One panel per preference set, one line per algorithm: draw(ax, run rows, color, algorithm)."""
    import matplotlib.pyplot as plt

    d = table[(table["pooling"] == "mean") & (table["phase"] == "preference")]
    sets = list(dict.fromkeys(d["pref_data"])) or [""]
    fig, axes = plt.subplots(1, len(sets), figsize=(4 * len(sets), 3.2), sharey=True, squeeze=False)
    for ax, pref in zip(axes[0], sets):
        for i, (algorithm, r) in enumerate(d[d["pref_data"] == pref].groupby("algorithm")):
            for j, (_, seed_rows) in enumerate(r.groupby("seed")):  # one line per seed, one legend entry
                draw(ax, seed_rows, f"C{i}", algorithm if j == 0 else None)
        ax.set_title(pref)
        ax.set_xlabel(xlabel)
    axes[0, 0].set_ylabel(ylabel)
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_peak_change(table):
    """Change of the peak layer's AUROC from the start, through each preference run."""
    peaks = peak_layers(table)

    def draw(ax, r, color, algorithm):
        s = r[r["layer"] == peaks.loc[tuple(r[RUN].iloc[0])]].sort_values("fraction")
        ax.plot(s["fraction"], s["delta_auroc"], marker="o", color=color, label=algorithm)
        ax.fill_between(s["fraction"], s["delta_low"], s["delta_high"], color=color, alpha=0.15)
        ax.axhline(0, color="black", lw=0.8)

    return _per_algorithm(table, draw, "fraction of the phase", "AUROC change at the peak layer")


def plot_cka(table):
    """Linear CKA between the end of each preference run and its start, by layer."""

    def draw(ax, r, color, algorithm):
        s = r[r["k"] == r["k"].max()].sort_values("layer")
        ax.plot(s["layer"], s["cka"], marker="o", color=color, label=algorithm)

    return _per_algorithm(table, draw, "layer", "linear CKA, end vs start")


def main(args: argparse.Namespace) -> None:
    import matplotlib
    import pandas as pd

    from valuedrift.analysis.plots import save
    from valuedrift.io import write_csv

    matplotlib.use("Agg")  # files only, no display
    table = pd.concat([pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in args.probes], ignore_index=True)
    table["pref_data"] = table["pref_data"].fillna("")
    write_csv(table, args.table)
    runs = summary(table)
    write_csv(runs, args.summary)
    save(plot_auroc_by_layer(table), args.auroc_by_layer)
    save(plot_peak_change(table), args.peak_change)
    save(plot_cka(table), args.cka)
    for r in runs.itertuples():
        log.info("%s/%s %s: peak layer %d, AUROC %.3f -> %.3f (%+.3f [%+.3f, %+.3f]) %s", r.sft_data, r.pref_data,
                 r.algorithm, r.peak_layer, r.auroc_start, r.auroc_end, r.change, r.change_low, r.change_high, r.verdict)
