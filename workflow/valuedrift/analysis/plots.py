"""`valuedrift plot`: the report figures. Each plot function takes an aggregated table and
returns a matplotlib figure; nothing here reads per-answer data.

Progress axis: the SFT phase runs from 0 to 1, the preference phase that starts from its end
from 1 to 2, so a stance's whole post-training trajectory reads left to right.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

STANCE_COLORS = {"support": "#1b9e77", "neutral": "#7570b3", "oppose": "#d95f02"}
LINESTYLES = ["--", ":", "-.", (0, (5, 1)), (0, (1, 1)), (0, (3, 1, 1, 1))]


def _progress(d):
    return d["fraction"] + (d["phase"] == "preference")


def _draw_panel(ax, d, pref_sets: list[str]) -> None:
    """SFT trajectory (solid) then each preference run from its end (one line style per set)."""
    for stance, color in STANCE_COLORS.items():
        s = d[d["stance"] == stance]
        segments = [(s[s["phase"] == "sft"], "-")]
        segments += [(s[(s["phase"] == "preference") & (s["pref_data"] == p)], LINESTYLES[i % len(LINESTYLES)])
                     for i, p in enumerate(pref_sets)]
        for seg, style in segments:
            if seg.empty:
                continue
            seg = seg.sort_values("fraction")
            x = _progress(seg)
            ax.plot(x, seg["share"], color=color, linestyle=style, linewidth=1.5)
            ax.fill_between(x, seg["ci_low"], seg["ci_high"], color=color, alpha=0.12, linewidth=0)
    ax.axvline(1.0, color="grey", linewidth=0.8)
    ax.set_ylim(0, 1)
    ax.set_xlim(0, 2 if pref_sets else 1)


def _legend(fig, pref_sets: list[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, label=s) for s, c in STANCE_COLORS.items()]
    handles += [Line2D([], [], color="black", linestyle="-", label="SFT")]
    handles += [Line2D([], [], color="black", linestyle=LINESTYLES[i % len(LINESTYLES)], label=p)
                for i, p in enumerate(pref_sets)]
    fig.legend(handles=handles, loc="outside right upper", frameon=False)


def plot_trajectories(dist, topic: str = "all", max_columns: int = 3):
    """Stance shares through SFT then preference optimization: one panel per SFT dataset and
    preference algorithm, wrapped into rows of at most `max_columns`."""
    import math

    import matplotlib.pyplot as plt

    d = dist[dist["topic"] == topic]
    algorithms = sorted(d.loc[d["phase"] == "preference", "algorithm"].unique()) or ["sft"]
    panels = [(s, a) for s in sorted(d["sft_data"].unique()) for a in algorithms]
    pref_sets = sorted(p for p in d["pref_data"].unique() if p)
    ncols = min(max_columns, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, (sft_data, algorithm) in zip(axes.flat, panels):
        panel = d[(d["sft_data"] == sft_data) & ((d["phase"] == "sft") | (d["algorithm"] == algorithm))]
        _draw_panel(ax, panel, pref_sets)
        ax.set_title(f"SFT on {sft_data}" + (f", then {algorithm.upper()}" if algorithm != "sft" else ""), fontsize=10)
        ax.set_xlabel("progress (SFT 0-1, preference 1-2)")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(f"stance share ({topic})")
    _legend(fig, pref_sets)
    return fig


def plot_trajectories_by_topic(dist):
    """One panel per topic (columns) and SFT dataset x algorithm (rows)."""
    import matplotlib.pyplot as plt

    topics = sorted(t for t in dist["topic"].unique() if t != "all")
    pref_sets = sorted(p for p in dist["pref_data"].unique() if p)
    rows = sorted({(s, a) for s, a in dist.loc[dist["phase"] == "preference", ["sft_data", "algorithm"]]
                   .itertuples(index=False)}) or [(s, "sft") for s in sorted(dist["sft_data"].unique())]
    fig, axes = plt.subplots(len(rows), len(topics), figsize=(2.1 * len(topics), 2.2 * len(rows)),
                             squeeze=False, sharex=True, sharey=True, layout="constrained")
    for r, (sft_data, algorithm) in enumerate(rows):
        for c, topic in enumerate(topics):
            d = dist[(dist["topic"] == topic) & (dist["sft_data"] == sft_data)
                     & ((dist["phase"] == "sft") | (dist["algorithm"] == algorithm))]
            _draw_panel(axes[r, c], d, pref_sets)
            if r == 0:
                axes[r, c].set_title(topic.replace("_", " "), fontsize=9)
        axes[r, 0].set_ylabel(f"{sft_data}\n{algorithm.upper()}", fontsize=8)
    _legend(fig, pref_sets)
    return fig


def run_label(row) -> str:
    if row["phase"] == "sft":
        return f"{row['model']}: SFT {row['sft_data']}"
    return f"{row['model']}: {row['algorithm'].upper()} {row['pref_data']} (after SFT {row['sft_data']})"


def _magnitude_cells(d, index: str, columns: str):
    """Drift magnitudes as an index x columns table, and cell labels like '+0.12*' where '*' marks
    a confidence interval that excludes zero."""
    m = d.pivot(index=index, columns=columns, values="magnitude")
    sig = d.assign(sig=(d["magnitude_low"] > 0) | (d["magnitude_high"] < 0)).pivot(
        index=index, columns=columns, values="sig")
    return m, m.map(lambda v: f"{v:+.2f}") + sig.map(lambda b: "*" if b else "")


def plot_drift_heatmap(drift):
    """Drift magnitude M (end - start of a phase) per phase (rows) and topic (columns), one panel
    per stance; cells whose 95 % CI excludes zero are marked with '*'."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    d = drift.assign(run=drift.apply(run_label, axis=1))
    topics = sorted(t for t in d["topic"].unique() if t != "all") + ["all"]
    runs = list(dict.fromkeys(d.sort_values(["phase", "sft_data", "algorithm", "pref_data"],
                                            key=lambda c: c.map({"sft": 0, "preference": 1}) if c.name == "phase" else c)["run"]))
    vmax = max(0.05, float(d["magnitude"].abs().max()))
    fig, axes = plt.subplots(1, 3, figsize=(0.55 * len(topics) * 3 + 4, 0.45 * len(runs) + 2.2),
                             sharey=True, layout="constrained")
    for ax, stance in zip(axes, STANCE_COLORS):
        m, labels = _magnitude_cells(d[d["stance"] == stance], "run", "topic")
        m, labels = m.loc[runs, topics], labels.loc[runs, topics]
        sns.heatmap(m, ax=ax, cmap="RdBu_r", vmin=-vmax, vmax=vmax, center=0, annot=labels, fmt="",
                    annot_kws={"fontsize": 6}, cbar=stance == "oppose", cbar_kws={"label": "drift magnitude M"})
        ax.set_title(f"p({stance})")
        ax.set_xlabel("")
        ax.set_ylabel("")
    return fig


def plot_drift_by_algorithm(drift):
    """Drift magnitude over all topics of each preference phase: algorithms (rows) x preference
    set and stance (columns), one panel per SFT model; '*' marks a CI that excludes zero."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    d = drift[(drift["topic"] == "all") & (drift["phase"] == "preference")]
    starts = sorted({(m, s) for m, s in d[["model", "sft_data"]].itertuples(index=False)})
    vmax = max(0.05, float(d["magnitude"].abs().max())) if len(d) else 1.0
    fig, axes = plt.subplots(1, max(1, len(starts)), figsize=(1.0 + 1.1 * d["pref_data"].nunique() * 3 * max(1, len(starts)),
                                                             1.2 + 0.45 * max(1, d["algorithm"].nunique())),
                             squeeze=False, layout="constrained")
    for ax, (model, sft_data) in zip(axes[0], starts):
        s = d[(d["model"] == model) & (d["sft_data"] == sft_data)].copy()
        s["column"] = s["pref_data"] + "\n" + s["stance"]
        m, labels = _magnitude_cells(s, "algorithm", "column")
        sns.heatmap(m, ax=ax, cmap="RdBu_r", vmin=-vmax, vmax=vmax, center=0, annot=labels, fmt="",
                    annot_kws={"fontsize": 8}, cbar_kws={"label": "drift magnitude M (all topics)"})
        ax.set_title(f"{model}, after SFT on {sft_data}")
        ax.set_xlabel("")
        ax.set_ylabel("")
    return fig


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "plot", __doc__)
    parser.add_argument("--distributions", required=True, help="stance distribution table from `aggregate`")
    parser.add_argument("--drift", required=True, help="drift table from `drift`")
    parser.add_argument("--trajectories", required=True, help="PNG to write")
    parser.add_argument("--trajectories-by-topic", required=True, help="PNG to write")
    parser.add_argument("--drift-heatmap", required=True, help="PNG to write")
    parser.add_argument("--drift-by-algorithm", required=True, help="PNG to write")
    return parser


def save(fig, path: str) -> None:
    import matplotlib.pyplot as plt

    from valuedrift.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format=Path(path).suffix.lstrip("."))
    plt.close(fig)


def main(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    dist = pd.read_parquet(args.distributions)
    dist["pref_data"] = dist["pref_data"].fillna("")
    drift = pd.read_csv(args.drift, keep_default_na=False)
    save(plot_trajectories(dist), args.trajectories)
    save(plot_trajectories_by_topic(dist), args.trajectories_by_topic)
    save(plot_drift_heatmap(drift), args.drift_heatmap)
    save(plot_drift_by_algorithm(drift), args.drift_by_algorithm)
    log.info("wrote %s, %s, %s, %s", args.trajectories, args.trajectories_by_topic, args.drift_heatmap,
             args.drift_by_algorithm)
