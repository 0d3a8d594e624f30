"""The report figures: stars only where a cell survives Benjamini-Hochberg across its own figure
and every seed agrees, captions that say what an interval covers, faint per-seed lines, and
drift against KL."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from valuedrift.analysis import plots  # noqa: E402

TOPICS = [f"t{i}" for i in range(6)]
STANCES = ["support", "neutral", "oppose"]


def drift_rows(p_of=None, agree_of=None, n_seeds=3):
    """A drift table: an SFT run and two preference runs, 6 topics + all, 3 stances, p = 0.6
    unless `p_of[(algorithm, topic, stance)]` says otherwise."""
    p_of, agree_of = p_of or {}, agree_of or {}
    rows = []
    for algorithm, pref, phase in [("sft", "", "sft"), ("dpo", "support_chosen", "preference"),
                                   ("ppo", "support_chosen", "preference")]:
        for topic in [*TOPICS, "all"]:
            for stance in STANCES:
                key = (algorithm, topic, stance)
                rows.append({"model": "tiny", "sft_data": "w", "algorithm": algorithm, "pref_data": pref,
                             "phase": phase, "topic": topic, "stance": stance, "magnitude": 0.1,
                             "magnitude_low": 0.0, "magnitude_high": 0.2, "p_value": p_of.get(key, 0.6),
                             "n_seeds": n_seeds, "seeds_agree": agree_of.get(key, True), "confidence": 0.95})
    return pd.DataFrame(rows)


def title(fig) -> str:
    """The figure's caption, its wrapped lines joined."""
    return " ".join(fig._suptitle.get_text().split())


def starred(fig) -> list[str]:
    """Annotations of every heatmap cell that carry a star."""
    return sorted(t.get_text() for ax in fig.axes for t in ax.texts if t.get_text().endswith("*"))


def test_heatmap_stars_survive_benjamini_hochberg_across_the_figure_and_the_seeds():
    p_of = {("dpo", "t0", "support"): 1e-4,   # q = 1e-4 * 63: starred
            ("dpo", "t1", "support"): 1e-4,   # as small, but one seed went the other way
            ("ppo", "t2", "oppose"): 0.01}    # below 0.05 alone, not across the figure's 63 cells
    d = drift_rows(p_of, {("dpo", "t1", "support"): False})
    d.loc[d["p_value"] < 0.05, "magnitude"] = [0.31, 0.32, 0.33]
    fig = plots.plot_drift_heatmap(d)
    assert starred(fig) == ["+0.31*"]
    text = title(fig)
    assert "95 % CI over seeds × questions, 3 seeds" in text
    assert "Benjamini-Hochberg q < 0.05 across this figure's 63 cells" in text and "every seed" in text
    plt.close(fig)


def test_drift_by_algorithm_corrects_across_its_own_cells_only():
    # p = 0.01 among this figure's 6 cells (2 algorithms x 3 stances, topic all): q = 0.06 alone, but
    # with three such cells q = 0.02
    p_of = {("dpo", "all", "support"): 0.01, ("dpo", "all", "oppose"): 0.01, ("ppo", "all", "support"): 0.01}
    d = drift_rows(p_of)
    fig = plots.plot_drift_by_algorithm(d)
    assert len(starred(fig)) == 3
    assert "across this figure's 6 cells" in title(fig)
    plt.close(fig)
    heatmap = plots.plot_drift_heatmap(d)  # the same cells among 63: none survives
    assert starred(heatmap) == []
    plt.close(heatmap)


def test_one_seed_figures_say_questions_only():
    d = drift_rows({("dpo", "all", "support"): 1e-5}, n_seeds=1)
    fig = plots.plot_drift_by_algorithm(d)
    text = title(fig)
    assert "95 % CI, questions only, 1 seed" in text and "every seed" not in text
    assert len(starred(fig)) == 1
    plt.close(fig)


def test_the_drift_table_read_back_from_csv_plots(tmp_path):
    d = drift_rows({("dpo", "all", "support"): 1e-5})
    d["drift_time"] = np.nan  # written as empty cells, read back as "" with keep_default_na=False
    d.to_csv(tmp_path / "drift.csv", index=False)
    read = pd.read_csv(tmp_path / "drift.csv", keep_default_na=False)
    fig = plots.plot_drift_heatmap(read)
    assert len(starred(fig)) == 1
    plt.close(fig)


def distributions(seeds=(0, 1, 2)):
    """Pooled and per-seed stance shares of an SFT run and a DPO run, topic all and one topic."""
    pooled, per_seed = [], []
    for algorithm, pref, phase in [("sft", "", "sft"), ("dpo", "support_chosen", "preference")]:
        for k in range(3):
            for topic in ("all", "t0"):
                for i, stance in enumerate(STANCES):
                    base = {"model": "tiny", "sft_data": "w", "algorithm": algorithm, "pref_data": pref,
                            "phase": phase, "k": k, "step": k, "fraction": k / 2, "topic": topic, "stance": stance,
                            "n_questions": 5, "confidence": 0.95}
                    share = (1 + i + 0.1 * k * (stance == "support")) / 6
                    pooled.append({**base, "share": share, "ci_low": share - 0.05, "ci_high": share + 0.05,
                                   "n_seeds": len(seeds)})
                    per_seed += [{**base, "seed": s, "share": share + 0.01 * (s - 1), "ci_low": share - 0.08,
                                  "ci_high": share + 0.08} for s in seeds]
    return pd.DataFrame(pooled), pd.DataFrame(per_seed)


def faint_lines(fig) -> int:
    return sum(1 for ax in fig.axes for line in ax.lines if line.get_alpha() == plots.SEED_LINE["alpha"])


def test_trajectories_draw_each_seed_faintly_beside_the_pooled_share():
    pooled, per_seed = distributions()
    fig = plots.plot_trajectories(pooled, by_seed=per_seed)
    # one panel (SFT then DPO): 3 stances x 2 segments (SFT, the preference run) x 3 seeds
    assert faint_lines(fig) == 18
    caption = title(fig)
    assert "shaded: 95 % CI over seeds × questions, 3 seeds; thin lines: single training seeds" in caption
    plt.close(fig)
    fig = plots.plot_trajectories(pooled)
    assert faint_lines(fig) == 0 and "thin lines" not in title(fig)
    plt.close(fig)
    fig = plots.plot_trajectories_by_topic(pooled, by_seed=per_seed)
    assert faint_lines(fig) == 18
    plt.close(fig)


def test_trajectories_of_two_models_get_a_panel_each():
    """Runs of different models never share a panel (external runs are often one model each)."""
    pooled, per_seed = distributions()
    other = pooled.assign(model="other", share=pooled["share"] / 2)
    fig = plots.plot_trajectories(pd.concat([pooled, other]))
    titles = sorted(ax.get_title() for ax in fig.axes if ax.get_visible())
    assert titles == ["other: SFT on w, then DPO", "tiny: SFT on w, then DPO"]
    # each panel: 3 stances x 2 segments, one model's shares only
    assert all(len(ax.lines) == 6 + 1 for ax in fig.axes if ax.get_visible())  # + the phase boundary
    plt.close(fig)
    fig = plots.plot_trajectories_by_topic(pd.concat([pooled, other]))
    assert sum(ax.get_visible() for ax in fig.axes) == 2 * pooled["topic"].nunique() - 2  # rows x topics, no "all"
    plt.close(fig)


def by_snapshot(kl=True):
    """M(t) and KL at 3 snapshots of two algorithms on one preference set, pooled and per seed."""
    rows = []
    for algorithm, speed in (("dpo", 1.0), ("ppo", 0.5)):
        for stance in STANCES:
            for level, seeds in (("pooled", [None]), ("seed", [0, 1])):
                for s in seeds:
                    for k in range(3):
                        m, d = 0.1 * k * (stance == "support"), 0.2 * k * speed
                        rows.append({"model": "tiny", "sft_data": "w", "algorithm": algorithm,
                                     "pref_data": "support_chosen", "phase": "preference", "topic": "all",
                                     "stance": stance, "level": level, "seed": s, "k": k, "fraction": k / 2,
                                     "share": 0.3 + m, "m": m, "m_low": m - 0.02, "m_high": m + 0.02,
                                     "kl": d if kl else np.nan, "kl_low": d - 0.01, "kl_high": d + 0.01,
                                     "n_seeds": 2 if level == "pooled" else 1, "n_questions": 5, "confidence": 0.95})
    return pd.DataFrame(rows)


def test_drift_against_kl_has_a_line_per_algorithm_and_faint_seeds():
    fig = plots.plot_drift_vs_kl(by_snapshot())
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 3  # one preference set x 3 stances
    support = next(ax for ax in panels if ax.get_title().endswith("support"))
    pooled = [line for line in support.lines if line.get_alpha() is None and len(line.get_xdata()) == 3]
    assert len(pooled) == 2  # dpo and ppo
    assert faint_lines(fig) == 3 * 2 * 2  # stances x algorithms x seeds
    dpo = next(line for line in pooled if np.allclose(line.get_xdata(), [0, 0.2, 0.4]))
    assert np.allclose(dpo.get_ydata(), [0, 0.1, 0.2])
    assert "95 % CI over seeds × questions, 2 seeds" in title(fig)
    plt.close(fig)


def test_drift_against_kl_without_log_probabilities_says_so():
    fig = plots.plot_drift_vs_kl(by_snapshot(kl=False))
    assert "no log-probabilities" in " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    plt.close(fig)


def test_plot_command_writes_every_figure(tmp_path):
    from test_tables import run_cli, write_study

    run_cli(tmp_path, write_study(tmp_path))
    out = {name: tmp_path / f"{name}.png" for name in ("traj", "topic", "heat", "algo", "kl")}
    args = ["--distributions", str(tmp_path / "d.parquet"), "--drift", str(tmp_path / "drift.csv"),
            "--trajectories", str(out["traj"]), "--trajectories-by-topic", str(out["topic"]),
            "--drift-heatmap", str(out["heat"]), "--drift-by-algorithm", str(out["algo"])]
    plots.main(plots.make_parser().parse_args(args))  # the flags the rule passes today
    assert all(out[n].stat().st_size > 1000 for n in ("traj", "topic", "heat", "algo")) and not out["kl"].exists()
    plots.main(plots.make_parser().parse_args(
        [*args, "--distributions-by-seed", str(tmp_path / "ds.parquet"),
         "--drift-by-snapshot", str(tmp_path / "by_snapshot.csv"), "--drift-vs-kl", str(out["kl"])]))
    assert out["kl"].stat().st_size > 1000


def test_drift_vs_kl_needs_its_table(tmp_path):
    from valuedrift.io import InputError

    args = plots.make_parser().parse_args(["--distributions", "d", "--drift", "x", "--trajectories", "a",
                                           "--trajectories-by-topic", "b", "--drift-heatmap", "c",
                                           "--drift-by-algorithm", "e", "--drift-vs-kl", "f"])
    with pytest.raises(InputError, match="--drift-by-snapshot"):
        plots.main(args)
