"""`valuedrift training-health`: did each run optimise its objective? Training curves from the
trainers' log histories, one verdict per run, and a figure.

A stance that barely moves under some algorithm means something only if that algorithm optimised
at all. Each run's `trainer_state.json` holds the metrics its TRL trainer logged; this command
collects the ones that matter for its method (METHODS below) into a tidy table and judges each
run by its method's objective: one logged metric, with the direction training should push it.

Objective per method (what TRL 1.12 logs, and why this metric):
  sft     loss                down  the token-level cross-entropy SFT minimises
  reward  loss                down  the Bradley-Terry loss the reward model minimises; its
                                    `accuracy` is a count over a batch that saturates at 1 and
                                    says nothing once it has, while the loss keeps falling
  dpo     rewards/margins     up    beta x (log-ratio chosen - log-ratio rejected) to the
  ipo     rewards/margins     up    reference: exactly 0 at the first step, and what the loss acts
                                    on (IPO pulls it up towards 1/(2 beta))
  simpo   rewards/margins     up    beta x difference of mean log-probabilities, pushed above gamma
  orpo    log_odds_chosen     up    log odds(chosen) - log odds(rejected), inside the odds-ratio
                                    term; ORPO's loss also holds an SFT term on the chosen answers
                                    that falls without any preference being learnt
  kto     rewards/margins     up    mean reward of desirable minus undesirable answers (KTO logs no
                                    accuracy: its rows are unpaired)
  grpo    reward              up    the mean reward (reward model or judge) of the sampled answers
  rloo    reward              up    as GRPO
  ppo     objective/scores    up    the reward model's mean score of the sampled answers, the same
                                    quantity as GRPO's `reward`; `objective/rlhf_reward` subtracts
                                    the KL penalty, which grows as soon as the policy moves

Improved, the rule: take the objective's values at its n logged steps, in step order.
- A value that is NaN or infinite at any logged step: not trained (the run is broken, typically
  answers truncated away by `max_length`, which leaves mean log-probabilities of nothing).
- n < 6: not judged; `trained` is empty and the note says "too few logged steps to tell" (log
  more often: `logging_steps`).
- Otherwise compare the means of the first and last w = max(3, ceil(n/4)) values (the first and
  last quarter of the phase) with a one-sided Welch t-test in the objective's direction (with no
  variance in either window a change is certain: p = 0, or 1 if it went the wrong way). The run
  `trained` if p < 0.05 and the change exceeds float rounding, 1e-6 x (1 + |early mean|).
The test treats logged values as independent draws around each window's mean; with a point per
step the batch-to-batch noise dominates and that is close enough for a screen of "did it move at
all"; it is not an estimate of how much. A run of 8 or so logged steps has windows of 3 and
little power: a real but noisy rise can read "did not reliably rise".

Outputs: `--table`, the curves (tags, step, fraction = step / max_steps, metric, value), one row
per logged step and metric of METHODS[method].curves; `--summary`, one row per run (tags,
objective, direction, n_points, window, early, late, change, p_value, trained, note); `--figure`,
each method's objective through the phase, one panel per method and preference set.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# the identity of a run, as the workflow tags it; one object per state file
TAG_KEYS = ("model", "seed", "sft_data", "algorithm", "method", "pref_data", "phase")

MIN_POINTS = 6          # fewer logged values of the objective: too few to tell
WINDOW_SHARE = 0.25     # early and late windows: the first and last quarter of the logged values
MIN_WINDOW = 3          # a t-test needs a variance in each window
ALPHA = 0.05
ROUNDING = 1e-6         # a change below ROUNDING x (1 + |early|) is float rounding, not training


@dataclass(frozen=True)
class Method:
    objective: str      # the logged metric that says whether the run optimised
    direction: str      # "up" or "down": where training should push it
    curves: tuple[str, ...]  # the logged metrics worth a curve (the objective among them)


_PAIRED = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected", "grad_norm")
_ONLINE = ("reward", "reward_std", "kl", "loss", "completions/mean_length", "grad_norm")

# keyed by method, the TRL algorithm (tags' `method`); every algorithm in
# valuedrift.training.trainers.ALGORITHMS needs an entry
METHODS: dict[str, Method] = {
    "sft": Method("loss", "down", ("loss", "mean_token_accuracy", "entropy", "grad_norm")),
    "reward": Method("loss", "down", ("loss", "accuracy", "margin", "mean_reward", "grad_norm")),
    "dpo": Method("rewards/margins", "up", _PAIRED),
    "ipo": Method("rewards/margins", "up", _PAIRED),
    "simpo": Method("rewards/margins", "up", _PAIRED),
    "orpo": Method("log_odds_chosen", "up", ("log_odds_chosen", "log_odds_ratio", "nll_loss", *_PAIRED)),
    "kto": Method("rewards/margins", "up", ("loss", "rewards/margins", "rewards/chosen", "rewards/rejected", "kl",
                                            "grad_norm")),
    "grpo": Method("reward", "up", _ONLINE),
    "rloo": Method("reward", "up", _ONLINE),
    "ppo": Method("objective/scores", "up", ("objective/scores", "objective/rlhf_reward", "objective/kl",
                                             "objective/entropy", "loss/policy_avg", "loss/value_avg")),
}


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "training-health", __doc__)
    parser.add_argument("--states", nargs="+", required=True, help="each run's trainer_state.json")
    parser.add_argument("--tags", required=True,
                        help="JSON list of objects, one per state file in the same order, each with "
                             f"{', '.join(TAG_KEYS)}; or @FILE holding that list")
    parser.add_argument("--table", required=True, help="tidy CSV of the training curves to write")
    parser.add_argument("--summary", required=True, help="CSV to write: one row per run, its objective and verdict")
    parser.add_argument("--figure", required=True, help="PNG to write: each method's objective through the phase")
    return parser


def parse_tags(text: str, n_states: int) -> list[dict]:
    """The runs' tags, checked: one complete object per state file, no two alike."""
    from valuedrift.io import InputError

    if text.startswith("@"):  # a long grid's tags would outgrow one command-line argument
        text = Path(text[1:]).read_text(encoding="utf-8")
    try:
        tags = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"--tags is not JSON: {e}") from None
    if not isinstance(tags, list) or not all(isinstance(t, dict) for t in tags):
        raise InputError("--tags must be a JSON list of objects, one per state file")
    if len(tags) != n_states:
        raise InputError(f"--tags has {len(tags)} objects for {n_states} state files")
    for i, t in enumerate(tags):
        missing = [k for k in TAG_KEYS if k not in t]
        if missing:
            raise InputError(f"--tags[{i}] lacks {', '.join(missing)}")
        if t["method"] not in METHODS:
            raise InputError(f"--tags[{i}]: unknown method {t['method']!r}; known: {', '.join(sorted(METHODS))}")
    keys = [json.dumps([t[k] for k in TAG_KEYS]) for t in tags]
    if len(set(keys)) < len(keys):
        raise InputError("two state files have the same tags; their curves would be mixed")
    return [{k: t[k] for k in TAG_KEYS} for t in tags]


def read_state(path) -> dict:
    from valuedrift.io import InputError, read_json

    try:
        state = read_json(path)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not a trainer state (JSON): {e}") from None
    if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
        raise InputError(f"{path}: no log_history; is it a transformers trainer_state.json?")
    return state


def curve_rows(state: dict, tags: dict) -> list[dict]:
    """Tidy rows (tags, step, fraction, metric, value) of one run's curves. The fraction of the
    phase is step / max_steps (the last logged step when the state lacks max_steps)."""
    history = [e for e in state["log_history"] if "step" in e]
    last = max((e["step"] for e in history), default=0)
    total = state.get("max_steps") or last or 1
    metrics = METHODS[tags["method"]].curves
    rows = {}
    for entry in history:
        for metric in metrics:
            if metric in entry:  # a trainer omits what a batch cannot tell (KTO: a one-sided batch)
                # a resumed run may log a step twice; the later entry is the one that counts
                rows[entry["step"], metric] = {**tags, "step": entry["step"], "fraction": entry["step"] / total,
                                               "metric": metric, "value": _number(entry[metric])}
    return sorted(rows.values(), key=lambda r: (r["metric"], r["step"]))


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _one_sided_p(early, late, sign: int) -> float:
    """Welch's t-test that the late window's mean lies beyond the early one's in direction `sign`."""
    from scipy.stats import ttest_ind

    if early.var() == 0 and late.var() == 0:  # nothing to test against: any change is certain
        return 0.0 if sign * (late.mean() - early.mean()) > 0 else 1.0
    return float(ttest_ind(late, early, equal_var=False, alternative="greater" if sign > 0 else "less").pvalue)


def judge(values, direction: str) -> dict:
    """The verdict on one objective curve (values in step order), by the rule in the module's
    docstring: early and late means, change, one-sided p-value, trained (None: cannot tell), note."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    n = len(values)
    verdict = {"n_points": n, "window": None, "early": math.nan, "late": math.nan, "change": math.nan,
               "p_value": math.nan}
    broken = int((~np.isfinite(values)).sum())
    if broken:
        return {**verdict, "trained": False, "note": f"NaN or infinite at {broken} of {n} logged steps"}
    if n < MIN_POINTS:
        return {**verdict, "trained": None,
                "note": f"too few logged steps to tell ({n}, {MIN_POINTS} needed; log more often)"}
    w = max(MIN_WINDOW, math.ceil(WINDOW_SHARE * n))
    early, late = values[:w], values[-w:]
    change = late.mean() - early.mean()
    sign = 1 if direction == "up" else -1
    p = _one_sided_p(early, late, sign)
    beyond_rounding = abs(change) > ROUNDING * (1 + abs(early.mean()))
    trained = bool(beyond_rounding and p < ALPHA)
    how = f"{early.mean():.4g} to {late.mean():.4g} over the first and last {w} of {n} logged steps, p = {p:.2g}"
    if trained:
        note = f"{'rose' if sign > 0 else 'fell'} from {how}"
    elif sign * change > 0 and not beyond_rounding:
        note = f"changed by float rounding only: {how}"
    else:
        note = f"did not reliably {'rise' if sign > 0 else 'fall'}: {how}"
    return {**verdict, "window": w, "early": float(early.mean()), "late": float(late.mean()), "change": float(change),
            "p_value": p, "trained": trained, "note": note}


def summary_row(tags: dict, curves) -> dict:
    """One run's row of the summary: its tags, objective, direction and verdict."""
    method = METHODS[tags["method"]]
    d = curves[curves["metric"] == method.objective].sort_values("step")
    base = {**tags, "objective": method.objective, "direction": method.direction}
    if d.empty:
        return {**base, **judge([], method.direction), "trained": None,
                "note": f"{method.objective} is not in the log history"}
    verdict = judge(d["value"].to_numpy(), method.direction)
    return {**base, **verdict, "note": f"{method.objective} {verdict['note']}"}


def health_tables(states: list[dict], tags: list[dict]):
    """The tidy curves table and the per-run summary."""
    import pandas as pd

    columns = [*TAG_KEYS, "step", "fraction", "metric", "value"]
    table, summary = [], []
    for state, t in zip(states, tags):
        curves = pd.DataFrame(curve_rows(state, t), columns=columns)
        table.append(curves)
        summary.append(summary_row(t, curves))
    summary = pd.DataFrame(summary)
    summary["trained"] = summary["trained"].astype("boolean")  # empty where there was no telling
    # a run with nothing logged adds no rows, but would leave the numbers typed as objects
    table = pd.concat(table, ignore_index=True).astype({"step": float, "fraction": float, "value": float})
    return table, summary


def _label(run, model: bool = False) -> str:
    parts = [run["model"] if model else "", run["algorithm"],
             f"SFT {run['sft_data']}" if run["phase"] != "sft" else run["sft_data"], f"seed {run['seed']}"]
    return ", ".join(str(p) for p in parts if p not in ("", None))


def _run_key(d):
    """A run's identity as one string per row, to match the summary's runs to their curves."""
    return d[list(TAG_KEYS)].astype(str).agg("|".join, axis=1)


def _verdicts(trained) -> list:
    """True, False or None (no telling) per run, from the summary's nullable column."""
    import pandas as pd

    return [None if pd.isna(v) else bool(v) for v in trained]


def _draw_run(ax, d, color, verdict, alone: bool) -> None:
    """One seed's curve: dashed with a cross at its end if it did not train, dotted if there was
    no telling; faint beside its group's mean, unless it is the group's only seed."""
    style = {True: "-", False: "--", None: ":"}[verdict]
    alpha = 1.0 if alone or verdict is not True else 0.3
    ax.plot(d["fraction"], d["value"], color=color, linestyle=style, alpha=alpha, linewidth=1.5 if alone else 1.0)
    if verdict is False and len(d):
        ax.plot(d["fraction"].iloc[-1], d["value"].iloc[-1], marker="x", color=color, markersize=7)


def _draw_mean(ax, seeds, color, all_trained: bool) -> None:
    """The mean over seeds on a common grid of fractions, each seed interpolated within its range
    (a grid point outside every seed's range stays empty); dashed unless every seed trained."""
    import numpy as np

    grid = np.linspace(0, 1, 51)
    curves = np.array([np.interp(grid, d["fraction"], d["value"], left=np.nan, right=np.nan)
                       for d in seeds if len(d) > 1])
    if len(curves):
        counts = np.isfinite(curves).sum(axis=0)
        mean = np.where(counts > 0, np.nansum(curves, axis=0) / np.maximum(counts, 1), np.nan)
        ax.plot(grid, mean, color=color, linewidth=2, linestyle="-" if all_trained else "--")


def _flag(run, model: bool = False) -> str:
    if run["verdict"] is None:
        return f"{'too few steps' if run['n_points'] else 'objective not logged'}: {_label(run, model)}"
    broken = run["n_points"] > 0 and math.isnan(run["early"])  # judged on NaN/inf values
    return f"not trained{' (NaN)' if broken else ''}: {_label(run, model)}"


def _draw_panel(ax, curves, runs) -> None:
    """The runs of one panel, a colour per algorithm variant and SFT set; the runs that did not
    train, or cannot tell, are named under it."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    keys = _run_key(curves)
    groups = list(dict.fromkeys(zip(runs["model"], runs["method"], runs["algorithm"], runs["sft_data"])))
    models = len({g[0] for g in groups}) > 1
    handles, flagged = [], []
    for i, (model, method, algorithm, sft_data) in enumerate(groups):
        color = colors[i % len(colors)]
        group = runs[(runs["model"] == model) & (runs["algorithm"] == algorithm) & (runs["sft_data"] == sft_data)]
        seeds = [curves[keys == run["key"]].sort_values("step") for _, run in group.iterrows()]
        for (_, run), d in zip(group.iterrows(), seeds):
            _draw_run(ax, d, color, run["verdict"], alone=len(group) == 1)
        if len(group) > 1:
            _draw_mean(ax, seeds, color, all(v is True for v in group["verdict"]))
        flagged += [_flag(run, models) for _, run in group.iterrows() if run["verdict"] is not True]
        label = (f"{model}: " if models else "") + (sft_data if method == "sft" else f"{algorithm} (SFT {sft_data})")
        handles.append(Line2D([], [], color=color, label=label))
    if flagged:
        # under the x label, where no curve runs
        ax.annotate("\n".join(flagged), xy=(0, 0), xycoords=("axes fraction", ax.xaxis.label), xytext=(0, -2),
                    textcoords="offset points", fontsize=7, color="firebrick", va="top", ha="left")
    if len(groups) > 1:
        ax.legend(handles=handles, fontsize=6, loc="upper right", frameon=False)


def plot_training_health(table, summary, max_columns: int = 4):
    """Each method's objective against the fraction of the phase: one panel per method and
    preference set, a faint line per seed and a bold mean; runs that did not train are dashed and
    end in a cross, runs too short to tell are dotted, and both are named in their panel."""
    import textwrap

    import matplotlib.pyplot as plt

    runs = summary.assign(key=_run_key(summary), verdict=_verdicts(summary["trained"]))
    panels = list(dict.fromkeys(zip(runs["method"], runs["pref_data"])))
    ncols = max(1, min(max_columns, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False, layout="constrained")
    for ax, (method, pref_data) in zip(axes.flat, panels):
        objective = METHODS[method]
        curves = table[(table["method"] == method) & (table["pref_data"] == pref_data)
                       & (table["metric"] == objective.objective)]
        ax.set_title(method.upper() + (f" on {pref_data}" if pref_data else ""), fontsize=10)
        better = "higher" if objective.direction == "up" else "lower"
        ax.set_ylabel(f"{objective.objective} ({better} is better)", fontsize=8)
        ax.set_xlabel("fraction of the phase")
        ax.set_xlim(0, 1)
        _draw_panel(ax, curves, runs[(runs["method"] == method) & (runs["pref_data"] == pref_data)])
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    key = ("Training objective per run (faint: a seed, bold: their mean); dashed, ending in x: did not "
           "improve; dotted: too few logged steps to tell")
    fig.suptitle(textwrap.fill(key, width=55 * ncols), fontsize=8)  # a single panel is narrow
    return fig


def main(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display

    from valuedrift.analysis.plots import save
    from valuedrift.io import write_csv

    tags = parse_tags(args.tags, len(args.states))
    table, summary = health_tables([read_state(p) for p in args.states], tags)
    write_csv(table, args.table, float_format="%.6g")  # margins start near 0: keep significant digits
    write_csv(summary, args.summary, float_format="%.6g")
    save(plot_training_health(table, summary), args.figure)
    for (_, run), verdict in zip(summary.iterrows(), _verdicts(summary["trained"])):
        log.log(logging.INFO if verdict else logging.WARNING, "%s: %s", _label(run), run["note"])
