"""`valuedrift judge-sensitivity`: do the drift conclusions depend on the judge?

Every judge of `judge.compare` labels every run's answers. For each judge the drift of every run
and stance (all topics) is recomputed exactly as `valuedrift drift` does, and set beside the main
judge's: the sign of M and whether M is significant (Benjamini-Hochberg across each judge's own
cells, every seed agreeing). One row per run, stance and compared judge; `same_sign` and
`same_verdict` say whether that judge leads to the main judge's conclusion.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import bootstrap_arguments, command_parser

    parser = command_parser(subparsers, "judge-sensitivity", __doc__)
    parser.add_argument("stances", nargs="+", help="stances JSONL files of every judge (each row names its judge)")
    parser.add_argument("--main", required=True, help="the main judge (judge.name)")
    parser.add_argument("--table", required=True, help="CSV to write")
    bootstrap_arguments(parser)
    return parser


def verdicts(tidy, n_boot: int, confidence: float, seed: int):
    """One judge's drift at topic "all": M, its interval and whether it is a significant change."""
    from valuedrift.analysis.drift import drift_table, marks

    d = drift_table(tidy, n_boot, confidence, seed)
    d = d[d["topic"] == "all"].reset_index(drop=True)
    return d.assign(significant=marks(d)[1])


def comparison(by_judge: dict, main: str):
    """Rows of every compared judge beside the main judge's."""
    import numpy as np
    import pandas as pd

    from valuedrift.analysis.aggregate import RUN

    keys = RUN + ["stance"]
    base = by_judge[main].set_index(keys)
    rows = []
    for judge, d in by_judge.items():
        if judge == main:
            continue
        other = d.set_index(keys).reindex(base.index)
        rows.append(pd.DataFrame({
            "judge": judge, "M_main": base["magnitude"], "M": other["magnitude"],
            "M_low": other["magnitude_low"], "M_high": other["magnitude_high"],
            "significant_main": base["significant"], "significant": other["significant"],
            "same_sign": np.sign(base["magnitude"]) == np.sign(other["magnitude"]),
            "same_verdict": (base["significant"] == other["significant"])
            & (~base["significant"] | (np.sign(base["magnitude"]) == np.sign(other["magnitude"]))),
        }).reset_index())
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=keys + ["judge"])


def main(args: argparse.Namespace) -> None:
    from valuedrift.analysis.aggregate import by_question, read_stances
    from valuedrift.io import InputError, write_csv

    frames = [read_stances(path) for path in args.stances]
    tidy = by_question(frames)
    judges = sorted(tidy["judge"].unique())
    if args.main not in judges:
        raise InputError(f"no stances of the main judge {args.main!r} among the files (judges: {', '.join(judges)})")
    by_judge = {j: verdicts(tidy[tidy["judge"] == j], args.bootstrap_samples, args.confidence, args.seed)
                for j in judges}
    table = comparison(by_judge, args.main)
    write_csv(table, args.table)
    changed = table[~table["same_verdict"].astype(bool)] if len(table) else table
    log.info("%d of %d (run, stance, judge) conclusions differ from %s's", len(changed), len(table), args.main)
