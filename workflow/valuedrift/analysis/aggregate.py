"""`valuedrift aggregate`: every judged snapshot of every run into tidy tables.

- `by_question`: one row per run, training seed, snapshot, question and stance: p = mean over the
  sampled answers of the judge's p(stance), and kl = mean over the same answers of
  log pi_t(y) - log pi_start(y), a Monte-Carlo estimate of KL(pi_t || pi_start) (NaN where the
  stance files carry no log-probabilities). Drift metrics start from this table.
- `distributions`: one row per run pooled over its seeds, snapshot, topic (and topic "all") and
  stance: the stance share v (mean over seeds and questions) with its interval over seeds x
  questions (valuedrift.analysis.metrics.crossed_interval).
- `distributions_by_seed` (optional): the same per training seed, with intervals over questions.
"""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)

RUN = ["model", "sft_data", "algorithm", "pref_data", "phase"]
SNAPSHOT = RUN + ["k", "step", "fraction"]
SEED_SNAPSHOT = RUN + ["seed", "k", "step", "fraction"]
VERSIONS = ["judge", "judge_version", "prompts_version"]


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import bootstrap_arguments, command_parser

    parser = command_parser(subparsers, "aggregate", __doc__)
    parser.add_argument("stances", nargs="+", help="stances JSONL files (one per snapshot)")
    parser.add_argument("--by-question", required=True, help="per-question table to write (.parquet; a .csv beside it)")
    parser.add_argument("--distributions", required=True,
                        help="per-topic table, seeds pooled, to write (.parquet; a .csv beside it)")
    parser.add_argument("--distributions-by-seed",
                        help="per-topic table of each training seed to write (.parquet; a .csv beside it)")
    bootstrap_arguments(parser)
    return parser


def read_stances(path: str) -> "pd.DataFrame":
    """One stances file; a missing or non-numeric probability is an error naming its line, since
    the mean in `by_question` would skip it and quietly average the other answers."""
    import numpy as np
    import pandas as pd

    from valuedrift import STANCES
    from valuedrift.io import DataError

    frame = pd.read_json(path, lines=True)
    for column in [f"p_{s}" for s in STANCES]:
        values = pd.to_numeric(frame[column], errors="coerce") if column in frame else pd.Series(np.nan, frame.index)
        bad = ~np.isfinite(values.to_numpy(dtype=np.float64))
        if bad.any():
            lineno, row = raw_row(path, int(np.argmax(bad)))
            value = json.dumps(row[column]) if column in row else "missing"
            raise DataError(f"{path}:{lineno}: {column} is {value}, not a finite number — judge this snapshot again")
    return frame


def raw_row(path: str, index: int) -> tuple[int, dict]:
    """The 1-based line and the JSON object of the 0-based row `index` (pandas skips blank lines)."""
    with open(path, encoding="utf-8") as f:
        lines = [(n, line) for n, line in enumerate(f, start=1) if line.strip()]
    lineno, line = lines[index]
    return lineno, json.loads(line)


def _log_ratio(answers):
    """log pi_t(y) - log pi_start(y) per answer; NaN where either is missing."""
    import numpy as np
    import pandas as pd

    if "logp" not in answers or "logp_start" not in answers:
        return pd.Series(np.nan, index=answers.index)
    return pd.to_numeric(answers["logp"], errors="coerce") - pd.to_numeric(answers["logp_start"], errors="coerce")


def by_question(frames) -> "pd.DataFrame":
    import numpy as np
    import pandas as pd

    from valuedrift import STANCES

    answers = pd.concat(frames, ignore_index=True)
    answers["pref_data"] = answers["pref_data"].fillna("")
    # stance files from before training seeds were a grid axis hold one seed
    answers["seed"] = answers["seed"].fillna(0).astype(int) if "seed" in answers else 0
    answers["log_ratio"] = _log_ratio(answers)
    keys = SEED_SNAPSHOT + VERSIONS + ["topic", "question_id"]
    # a fixed order of the answers inside each question, so means are bit-identical run to run
    answers = answers.sort_values(keys + (["sample"] if "sample" in answers else []), kind="stable")
    groups = answers.groupby(keys, dropna=False, sort=True)
    per_q = groups[[f"p_{s}" for s in STANCES]].mean()
    per_q["n_answers"] = groups.size()
    # KL from the answers scored for it (behaviour.kl_samples of each question); NaN where none is
    per_q["kl"] = groups["log_ratio"].mean()
    tidy = per_q.reset_index().melt(id_vars=keys + ["n_answers", "kl"], value_vars=[f"p_{s}" for s in STANCES],
                                    var_name="stance", value_name="p")
    tidy["stance"] = tidy["stance"].str.removeprefix("p_")
    return tidy.sort_values(keys + ["stance"]).reset_index(drop=True)


def with_topic_all(tidy):
    """The rows again under topic "all", so every per-topic statistic also pools all questions."""
    import pandas as pd

    return pd.concat([tidy, tidy.assign(topic="all")], ignore_index=True)


def crossed_table(tidy, keys: list[str], value: str, confidence: float):
    """Per group of `keys`: the mean of `value` over its (seed, question) cells and the crossed
    interval (valuedrift.analysis.metrics.crossed_interval), computed from the groups' sums of
    squares at once. Every seed of a group must answer the same questions once each. A group
    with a missing value gets NaN."""
    import numpy as np
    import pandas as pd

    from valuedrift.analysis.metrics import crossed_from_sums
    from valuedrift.io import InputError

    d = tidy.sort_values(keys + ["seed", "question_id"], kind="stable")
    group = d.groupby(keys, sort=True, dropna=False).ngroup().to_numpy()
    seed = d.groupby(keys + ["seed"], sort=True, dropna=False).ngroup().to_numpy()
    question = d.groupby(keys + ["question_id"], sort=True, dropna=False).ngroup().to_numpy()
    x = d[value].to_numpy(dtype=float)
    n = np.bincount(group)
    S = np.bincount(np.unique(np.column_stack([group, seed]), axis=0)[:, 0])
    Q = np.bincount(np.unique(np.column_stack([group, question]), axis=0)[:, 0])
    if (n != S * Q).any():
        bad = d.groupby(keys, sort=True, dropna=False).size().index[int(np.argmax(n != S * Q))]
        raise InputError(f"{dict(zip(keys, bad if isinstance(bad, tuple) else (bad,)))}: not every seed answered "
                         "every question exactly once")
    missing = np.bincount(group, weights=np.isnan(x)) > 0
    x = np.nan_to_num(x)

    def mean_by(index):
        return np.bincount(index, weights=x) / np.bincount(index)

    m, seed_mean, question_mean = mean_by(group), mean_by(seed), mean_by(question)
    ss_seed = np.bincount(group, weights=(seed_mean[seed] - m[group]) ** 2)
    ss_question = np.bincount(group, weights=(question_mean[question] - m[group]) ** 2)
    ss_residual = np.bincount(group, weights=(x - seed_mean[seed] - question_mean[question] + m[group]) ** 2)
    half, p, _ = crossed_from_sums(m, S, Q, ss_seed, ss_question, ss_residual, confidence)
    m, half, p = (np.where(missing, np.nan, a) for a in (m, half, p))
    out = d.groupby(keys, sort=True, dropna=False).size().reset_index()[keys]
    return out.assign(estimate=m, low=m - half, high=m + half, p_value=p, n_seeds=S, n_questions=Q)


def snapshot_times(tidy, per_seed: bool):
    """`step` and `fraction` of each snapshot k. Online algorithms may reach snapshot k at slightly
    different steps in different seeds, so pooled rows key a snapshot on k and take the means over
    the seeds (step rounded)."""
    import numpy as np

    times = tidy.groupby(RUN + ["seed", "k"], sort=True, dropna=False)[["step", "fraction"]].first()
    if not per_seed:
        times = times.groupby(RUN + ["k"], sort=True, dropna=False).mean()
        times["step"] = np.round(times["step"]).astype(int)
    return times.reset_index()


def distributions(tidy, confidence: float, per_seed: bool = False):
    """Stance share per snapshot, topic and stance: pooled over seeds (interval over seeds x
    questions), or per seed (`per_seed`, interval over questions)."""
    from valuedrift.analysis.metrics import interval_label

    run = RUN + (["seed"] if per_seed else [])
    table = crossed_table(with_topic_all(tidy), run + ["k", "topic", "stance"], "p", confidence)
    table = table.merge(snapshot_times(tidy, per_seed), on=run + ["k"], how="left")
    # a share lies in [0, 1]; so does its interval
    table = table.assign(share=table["estimate"], ci_low=table["low"].clip(0, 1), ci_high=table["high"].clip(0, 1),
                         ci_over=[interval_label(s, q) for s, q in zip(table["n_seeds"], table["n_questions"])])
    table["confidence"] = confidence
    columns = run + ["k", "step", "fraction", "topic", "stance", "share", "ci_low", "ci_high", "n_questions"]
    return table[columns + ([] if per_seed else ["n_seeds", "ci_over"]) + ["confidence"]]


def write_table(df, path: str) -> None:
    from valuedrift.io import atomic_path

    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(path.removesuffix(".parquet") + ".csv") as tmp:
        df.to_csv(tmp, index=False)


def main(args: argparse.Namespace) -> None:
    frames = [read_stances(path) for path in args.stances]
    tidy = by_question(frames)
    write_table(tidy, args.by_question)
    dist = distributions(tidy, args.confidence)
    write_table(dist, args.distributions)
    if args.distributions_by_seed:
        write_table(distributions(tidy, args.confidence, per_seed=True), args.distributions_by_seed)
    log.info("aggregated %d snapshot files: %d question rows, %d distribution rows over %d training seeds",
             len(frames), len(tidy), len(dist), tidy["seed"].nunique())
