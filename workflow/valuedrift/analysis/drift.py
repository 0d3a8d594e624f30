"""`valuedrift drift`: drift magnitude and drift time of every run (pooled over its training
seeds), topic and stance, with intervals over seeds x questions (definitions in
valuedrift.analysis.metrics and docs/method.md).

Tables:
- drift (--output): one row per run, topic and stance: M with its interval and raw p-value, the
  seeds' spread of M, the drift time, KL from the start at the end of the run and drift per nat.
- summary (--summary): per run, all topics: M [interval] and drift time of each stance, marked
  '*' where significant after Benjamini-Hochberg across the summary's own cells and every seed
  agrees on the sign.
- by seed (--by-seed, optional): M of each training seed, with its interval over questions.
- by snapshot (--by-snapshot, optional): M(t) = v_t - v_start and KL(pi_t || pi_start) at every
  snapshot, pooled (level "pooled") and per seed (level "seed"): what `plot --drift-vs-kl` draws.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

log = logging.getLogger(__name__)

FDR = 0.05


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import bootstrap_arguments, command_parser

    parser = command_parser(subparsers, "drift", __doc__)
    parser.add_argument("--by-question", required=True, help="per-question stance table from `aggregate`")
    parser.add_argument("--output", required=True, help="drift table to write (CSV)")
    parser.add_argument("--summary", required=True,
                        help="the study-style table to write (CSV): per phase, M [CI] and eta of each stance, all topics")
    parser.add_argument("--by-seed", help="drift of each training seed to write (CSV)")
    parser.add_argument("--by-snapshot", help="M(t) and KL from the start at every snapshot to write (CSV)")
    parser.add_argument("--training-health", help="summary of `training-health`: adds whether each run trained")
    bootstrap_arguments(parser)
    return parser


def cube(g, value: str) -> np.ndarray:
    """g's `value` as an array (seeds, questions, snapshots); every seed must answer every
    question at every snapshot."""
    from valuedrift.io import InputError

    g = g.sort_values(["seed", "question_id", "k"], kind="stable")
    shape = (g["seed"].nunique(), g["question_id"].nunique(), g["k"].nunique())
    if len(g) != np.prod(shape) or g.duplicated(["seed", "question_id", "k"]).any():
        raise InputError("not every seed answered every question exactly once at every snapshot")
    return g[value].to_numpy(dtype=float).reshape(shape)


def cells(tidy):
    """Per run and topic, in sorted order: (its keys, a cube per stance, the KL cube or None, its
    seeds, its snapshots k, each snapshot's fraction per seed (seeds, snapshots) and pooled: the
    mean over the seeds)."""
    from valuedrift.analysis.aggregate import RUN, with_topic_all
    from valuedrift.io import InputError

    for keys, g in with_topic_all(tidy).groupby(RUN + ["topic"], sort=True, dropna=False):
        where = dict(zip(RUN + ["topic"], keys))
        try:
            stances = {s: cube(gs, "p") for s, gs in g.groupby("stance", sort=True)}
            first = g[g["stance"] == min(stances)]
            K = cube(first, "kl")
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        seed_fractions = first.groupby(["seed", "k"])["fraction"].first().unstack("k").sort_index()
        yield (where, stances, None if np.isnan(K).any() else K, seed_fractions.index.to_numpy(),
               seed_fractions.columns.to_numpy(), seed_fractions.to_numpy(), seed_fractions.mean(axis=0).to_numpy())


def drift_row(where: dict, stance: str, P: np.ndarray, K, fractions, n_boot: int, confidence: float,
              seed: int) -> dict:
    import dataclasses

    from valuedrift.analysis.metrics import cell_rng, crossed_interval, drift, per_nat

    d = drift(P, fractions, n_boot, confidence, cell_rng(seed, [*where.values(), stance]))
    kl = dict.fromkeys(["kl_end", "kl_end_low", "kl_end_high", "drift_per_nat", "drift_per_nat_low",
                        "drift_per_nat_high"], np.nan)
    if K is not None:
        end = crossed_interval(K[:, :, -1], confidence)
        ratio = per_nat(P[:, :, -1] - P[:, :, 0], K[:, :, -1], confidence)
        kl = dict(zip(kl, (float(end.estimate), float(end.low), float(end.high), *ratio)))
    return {**where, "stance": stance, **dataclasses.asdict(d), **kl, "n_questions": P.shape[1],
            "n_snapshots": P.shape[2], "confidence": confidence}


def seed_rows(where: dict, stance: str, P: np.ndarray, seeds, confidence: float) -> list[dict]:
    from valuedrift.analysis.metrics import seed_magnitudes

    M = seed_magnitudes(P, confidence)
    start, end = P[:, :, 0].mean(axis=1), P[:, :, -1].mean(axis=1)
    return [{**where, "seed": int(s), "stance": stance, "start": start[i], "end": end[i],
             "magnitude": M.estimate[i], "magnitude_low": M.low[i], "magnitude_high": M.high[i],
             "p_value": M.p_value[i], "n_questions": P.shape[1], "confidence": confidence}
            for i, s in enumerate(seeds)]


def snapshot_rows(where: dict, stance: str, P: np.ndarray, K, seeds, ks, fractions, seed_fractions,
                  confidence: float) -> list[dict]:
    """M(t) and KL(pi_t || pi_start) at every snapshot: pooled (interval over seeds x questions)
    and per seed (interval over that seed's questions)."""
    from valuedrift.analysis.metrics import crossed_interval

    change = np.moveaxis(P - P[:, :, :1], 2, 0)  # (snapshots, seeds, questions)
    kl = np.moveaxis(K, 2, 0) if K is not None else np.full(change.shape, np.nan)
    base = {**where, "stance": stance, "n_questions": P.shape[1], "confidence": confidence}
    rows = _series(base, "pooled", None, ks, fractions, P.mean(axis=(0, 1)), crossed_interval(change, confidence),
                   crossed_interval(kl, confidence), P.shape[0])
    m, k = crossed_interval(change[:, :, None, :], confidence), crossed_interval(kl[:, :, None, :], confidence)
    for i, s in enumerate(seeds):
        rows += _series(base, "seed", int(s), ks, seed_fractions[i], P[i].mean(axis=0), m, k, 1, column=i)
    return rows


def _series(base: dict, level: str, seed, ks, fractions, shares, m, k, n_seeds: int, column=None) -> list[dict]:
    """One row per snapshot; `column` picks one seed out of per-seed (snapshots, seeds) arrays."""
    def at(values, t):
        return values[t] if column is None else values[t, column]

    return [{**base, "level": level, "seed": seed, "k": int(ks[t]), "fraction": fractions[t], "share": shares[t],
             "m": at(m.estimate, t), "m_low": at(m.low, t), "m_high": at(m.high, t),
             "kl": at(k.estimate, t), "kl_low": at(k.low, t), "kl_high": at(k.high, t), "n_seeds": n_seeds}
            for t in range(len(ks))]


def drift_tables(tidy, n_boot: int, confidence: float, seed: int):
    """(drift, by seed, by snapshot) tables of a per-question stance table."""
    import pandas as pd

    from valuedrift.analysis.aggregate import RUN

    tidy = tidy.assign(pref_data=tidy["pref_data"].fillna(""))
    if "seed" not in tidy:
        tidy = tidy.assign(seed=0)
    if "kl" not in tidy:
        tidy = tidy.assign(kl=np.nan)
    drift, by_seed, by_snapshot = [], [], []
    for where, stances, K, seeds, ks, seed_fractions, fractions in cells(tidy):
        for stance, P in stances.items():
            drift.append(drift_row(where, stance, P, K, fractions, n_boot, confidence, seed))
            by_seed += seed_rows(where, stance, P, seeds, confidence)
            by_snapshot += snapshot_rows(where, stance, P, K, seeds, ks, fractions, seed_fractions, confidence)
    by_snapshot = pd.DataFrame(by_snapshot)
    if len(by_snapshot):
        columns = RUN + ["topic", "stance", "level", "seed", "k", "fraction", "share", "m", "m_low", "m_high", "kl",
                         "kl_low", "kl_high", "n_seeds", "n_questions", "confidence"]
        by_snapshot = by_snapshot[columns].astype({"seed": "Int64"})
    return pd.DataFrame(drift), pd.DataFrame(by_seed), by_snapshot


def drift_table(tidy, n_boot: int, confidence: float, seed: int):
    """The drift table alone (see `drift_tables`)."""
    return drift_tables(tidy, n_boot, confidence, seed)[0]


def marks(drift, fdr: float = FDR):
    """Benjamini-Hochberg q-values across the rows of `drift` (one family), and whether each row
    counts as a significant change: q < fdr and, with several seeds, all seeds agree on the sign."""
    from valuedrift.analysis.metrics import benjamini_hochberg, significant

    p = drift["p_value"].to_numpy(dtype=float)
    return benjamini_hochberg(p), significant(p, drift["seeds_agree"].to_numpy(dtype=bool),
                                              drift["n_seeds"].to_numpy(), fdr)


def _eta_text(r) -> str:
    if np.isnan(r.drift_time):
        return "none (no significant change)"
    return f"{r.drift_time:.2f} [{r.drift_time_low:.2f}, {r.drift_time_high:.2f}]"


def summary_table(drift):
    """One row per phase (model, SFT set, algorithm, preference set), all topics pooled: for each
    stance 'M [low, high]' and the drift time, as the study tabulates them. '*' marks M where
    the Benjamini-Hochberg q across this table's cells (runs x stances) is below 0.05 and every
    seed's M has the pooled sign; q_<stance> gives the q-values."""
    from valuedrift.analysis.aggregate import RUN

    d = drift[drift["topic"] == "all"].reset_index(drop=True)
    q, sig = marks(d)
    cells = d.assign(
        M=[f"{r.magnitude:+.3f} [{r.magnitude_low:+.3f}, {r.magnitude_high:+.3f}]" + ("*" if s else "")
           for r, s in zip(d.itertuples(), sig)],
        eta=[_eta_text(r) for r in d.itertuples()],
        q=[f"{v:.3g}" if np.isfinite(v) else "" for v in q],
    )
    wide = cells.pivot(index=RUN, columns="stance", values=["M", "eta", "q"])
    wide.columns = [f"{value}_{stance}" for value, stance in wide.columns]
    wide = wide.join(d.groupby(RUN)[["n_seeds", "ci_over"]].first())
    order = {"sft": 0, "preference": 1}
    return wide.reset_index().sort_values(["phase", "model", "sft_data", "pref_data", "algorithm"],
                                          key=lambda c: c.map(order) if c.name == "phase" else c)


def exact_p(table):
    """p-values as text with 3 significant digits: the tables' 4 fixed decimals would turn
    p = 3e-6 into 0 and feed rounded values to the multiple-comparison correction."""
    columns = [c for c in table.columns if c.endswith("p_value")]
    return table.assign(**{c: [f"{v:.3g}" if np.isfinite(v) else "" for v in table[c].to_numpy(dtype=float)]
                           for c in columns})


def trained_runs(path: str):
    """Per run (seeds pooled): `trained` is "yes" where every seed's objective improved, "no" where
    any seed's did not, "unknown" where a seed's log was too short to tell."""
    import pandas as pd

    from valuedrift.analysis.aggregate import RUN

    health = pd.read_csv(path, keep_default_na=False)
    state = health["trained"].astype(str).str.lower().map({"true": "yes", "false": "no"}).fillna("unknown")
    health = health.assign(state=state, pref_data=health["pref_data"].astype(str))

    def pooled(states) -> str:
        return "no" if (states == "no").any() else ("yes" if (states == "yes").all() else "unknown")

    return health.groupby(RUN)["state"].agg(pooled).rename("trained").reset_index()


def with_training(table, trained):
    """`table` with each run's `trained` column; runs the health summary lacks (SFT from a skipped
    phase) are "unknown"."""
    from valuedrift.analysis.aggregate import RUN

    if trained is None:
        return table
    out = table.assign(pref_data=table["pref_data"].fillna("")).merge(trained, on=RUN, how="left")
    return out.assign(trained=out["trained"].fillna("unknown"))


def main(args: argparse.Namespace) -> None:
    import pandas as pd

    from valuedrift.io import write_csv

    drift, by_seed, by_snapshot = drift_tables(pd.read_parquet(args.by_question), args.bootstrap_samples,
                                               args.confidence, args.seed)
    trained = trained_runs(args.training_health) if args.training_health else None
    drift = with_training(drift, trained)
    write_csv(exact_p(drift), args.output)
    write_csv(with_training(summary_table(drift), trained), args.summary, float_format=None)
    if args.by_seed:
        write_csv(exact_p(by_seed), args.by_seed)
    if args.by_snapshot:
        write_csv(by_snapshot, args.by_snapshot)
    log.info("drift of %d (phase, topic, stance) cells over %s training seeds", len(drift),
             "/".join(map(str, sorted(drift["n_seeds"].unique()))) if len(drift) else "0")
