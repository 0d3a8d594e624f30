"""`valuedrift aggregate`: every judged snapshot of every run into tidy tables.

- `by_question`: one row per run, snapshot, question and stance: p = mean over the sampled answers
  of the judge's p(stance). Drift metrics resample these questions.
- `distributions`: one row per run, snapshot, topic (and topic "all") and stance: the stance
  share v (mean over questions) with a bootstrap confidence interval over questions.
"""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)

RUN = ["model", "sft_data", "algorithm", "pref_data", "phase"]
SNAPSHOT = RUN + ["k", "step", "fraction"]
VERSIONS = ["judge", "judge_version", "prompts_version"]


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import bootstrap_arguments, command_parser

    parser = command_parser(subparsers, "aggregate", __doc__)
    parser.add_argument("stances", nargs="+", help="stances JSONL files (one per snapshot)")
    parser.add_argument("--by-question", required=True, help="per-question table to write (.parquet; a .csv beside it)")
    parser.add_argument("--distributions", required=True, help="per-topic table to write (.parquet; a .csv beside it)")
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


def by_question(frames) -> "pd.DataFrame":
    import pandas as pd

    from valuedrift import STANCES

    answers = pd.concat(frames, ignore_index=True)
    answers["pref_data"] = answers["pref_data"].fillna("")
    keys = SNAPSHOT + VERSIONS + ["topic", "question_id"]
    per_q = answers.groupby(keys, dropna=False)[[f"p_{s}" for s in STANCES]].mean()
    per_q["n_answers"] = answers.groupby(keys, dropna=False).size()
    tidy = per_q.reset_index().melt(id_vars=keys + ["n_answers"], value_vars=[f"p_{s}" for s in STANCES],
                                    var_name="stance", value_name="p")
    tidy["stance"] = tidy["stance"].str.removeprefix("p_")
    return tidy.sort_values(keys + ["stance"]).reset_index(drop=True)


def with_topic_all(tidy):
    """The rows again under topic "all", so every per-topic statistic also pools all questions."""
    import pandas as pd

    return pd.concat([tidy, tidy.assign(topic="all")])


def distributions(tidy, n_boot: int, confidence: float, seed: int):
    import numpy as np
    import pandas as pd

    from valuedrift.analysis.metrics import bootstrap_shares, percentile_ci

    rng = np.random.default_rng(seed)
    rows = []
    for keys, g in with_topic_all(tidy).groupby(SNAPSHOT + ["topic", "stance"], sort=True):
        p = g["p"].to_numpy()[:, None]
        low, high = percentile_ci(bootstrap_shares(p, n_boot, rng), confidence)
        rows.append({**dict(zip(SNAPSHOT + ["topic", "stance"], keys)), "share": p.mean(),
                     "ci_low": float(low[0]), "ci_high": float(high[0]), "n_questions": len(p)})
    return pd.DataFrame(rows)


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
    dist = distributions(tidy, args.bootstrap_samples, args.confidence, args.seed)
    write_table(dist, args.distributions)
    log.info("aggregated %d snapshot files: %d question rows, %d distribution rows",
             len(frames), len(tidy), len(dist))
