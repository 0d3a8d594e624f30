"""`valuedrift drift`: drift magnitude and drift time of every phase, topic and stance, with
bootstrap confidence intervals (definitions in valuedrift.analysis.metrics)."""

from __future__ import annotations

import argparse
import dataclasses
import logging

log = logging.getLogger(__name__)


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import bootstrap_arguments, command_parser

    parser = command_parser(subparsers, "drift", __doc__)
    parser.add_argument("--by-question", required=True, help="per-question stance table from `aggregate`")
    parser.add_argument("--output", required=True, help="drift table to write (CSV)")
    parser.add_argument("--summary", required=True,
                        help="the study-style table to write (CSV): per phase, M [CI] and eta of each stance, all topics")
    bootstrap_arguments(parser)
    return parser


def drift_table(tidy, n_boot: int, confidence: float, seed: int):
    import pandas as pd

    from valuedrift.analysis.aggregate import RUN, with_topic_all
    from valuedrift.analysis.metrics import drift

    rows = []
    for keys, g in with_topic_all(tidy).groupby(RUN + ["topic", "stance"], sort=True):
        wide = g.pivot_table(index="question_id", columns="k", values="p")
        if wide.isna().any().any():
            raise ValueError(f"{dict(zip(RUN + ['topic', 'stance'], keys))}: not every question was "
                             "answered at every snapshot")
        fractions = g.groupby("k")["fraction"].first().loc[wide.columns].to_numpy()
        d = drift(wide.to_numpy(), fractions, n_boot, confidence, seed)
        rows.append({**dict(zip(RUN + ["topic", "stance"], keys)), **dataclasses.asdict(d),
                     "n_questions": wide.shape[0], "n_snapshots": wide.shape[1]})
    return pd.DataFrame(rows)


def summary_table(drift):
    """One row per phase (model, SFT set, algorithm, preference set), all topics pooled: for each
    stance 'M [low, high]' and the drift time, as the study tabulates them."""
    import pandas as pd

    from valuedrift.analysis.aggregate import RUN

    d = drift[drift["topic"] == "all"]
    cells = d.assign(
        M=d.apply(lambda r: f"{r.magnitude:+.3f} [{r.magnitude_low:+.3f}, {r.magnitude_high:+.3f}]", axis=1),
        eta=d.apply(lambda r: f"{r.drift_time:.2f} [{r.drift_time_low:.2f}, {r.drift_time_high:.2f}]", axis=1),
    )
    wide = cells.pivot(index=RUN, columns="stance", values=["M", "eta"])
    wide.columns = [f"{value}_{stance}" for value, stance in wide.columns]
    order = {"sft": 0, "preference": 1}
    return wide.reset_index().sort_values(["phase", "model", "sft_data", "pref_data", "algorithm"],
                                          key=lambda c: c.map(order) if c.name == "phase" else c)


def main(args: argparse.Namespace) -> None:
    import pandas as pd

    from valuedrift.io import write_csv

    table = drift_table(pd.read_parquet(args.by_question), args.bootstrap_samples, args.confidence, args.seed)
    write_csv(table, args.output)
    write_csv(summary_table(table), args.summary, float_format=None)
    log.info("drift of %d (phase, topic, stance) cells", len(table))
