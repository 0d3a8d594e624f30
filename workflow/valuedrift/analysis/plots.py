"""`valuedrift plot`: the report figures. Each plot function takes an aggregated table and
returns a matplotlib figure; nothing here reads per-answer data.

Progress axis: the SFT phase runs from 0 to 1, the preference phase that starts from its end
from 1 to 2, so a stance's whole post-training trajectory reads left to right.

Every figure says in its title what its intervals cover (seeds x questions, or questions only
with one seed) and what a star means: Benjamini-Hochberg q < 0.05 across that figure's cells
and, with several training seeds, every seed's drift on the side of the pooled one.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

STANCE_COLORS = {"support": "#1b9e77", "neutral": "#7570b3", "oppose": "#d95f02"}
LINESTYLES = ["--", ":", "-.", (0, (5, 1)), (0, (1, 1)), (0, (3, 1, 1, 1))]
SEED_LINE = {"linewidth": 0.6, "alpha": 0.3}  # single training seeds: thin and faint
NUMERIC = ["share", "ci_low", "ci_high", "magnitude", "magnitude_low", "magnitude_high", "p_value", "n_seeds",
           "confidence", "m", "m_low", "m_high", "kl", "kl_low", "kl_high", "fraction", "k", "seed"]


def numeric(table):
    """Numeric columns as numbers: a CSV read with keep_default_na=False (so an SFT run's empty
    pref_data stays "") holds empty strings where a value is missing."""
    import pandas as pd

    present = [c for c in NUMERIC if c in table]
    return table.assign(**{c: pd.to_numeric(table[c], errors="coerce") for c in present})


def interval_caption(table) -> str:
    """What the table's intervals cover, e.g. '95 % CI over seeds x questions, 3 seeds'."""
    confidence = float(table["confidence"].iloc[0]) if "confidence" in table and len(table) else 0.95
    seeds = sorted({int(s) for s in table["n_seeds"].dropna()}) if "n_seeds" in table else [1]
    level = f"{100 * confidence:.0f} % CI"
    if not seeds or seeds[-1] <= 1:
        return f"{level}, questions only, 1 seed"
    count = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
    return f"{level} over seeds × questions, {count} seeds"


def star_caption(table, n_cells: int) -> str:
    several = "n_seeds" in table and (table["n_seeds"] > 1).any()
    return (f"* = Benjamini-Hochberg q < 0.05 across this figure's {n_cells} cells"
            + (" and every seed's M on the pooled side" if several else ""))


def caption(fig, text: str, legend: bool = False) -> None:
    """The figure's caption as its title, each line wrapped to the figure's width; beside a
    legend at the upper right, left-aligned and wrapped short of it."""
    import textwrap

    inches = fig.get_figwidth() - (2.4 if legend else 0.2)
    wrapped = "\n".join(textwrap.fill(line, max(30, int(12 * inches))) for line in text.split("\n"))  # 9 pt
    if legend:
        fig.suptitle(wrapped, fontsize=9, x=0.01, ha="left")
    else:
        fig.suptitle(wrapped, fontsize=9)


def _progress(d):
    return d["fraction"] + (d["phase"] == "preference")


def _segments(s, pref_sets: list[str]):
    """(rows, line style) of the SFT trajectory and of each preference run."""
    yield s[s["phase"] == "sft"], "-"
    for i, p in enumerate(pref_sets):
        yield s[(s["phase"] == "preference") & (s["pref_data"] == p)], LINESTYLES[i % len(LINESTYLES)]


def _draw_panel(ax, d, pref_sets: list[str], seeds=None) -> None:
    """SFT trajectory (solid) then each preference run from its end (one line style per set):
    the pooled share with its interval, and each training seed's share as a faint line."""
    for stance, color in STANCE_COLORS.items():
        for seg, style in _segments(d[d["stance"] == stance], pref_sets):
            if seg.empty:
                continue
            seg = seg.sort_values("fraction")
            x = _progress(seg)
            ax.plot(x, seg["share"], color=color, linestyle=style, linewidth=1.5)
            ax.fill_between(x, seg["ci_low"], seg["ci_high"], color=color, alpha=0.12, linewidth=0)
        if seeds is None:
            continue
        for seg, style in _segments(seeds[seeds["stance"] == stance], pref_sets):
            for _, one in seg.groupby("seed", sort=True):
                one = one.sort_values("fraction")
                ax.plot(_progress(one), one["share"], color=color, linestyle=style, **SEED_LINE)
    ax.axvline(1.0, color="grey", linewidth=0.8)
    ax.set_ylim(0, 1)
    ax.set_xlim(0, 2 if pref_sets else 1)


def _legend(fig, pref_sets: list[str], seeds: bool = False) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, label=s) for s, c in STANCE_COLORS.items()]
    handles += [Line2D([], [], color="black", linestyle="-", label="SFT")]
    handles += [Line2D([], [], color="black", linestyle=LINESTYLES[i % len(LINESTYLES)], label=p)
                for i, p in enumerate(pref_sets)]
    if seeds:
        handles += [Line2D([], [], color="black", label="one training seed", **SEED_LINE)]
    fig.legend(handles=handles, loc="outside right upper", frameon=False)


def _trajectory_caption(dist, seeds) -> str:
    return f"shaded: {interval_caption(dist)}" + ("; thin lines: single training seeds" if seeds is not None else "")


def _panel_rows(table, model: str, sft_data: str, algorithm: str):
    if table is None:
        return None
    return table[(table["model"] == model) & (table["sft_data"] == sft_data)
                 & ((table["phase"] == "sft") | (table["algorithm"] == algorithm))]


def _panels(d) -> list[tuple[str, str, str]]:
    """(model, SFT set, algorithm) of every panel: each model's SFT sets x the algorithms run after
    them (a model of SFT runs only: one panel per SFT set)."""
    out = []
    for model, sft_data in sorted({tuple(r) for r in d[["model", "sft_data"]].itertuples(index=False)}):
        rows = d[(d["model"] == model) & (d["sft_data"] == sft_data)]
        out += [(model, sft_data, a) for a in sorted(rows.loc[rows["phase"] == "preference", "algorithm"].unique())
                or ["sft"]]
    return out


def _panel_title(d, model: str, sft_data: str, algorithm: str) -> str:
    """The panel's SFT set and algorithm, and its model where the figure shows several."""
    title = f"SFT on {sft_data}" + (f", then {algorithm.upper()}" if algorithm != "sft" else "")
    return f"{model}: {title}" if d["model"].nunique() > 1 else title


def plot_trajectories(dist, topic: str = "all", max_columns: int = 3, by_seed=None):
    """Stance shares through SFT then preference optimization: one panel per SFT dataset and
    preference algorithm, wrapped into rows of at most `max_columns`; `by_seed` (the per-seed
    distributions) adds each training seed's share as a faint line."""
    import math

    import matplotlib.pyplot as plt

    d = dist[dist["topic"] == topic]
    seeds = by_seed[by_seed["topic"] == topic] if by_seed is not None else None
    panels = _panels(d)
    pref_sets = sorted(p for p in d["pref_data"].unique() if p)
    ncols = min(max_columns, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows + 0.4), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, panel in zip(axes.flat, panels):
        _draw_panel(ax, _panel_rows(d, *panel), pref_sets, _panel_rows(seeds, *panel))
        ax.set_title(_panel_title(d, *panel), fontsize=10)
        ax.set_xlabel("progress (SFT 0-1, preference 1-2)")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(f"stance share ({topic})")
    caption(fig, _trajectory_caption(d, seeds), legend=True)
    _legend(fig, pref_sets, seeds is not None)
    return fig


def plot_trajectories_by_topic(dist, by_seed=None):
    """One panel per topic (columns) and SFT dataset x algorithm (rows)."""
    import matplotlib.pyplot as plt

    topics = sorted(t for t in dist["topic"].unique() if t != "all")
    pref_sets = sorted(p for p in dist["pref_data"].unique() if p)
    rows = _panels(dist)
    fig, axes = plt.subplots(len(rows), len(topics), figsize=(2.1 * len(topics), 2.2 * len(rows) + 0.4),
                             squeeze=False, sharex=True, sharey=True, layout="constrained")
    for r, (model, sft_data, algorithm) in enumerate(rows):
        for c, topic in enumerate(topics):
            d = _panel_rows(dist[dist["topic"] == topic], model, sft_data, algorithm)
            seeds = None if by_seed is None else _panel_rows(by_seed[by_seed["topic"] == topic], model, sft_data,
                                                             algorithm)
            _draw_panel(axes[r, c], d, pref_sets, seeds)
            if r == 0:
                axes[r, c].set_title(topic.replace("_", " "), fontsize=9)
        head = f"{model}\n" if dist["model"].nunique() > 1 else ""
        axes[r, 0].set_ylabel(f"{head}{sft_data}\n{algorithm.upper()}", fontsize=8)
    caption(fig, _trajectory_caption(dist[dist["topic"] != "all"], by_seed), legend=True)
    _legend(fig, pref_sets, by_seed is not None)
    return fig


def run_label(row) -> str:
    if row["phase"] == "sft":
        return f"{row['model']}: SFT {row['sft_data']}"
    return f"{row['model']}: {row['algorithm'].upper()} {row['pref_data']} (after SFT {row['sft_data']})"


def with_marks(drift):
    """The drift rows of one figure with `star`: significant after Benjamini-Hochberg across
    exactly these rows, and agreed on by every seed (valuedrift.analysis.drift.marks)."""
    from valuedrift.analysis.drift import marks

    d = numeric(drift).reset_index(drop=True)
    if "seeds_agree" not in d:
        d["seeds_agree"] = True
    d["seeds_agree"] = d["seeds_agree"].astype(str).str.lower().isin(["true", "1"])
    if "n_seeds" not in d:
        d["n_seeds"] = 1
    return d.assign(star=marks(d)[1] if len(d) else [])


def _magnitude_cells(d, index: str, columns: str):
    """Drift magnitudes as an index x columns table, and cell labels like '+0.12*' where '*' is
    the row's `star` (see `with_marks`), and '†' marks a run whose training objective did not
    improve (column `trained` from the training-health summary)."""
    m = d.pivot(index=index, columns=columns, values="magnitude")
    star = d.pivot(index=index, columns=columns, values="star")
    labels = m.map(lambda v: f"{v:+.2f}") + star.map(lambda b: "*" if b == b and b is not None and bool(b) else "")
    if "trained" in d:
        untrained = d.assign(u=d["trained"] == "no").pivot(index=index, columns=columns, values="u")
        labels = labels + untrained.map(lambda b: "†" if b is True else "")
    return m, labels


UNTRAINED_CAPTION = ("† its training objective did not improve in every seed (training_health_summary.csv): "
                     "no drift there is no evidence of robustness")


def untrained_caption(d) -> str:
    return f"\n{UNTRAINED_CAPTION}" if "trained" in d and (d["trained"] == "no").any() else ""


def plot_drift_heatmap(drift):
    """Drift magnitude M (end - start of a phase) per phase (rows) and topic (columns), one panel
    per stance; '*' marks cells significant after Benjamini-Hochberg across all the figure's cells
    (and, with several seeds, agreed on by every seed)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    d = with_marks(drift)
    d = d.assign(run=d.apply(run_label, axis=1))
    topics = sorted(t for t in d["topic"].unique() if t != "all") + ["all"]
    runs = list(dict.fromkeys(d.sort_values(["phase", "sft_data", "algorithm", "pref_data"],
                                            key=lambda c: c.map({"sft": 0, "preference": 1}) if c.name == "phase" else c)["run"]))
    vmax = max(0.05, float(d["magnitude"].abs().max()))
    fig, axes = plt.subplots(1, 3, figsize=(0.55 * len(topics) * 3 + 4, 0.45 * len(runs) + 2.6),
                             sharey=True, layout="constrained")
    for ax, stance in zip(axes, STANCE_COLORS):
        m, labels = _magnitude_cells(d[d["stance"] == stance], "run", "topic")
        m, labels = m.loc[runs, topics], labels.loc[runs, topics]
        sns.heatmap(m, ax=ax, cmap="RdBu_r", vmin=-vmax, vmax=vmax, center=0, annot=labels, fmt="",
                    annot_kws={"fontsize": 6}, cbar=stance == "oppose", cbar_kws={"label": "drift magnitude M"})
        ax.set_title(f"p({stance})")
        ax.set_xlabel("")
        ax.set_ylabel("")
    caption(fig, f"M = v(end) - v(start); {interval_caption(d)}\n{star_caption(d, len(d))}{untrained_caption(d)}")
    return fig


def plot_drift_by_algorithm(drift):
    """Drift magnitude over all topics of each preference phase: algorithms (rows) x preference
    set and stance (columns), one panel per SFT model; '*' as in the heatmap, across this
    figure's cells."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    d = with_marks(drift[(drift["topic"] == "all") & (drift["phase"] == "preference")])
    starts = sorted({(m, s) for m, s in d[["model", "sft_data"]].itertuples(index=False)})
    vmax = max(0.05, float(d["magnitude"].abs().max())) if len(d) else 1.0
    fig, axes = plt.subplots(1, max(1, len(starts)), figsize=(1.0 + 1.1 * d["pref_data"].nunique() * 3 * max(1, len(starts)),
                                                             1.6 + 0.45 * max(1, d["algorithm"].nunique())),
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
    caption(fig, f"{interval_caption(d)}\n{star_caption(d, len(d))}{untrained_caption(d)}")
    return fig


def _kl_panels(d):
    """(model, SFT set, preference set) of each panel row; an SFT run's preference set is ''."""
    return sorted({tuple(r) for r in d[["model", "sft_data", "pref_data"]].itertuples(index=False)},
                  key=lambda r: (r[0], r[1], r[2] != "", r[2]))


def plot_drift_vs_kl(by_snapshot, topic: str = "all"):
    """Stance drift M(t) = v_t - v_start against KL(pi_t || pi_start) at each snapshot: one line
    per algorithm (pooled over seeds, with intervals in both directions), each seed faint; one
    panel row per (model, SFT set, preference set), one column per stance. Comparing algorithms
    at the same KL separates how far a policy moved from where its stance went."""
    import matplotlib.pyplot as plt

    d = numeric(by_snapshot[by_snapshot["topic"] == topic])
    if d.empty or d["kl"].isna().all():
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no KL: the stance files carry no log-probabilities", ha="center", va="center")
        return fig
    panels = _kl_panels(d)
    algorithms = sorted(d["algorithm"].unique())
    colors = dict(zip(algorithms, plt.get_cmap("tab10").colors))
    fig, axes = plt.subplots(len(panels), len(STANCE_COLORS), squeeze=False, sharex=True, layout="constrained",
                             figsize=(3.6 * len(STANCE_COLORS), 2.8 * len(panels) + 0.5))
    for r, (model, sft_data, pref_data) in enumerate(panels):
        for c, stance in enumerate(STANCE_COLORS):
            ax = axes[r, c]
            cell = d[(d["model"] == model) & (d["sft_data"] == sft_data) & (d["pref_data"] == pref_data)
                     & (d["stance"] == stance)]
            for algorithm, a in cell.groupby("algorithm", sort=True):
                _draw_kl_lines(ax, a, colors[algorithm])
            ax.axhline(0, color="grey", linewidth=0.6)
            name = f"{model}, SFT {sft_data}" + (f", {pref_data}" if pref_data else "")
            ax.set_title(f"{name}: {stance}", fontsize=8)
            if r == len(panels) - 1:
                ax.set_xlabel("KL(π_t ‖ π_start), nats")
        axes[r, 0].set_ylabel("M(t) = v_t - v_start")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[a], marker="o", label=a) for a in algorithms]
    handles += [Line2D([], [], color="black", label="one training seed", **SEED_LINE)]
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    pooled = d[d["level"] == "pooled"]
    caption(fig, f"Drift against KL from the start ({topic}); bars: {interval_caption(pooled)}", legend=True)
    return fig


def error_bars(value, low, high):
    """matplotlib's [below, above] bar lengths of an interval. An interval of a constant quantity
    (every resample alike) can sit a rounding error beside its estimate, and matplotlib refuses
    the negative length that gives."""
    import numpy as np

    return np.clip(np.vstack([np.asarray(value) - low, np.asarray(high) - value]), 0, None)


def _draw_kl_lines(ax, a, color) -> None:
    pooled = a[a["level"] == "pooled"].sort_values("k")
    for _, one in a[a["level"] == "seed"].groupby("seed", sort=True):
        one = one.sort_values("k")
        ax.plot(one["kl"], one["m"], color=color, **SEED_LINE)
    ax.errorbar(pooled["kl"], pooled["m"], xerr=error_bars(pooled["kl"], pooled["kl_low"], pooled["kl_high"]),
                yerr=error_bars(pooled["m"], pooled["m_low"], pooled["m_high"]), color=color, marker="o",
                markersize=3, linewidth=1.4, elinewidth=0.6)


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "plot", __doc__)
    parser.add_argument("--distributions", required=True, help="stance distribution table from `aggregate`")
    parser.add_argument("--drift", required=True, help="drift table from `drift`")
    parser.add_argument("--trajectories", required=True, help="PNG to write")
    parser.add_argument("--trajectories-by-topic", required=True, help="PNG to write")
    parser.add_argument("--drift-heatmap", required=True, help="PNG to write")
    parser.add_argument("--drift-by-algorithm", required=True, help="PNG to write")
    parser.add_argument("--distributions-by-seed",
                        help="per-seed distribution table from `aggregate`: draws each seed's share faintly")
    parser.add_argument("--drift-by-snapshot", help="by-snapshot table from `drift` (needed for --drift-vs-kl)")
    parser.add_argument("--drift-vs-kl", help="PNG to write: drift against KL from the start")
    return parser


def save(fig, path: str) -> None:
    import matplotlib.pyplot as plt

    from valuedrift.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format=Path(path).suffix.lstrip("."))
    plt.close(fig)


def read_distributions(path: str):
    import pandas as pd

    dist = pd.read_parquet(path)
    return dist.assign(pref_data=dist["pref_data"].fillna(""))


def main(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from valuedrift.io import InputError

    if args.drift_vs_kl and not args.drift_by_snapshot:
        raise InputError("--drift-vs-kl needs --drift-by-snapshot, the table it draws")
    dist = read_distributions(args.distributions)
    by_seed = read_distributions(args.distributions_by_seed) if args.distributions_by_seed else None
    drift = pd.read_csv(args.drift, keep_default_na=False)
    save(plot_trajectories(dist, by_seed=by_seed), args.trajectories)
    save(plot_trajectories_by_topic(dist, by_seed=by_seed), args.trajectories_by_topic)
    save(plot_drift_heatmap(drift), args.drift_heatmap)
    save(plot_drift_by_algorithm(drift), args.drift_by_algorithm)
    written = [args.trajectories, args.trajectories_by_topic, args.drift_heatmap, args.drift_by_algorithm]
    if args.drift_vs_kl:
        save(plot_drift_vs_kl(pd.read_csv(args.drift_by_snapshot, keep_default_na=False)), args.drift_vs_kl)
        written.append(args.drift_vs_kl)
    log.info("wrote %s", ", ".join(written))
