"""`valuedrift representation-report`: every run's probe tables in one, the corrected layer-wise
table, the per-run summary and the figures.

- `--table`: every run's point estimates (valuedrift.representation.probe_run) in one CSV;
- `--layers`: one row per run configuration (seeds pooled), probe set, pooling and layer: the
  change of the own and the transferred probe's AUROC from the start to the end, refit-aware
  intervals, BH q-values across layers and runs, verdicts (valuedrift.representation.layers);
- `--summary`: that row at each run's peak layer (chosen on the selection prompts), beside the
  policy's own margin on the probe set and the set's value gap.

Figures read only these tables.
"""

from __future__ import annotations

import argparse
import logging
import textwrap

from valuedrift.representation.layers import RUN

log = logging.getLogger(__name__)


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "representation-report", __doc__)
    parser.add_argument("--probes", nargs="+", required=True, help="probes.csv of every run")
    parser.add_argument("--refits", nargs="+", required=True, help="refits.csv of every run")
    parser.add_argument("--table", required=True, help="combined point estimates CSV to write")
    parser.add_argument("--layers", required=True, help="layer-wise corrected CSV to write")
    parser.add_argument("--summary", required=True, help="per-run summary CSV to write")
    parser.add_argument("--auroc-by-layer", required=True, help="PNG to write")
    parser.add_argument("--layer-changes", required=True, help="PNG to write")
    parser.add_argument("--peak-change", required=True, help="PNG to write")
    parser.add_argument("--cka", required=True, help="PNG to write")
    parser.add_argument("--confidence", type=float, default=0.95)
    return parser


def run_label(row, prefix: tuple[str, ...] = ()) -> str:
    """A run's row label; `prefix` names the identifiers that differ between the table's runs
    (model, SFT set), which must then be part of the label to tell the runs apart."""
    head = " ".join(str(row[key]) for key in prefix)
    own = "SFT" if row["phase"] == "sft" else f"{row['algorithm']} / {row['pref_data']}"
    return f"{head}: {own}" if head else own


def _ordered_runs(d):
    prefix = tuple(key for key in ("model", "sft_data") if d[key].nunique() > 1)
    d = d.assign(run=d.apply(run_label, axis=1, prefix=prefix))
    order = d.sort_values([*prefix, "phase", "pref_data", "algorithm"],
                          ascending=[True] * len(prefix) + [False, True, True])["run"]
    return d, list(dict.fromkeys(order))


def _interval_note(layers) -> str:
    seeds = sorted(set(layers["n_seeds"]))
    over = "prompts (probes refitted)" + (f" and {'/'.join(map(str, seeds))} training seeds" if max(seeds) > 1
                                          else "; one training seed: seed-to-seed variance not included")
    return f"intervals and q-values: bootstrap over {over}; BH across layers and runs"


def plot_layer_changes(layers, pooling: str = "mean"):
    """Heatmap per probe set: runs x layers, the own probe's AUROC change from start to end; a cell is
    marked where the change is significant after BH (+/-), R where only transfer falls (rotation)."""
    import matplotlib.pyplot as plt

    d, runs = _ordered_runs(layers[layers["pooling"] == pooling])
    sets = list(dict.fromkeys(d["probe_set"]))
    fig, axes = plt.subplots(1, len(sets), figsize=(2.5 + 0.8 * d["layer"].nunique() * len(sets), 1.6 + 0.35 * len(runs)),
                             squeeze=False, layout="constrained")
    limit = max(0.02, float(d["own_change"].abs().max()))
    for ax, name in zip(axes[0], sets):
        grid = d[d["probe_set"] == name].pivot(index="run", columns="layer", values="own_change").reindex(runs)
        image = ax.imshow(grid.to_numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        for r in d[d["probe_set"] == name].itertuples():
            mark = {"enhances": "+", "degrades": "-"}.get(r.verdict, "R" if r.geometry == "rotation" else "")
            ax.text(r.layer, runs.index(r.run), mark, ha="center", va="center", fontsize=9)
        ax.set_xticks(range(grid.shape[1]), grid.columns)
        ax.set_yticks(range(len(runs)), runs if ax is axes[0, 0] else [""] * len(runs), fontsize=8)
        ax.set_title(f"{name} probe", fontsize=10)
        ax.set_xlabel("layer")
    fig.colorbar(image, ax=axes[0, -1], label="AUROC change, end - start")
    note = "\n".join(textwrap.wrap(_interval_note(layers), 90))
    fig.suptitle(f"Probe AUROC change by layer ({pooling} pooling); +/- significant, R rotation\n{note}", fontsize=9)
    return fig


def plot_auroc_by_layer(layers, pooling: str = "mean", max_columns: int = 4):
    """AUROC per layer at the start and the end of every run, one line per probe set."""
    import matplotlib.pyplot as plt

    d, runs = _ordered_runs(layers[layers["pooling"] == pooling])
    columns = min(max_columns, len(runs))
    rows = -(-len(runs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), sharey=True, squeeze=False)
    for ax, run in zip(axes.flat, runs):
        for i, (name, s) in enumerate(d[d["run"] == run].groupby("probe_set", sort=False)):
            s = s.sort_values("layer")
            ax.plot(s["layer"], s["auroc_start"], color=f"C{i}", ls=":", marker=".", label=f"{name}, start")
            ax.plot(s["layer"], s["auroc_end"], color=f"C{i}", marker="o", label=f"{name}, end")
        ax.axhline(0.5, color="black", lw=0.5)
        ax.set_title(run, fontsize=9)
        ax.set_xlabel("layer")
    for ax in axes.flat[len(runs):]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel("probe AUROC (held-out prompts)")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle("Linear separability of chosen vs rejected, by layer (seeds averaged)")
    fig.tight_layout()
    return fig


def plot_peak_change(table, peaks, pooling: str = "mean"):
    """Through each preference run, per probe set: the change of the peak layer's AUROC from the start
    (top) beside the policy's own margin change on the same pairs (bottom). Point estimates: the
    intervals of the last snapshot are in the layer table."""
    import matplotlib.pyplot as plt

    d = table[(table["pooling"] == pooling) & (table["phase"] == "preference")]
    sets = list(dict.fromkeys(d["probe_set"])) or [""]
    prefs = list(dict.fromkeys(d["pref_data"])) or [""]
    fig, axes = plt.subplots(2, len(sets) * len(prefs), figsize=(3.6 * len(sets) * len(prefs), 5.6), squeeze=False,
                             sharex=True)
    for j, (name, pref) in enumerate((n, p) for n in sets for p in prefs):
        for i, (algorithm, r) in enumerate(d[(d["probe_set"] == name) & (d["pref_data"] == pref)].groupby("algorithm")):
            peak = peaks.loc[tuple(r[RUN + ["probe_set", "pooling"]].iloc[0])]
            s = r[r["layer"] == peak].groupby("fraction")
            start = r[(r["layer"] == peak) & (r["k"] == 0)]["auroc"].mean()
            axes[0, j].plot(s["auroc"].mean().index, s["auroc"].mean() - start, marker="o", color=f"C{i}", label=algorithm)
            axes[1, j].plot(s["policy_margin_change"].mean().index, s["policy_margin_change"].mean(), marker="o",
                            color=f"C{i}", label=algorithm)
        axes[0, j].set_title(f"{name} probe, trained on {pref}", fontsize=9)
        axes[1, j].set_xlabel("fraction of the phase")
        for ax in axes[:, j]:
            ax.axhline(0, color="black", lw=0.8)
    axes[0, 0].set_ylabel("AUROC change at the peak layer")
    axes[1, 0].set_ylabel("policy margin change (nats)")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle("Representation against behaviour on the probe pairs (seeds averaged; point estimates)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_cka(table, pooling: str = "mean"):
    """Linear CKA between the end of each preference run and its start, by layer, per probe set."""
    import matplotlib.pyplot as plt

    d = table[(table["pooling"] == pooling) & (table["phase"] == "preference")]
    d = d[d["k"] == d.groupby(RUN + ["seed"], dropna=False)["k"].transform("max")]
    panels = list(dict.fromkeys(zip(d["probe_set"], d["pref_data"]))) or [("", "")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), sharey=True, squeeze=False)
    for ax, (name, pref) in zip(axes[0], panels):
        r = d[(d["probe_set"] == name) & (d["pref_data"] == pref)]
        for i, (algorithm, s) in enumerate(r.groupby("algorithm")):
            s = s.groupby("layer")["cka"].mean()
            ax.plot(s.index, s, marker="o", color=f"C{i}", label=algorithm)
        ax.set_title(f"{name} pairs, trained on {pref}", fontsize=9)
        ax.set_xlabel("layer")
    axes[0, 0].set_ylabel("linear CKA, end vs start")
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def read_tables(paths):
    import pandas as pd

    table = pd.concat([pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in paths], ignore_index=True)
    for column in ("pref_data", "algorithm"):
        table[column] = table[column].astype(object).fillna("")
    return table


def main(args: argparse.Namespace) -> None:
    import matplotlib

    from valuedrift.analysis.plots import save
    from valuedrift.io import write_csv
    from valuedrift.representation.layers import layer_table, peak_layers, summary

    matplotlib.use("Agg")  # files only, no display
    table, refits = read_tables(args.probes), read_tables(args.refits)
    write_csv(table, args.table)
    layers = layer_table(table, refits, args.confidence)
    write_csv(layers, args.layers)
    runs = summary(table, layers)
    write_csv(runs, args.summary)
    save(plot_auroc_by_layer(layers), args.auroc_by_layer)
    save(plot_layer_changes(layers), args.layer_changes)
    save(plot_peak_change(table, peak_layers(table)), args.peak_change)
    save(plot_cka(table), args.cka)
    for r in runs.itertuples():
        log.info("%s %s/%s %s (%s pooling, %d seeds): peak layer %d, AUROC %.3f -> %.3f (%+.3f [%+.3f, %+.3f], q %.3f) "
                 "%s, %s; policy margin %+.2f -> %+.2f", r.probe_set, r.sft_data, r.pref_data, r.algorithm, r.pooling,
                 r.n_seeds, r.peak_layer, r.auroc_start, r.auroc_end, r.own_change, r.own_low, r.own_high, r.own_q,
                 r.verdict, r.geometry, r.policy_margin_start, r.policy_margin_end)
