"""Layer-wise verdicts of the representation probe, corrected across layers and runs, seeds pooled.

Input: the combined `probes.csv` point estimates of every run (one row per seed, snapshot, probe
set, pooling and layer) and their `refits.csv` replicates (start vs the run's last snapshot, every
probe refitted on a bootstrap draw of prompts). One row per run configuration (training seeds
pooled), probe set, pooling and layer:

- the change of the probe's own AUROC from the start to the end, and the change of the start's
  probe transferred to the end (both against the start's own AUROC);
- their standard errors from a two-level bootstrap: per replicate, seeds drawn with replacement,
  then the mean of their replicate changes (replicate b of every seed resampled the same prompts);
  with one seed, the prompts' bootstrap alone (the row says how many seeds it pools);
- normal p-values, Benjamini-Hochberg q-values across every run and layer of one probe set,
  pooling and quantity, and the verdicts: enhances / degrades when q < fdr and every seed's change
  has the pooled sign, else preserves; geometry: attenuation when the own probe degrades, rotation
  when only the transferred probe falls, else stable.
- selectivity at the end: AUROC minus the mean shuffled-label AUROC of the replicates (the
  start's states with labels shuffled per prompt).
"""

from __future__ import annotations

import numpy as np

# a run configuration: the training seed is what the statistics pool over
RUN = ["model", "sft_data", "algorithm", "pref_data", "phase"]
CELL = RUN + ["probe_set", "pooling", "layer"]
FDR = 0.05


def _by_seed(table, refits):
    """Per seed and cell: the point changes (end - start) and the replicate changes."""
    import pandas as pd

    last = table.groupby(CELL + ["seed"], dropna=False)["k"].transform("max")
    start = table[table["k"] == 0].set_index(CELL + ["seed"])
    end = table[table["k"] == last].set_index(CELL + ["seed"])
    points = pd.DataFrame({"own": end["auroc"] - start["auroc"], "transfer": end["transfer_auroc"] - start["auroc"],
                           "auroc_start": start["auroc"], "auroc_end": end["auroc"],
                           "transfer_end": end["transfer_auroc"]})
    reps = refits.assign(own=refits["auroc_end"] - refits["auroc_start"],
                         transfer=refits["transfer_end"] - refits["auroc_start"])
    return points, reps


def _pooled(points, reps, key, confidence: float) -> dict:
    """One cell's pooled changes, standard errors, p-values and per-seed agreement."""
    from scipy import stats

    from valuedrift.analysis.metrics import cell_rng

    seeds = sorted(points["seed"])
    rng = cell_rng(0, key)
    out = {"n_seeds": len(seeds), "auroc_start": points["auroc_start"].mean(), "auroc_end": points["auroc_end"].mean(),
           "transfer_end": points["transfer_end"].mean(),
           "shuffled": reps["shuffled"].mean(), "selectivity_end": points["auroc_end"].mean() - reps["shuffled"].mean()}
    z = stats.norm.ppf(0.5 + confidence / 2)
    for quantity in ("own", "transfer"):
        matrix = reps.pivot(index="replicate", columns="seed", values=quantity)[seeds].to_numpy()  # (B, seeds)
        draws = rng.integers(0, len(seeds), size=(len(matrix), len(seeds)))
        pooled = np.take_along_axis(matrix, draws, axis=1).mean(axis=1)
        estimate, se = points[quantity].mean(), pooled.std(ddof=1)
        p = 2 * stats.norm.sf(abs(estimate) / se) if se > 0 else (1.0 if estimate == 0 else 0.0)
        out |= {f"{quantity}_change": estimate, f"{quantity}_se": se, f"{quantity}_low": estimate - z * se,
                f"{quantity}_high": estimate + z * se, f"{quantity}_p": p,
                f"{quantity}_seeds_agree": bool(np.all(np.sign(points[quantity]) == np.sign(estimate)))}
    return out


def layer_table(table, refits, confidence: float = 0.95, fdr: float = FDR):
    """The corrected layer-wise table (see the module's docstring)."""
    import pandas as pd

    from valuedrift.analysis.metrics import benjamini_hochberg, significant

    points, reps = _by_seed(table, refits)
    points = points.reset_index()
    rep_groups = dict(iter(reps.groupby(CELL, dropna=False)))
    rows = [{**dict(zip(CELL, key)), **_pooled(cell, rep_groups[key], key, confidence)}
            for key, cell in points.groupby(CELL, dropna=False)]
    out = pd.DataFrame(rows)
    for index in out.groupby(["probe_set", "pooling"], dropna=False).groups.values():  # one family each
        family = out.loc[index]
        for quantity in ("own", "transfer"):
            out.loc[index, f"{quantity}_q"] = benjamini_hochberg(family[f"{quantity}_p"])
            out.loc[index, f"{quantity}_significant"] = significant(
                family[f"{quantity}_p"], family[f"{quantity}_seeds_agree"], family["n_seeds"], fdr)
    out[["own_significant", "transfer_significant"]] = out[["own_significant", "transfer_significant"]].astype(bool)
    out["verdict"] = np.select([out["own_significant"] & (out["own_change"] > 0),
                                out["own_significant"] & (out["own_change"] < 0)], ["enhances", "degrades"], "preserves")
    out["geometry"] = np.select([out["verdict"] == "degrades",
                                 out["transfer_significant"] & (out["transfer_change"] < 0)],
                                ["attenuation", "rotation"], "stable")
    return out


def peak_layers(table):
    """(run, probe set, pooling) -> peak layer: the best selection score of the start (k=0; chosen on
    the selection prompts, never on evaluated rows) among the transformer layers, seeds averaged.
    Layer 0, the token embeddings, is not a candidate: mean-pooled, it is a bag of words, which
    separates texts by their vocabulary rather than by what the model makes of them."""
    keys = RUN + ["probe_set", "pooling"]
    start = table[(table["k"] == 0) & (table["layer"] > 0)]
    scores = start.groupby(keys + ["layer"], dropna=False)["select_score"].mean().reset_index()
    return scores.loc[scores.groupby(keys, dropna=False)["select_score"].idxmax()].set_index(keys)["layer"]


def summary(table, layers):
    """One row per run, probe set and pooling: the layer-wise row at the peak layer, beside the
    policy's own margin on the set (start, end, change) and the set's value gap."""
    keys = RUN + ["probe_set", "pooling"]
    peaks = peak_layers(table).rename("peak_layer").reset_index()
    at_peak = layers.merge(peaks, on=keys).query("layer == peak_layer").drop(columns="layer")
    last = table.groupby(RUN + ["seed"], dropna=False)["k"].transform("max")
    once = table[table["layer"] == 0]  # the policy's columns repeat on every layer
    start = once[once["k"] == 0].groupby(keys, dropna=False)[["policy_margin"]].mean()
    end = once[once["k"] == last[once.index]].groupby(keys, dropna=False).agg(
        policy_margin_end=("policy_margin", "mean"), policy_margin_change=("policy_margin_change", "mean"),
        policy_accuracy_end=("policy_accuracy", "mean"), length_auroc=("length_auroc", "mean"),
        data_value_gap=("data_value_gap", "mean"))
    policy = end.join(start.rename(columns={"policy_margin": "policy_margin_start"})).reset_index()
    return at_peak.merge(policy, on=keys, how="left")
