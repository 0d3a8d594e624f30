"""The representation probe's hidden states, read back against the model's own outputs, and the
run-level command on a real (tiny) run."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import WORLD

from valuedrift.cli import main as cli
from valuedrift.io import read_jsonl

TAGS = {"model": "tiny", "seed": 0, "sft_data": "s", "algorithm": "", "pref_data": "", "phase": "sft"}


@pytest.fixture(scope="module")
def pairs(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    cli(["prepare-data", "--kind", "probe-pairs", "--world", WORLD, "--output", str(path), "--settings",
         json.dumps({"miniature": {"size": 24, "kind": "value_gap", "chosen": "support", "rejected": "oppose"}})])
    return read_jsonl(path)


def test_probe_pairs_are_held_out_from_every_training_set(pairs, tiny):
    trained = {r["question_id"] for r in read_jsonl(tiny / "sft.jsonl") + read_jsonl(tiny / "pref.jsonl")}
    from valuedrift.world.questions import split_questions

    held_out = {q.id for q in split_questions(0, 5, 2) if q.split in ("eval", "judge_test")}
    assert {p["question_id"] for p in pairs} <= held_out and not {p["question_id"] for p in pairs} & trained


def test_pooled_states_match_the_models_own_hidden_states(pairs, tiny, tmp_path):
    import torch

    from valuedrift.behaviour.generate import load_for_inference
    from valuedrift.representation.hidden import HiddenSettings, extract, render

    model, tokenizer = load_for_inference(str(tiny / "base"))
    batched, logprobs = extract(model, tokenizer, pairs, HiddenSettings(batch_size=7), tmp_path)
    (tmp_path / "one").mkdir()
    single, single_logprobs = extract(model, tokenizer, pairs, HiddenSettings(batch_size=1), tmp_path / "one")
    for key in batched:  # padding and batching change nothing
        np.testing.assert_allclose(batched[key], single[key], atol=1e-5)
    np.testing.assert_allclose(logprobs, single_logprobs, atol=1e-3)
    ids, start = render(tokenizer, pairs[3]["prompt"], pairs[3]["rejected"][0]["content"])
    with torch.no_grad():
        output = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        hidden = output.hidden_states
    # the policy's log p(answer | prompt), from the model's own logits
    own = torch.log_softmax(output.logits[0, start - 1:-1].float(), -1).gather(1, torch.tensor(ids[start:])[:, None]).sum()
    assert logprobs[3, 1] == pytest.approx(float(own), abs=1e-3)
    assert batched[("rejected", "mean")].shape == (len(hidden), len(pairs), model.config.hidden_size)
    for layer, h in enumerate(hidden):
        np.testing.assert_allclose(batched[("rejected", "mean")][layer, 3], h[0, start:].mean(0).numpy(), atol=1e-5)
        np.testing.assert_allclose(batched[("rejected", "last")][layer, 3], h[0, -1].numpy(), atol=1e-5)
    # the answer's tokens only: the prompt's would make chosen and rejected of a pair alike
    assert 0 < start < len(ids) - 3


def test_a_skipped_phase_publishes_its_start_once(tiny, tmp_path):
    cli(["publish-start", "--model", str(tiny / "base"), "--run-dir", str(tmp_path / "run"), "--snapshots", "3"])
    snapshots = tmp_path / "run" / "snapshots"
    assert (snapshots / "0" / "model.safetensors").is_file() and not (snapshots / "0").is_symlink()
    for k in (1, 2, 3):
        assert (snapshots / str(k)).is_symlink() and (snapshots / str(k) / "meta.json").is_file()


def test_probe_command_on_a_run_compares_every_snapshot_with_its_start(tiny, pairs, tmp_path):
    run = tmp_path / "run"
    cli(["publish-start", "--model", str(tiny / "base"), "--run-dir", str(run), "--snapshots", "1"])
    out, refits = tmp_path / "probes.csv", tmp_path / "refits.csv"
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    cli(["probe-representations", "--run-dir", str(run), "--snapshots", "1",
         "--pairs", f"stance={pairs_file}", f"copy={pairs_file}",
         "--settings", json.dumps({"probe": {"folds": 3, "inner_folds": 2, "Cs": [1.0], "refits": 4, "n_boot": 50}}),
         "--tags", json.dumps(TAGS), "--output", str(out), "--refits", str(refits)])
    table, replicates = pd.read_csv(out), pd.read_csv(refits)
    layers = 3  # embeddings + the fixture model's 2 layers
    assert len(table) == 2 * 2 * 2 * layers and set(table["pooling"]) == {"mean", "last"}
    assert set(table["probe_set"]) == {"stance", "copy"} and len(replicates) == 2 * 2 * layers * 4
    # both snapshots are the same model: identical geometry, no change, and the policy's margin
    # on support-vs-oppose pairs is the same at both
    mean = table[table["pooling"] == "mean"]
    assert np.allclose(mean["cka"], 1) and np.allclose(mean["dom_cosine"], 1)
    assert np.allclose(replicates["auroc_end"], replicates["auroc_start"]) and (table["model"] == "tiny").all()
    assert np.allclose(table["policy_margin_change"], 0) and table["policy_margin"].notna().all()
    assert (table["data_value_gap"] == 1).all()  # support vs oppose in every pair
    # the selection prompts are not evaluated: a quarter of the 24 pairs' prompts set aside
    assert (table["n_pairs"] < len(pairs)).all() and (table["n_select_prompts"] >= 3).all()
    assert not list(run.glob(".hidden-*"))  # the temporary hidden states are gone

    # the report of this run: a layer-wise table with nothing called, the summary at a peak layer
    report = {name: tmp_path / name for name in ("table.csv", "layers.csv", "summary.csv", "by_layer.png",
                                                  "changes.png", "peak.png", "cka.png")}
    cli(["representation-report", "--probes", str(out), "--refits", str(refits), "--table", str(report["table.csv"]),
         "--layers", str(report["layers.csv"]), "--summary", str(report["summary.csv"]),
         "--auroc-by-layer", str(report["by_layer.png"]), "--layer-changes", str(report["changes.png"]),
         "--peak-change", str(report["peak.png"]), "--cka", str(report["cka.png"])])
    layers = pd.read_csv(report["layers.csv"])
    assert len(layers) == 2 * 2 * layers["layer"].nunique() and (layers["verdict"] == "preserves").all()
    assert (layers["own_change"] == 0).all() and (layers["n_seeds"] == 1).all()
    summary = pd.read_csv(report["summary.csv"])
    assert len(summary) == 2 * 2 and (summary["peak_layer"] > 0).all()
    assert all(path.stat().st_size > 1000 for path in report.values())

    # SAE and crosscoder at each set's peak layer; the run's two snapshots are one model, so the
    # crosscoder needs no feature of one side only and the preference effects do not move
    features, shifts = tmp_path / "features.csv", tmp_path / "shifts.csv"
    cli(["probe-features", "--run-dir", str(run), "--snapshots", "1", "--pairs", f"stance={pairs_file}",
         "--probes", str(out), "--settings", json.dumps({"width": 2, "k": 8, "epochs": 2, "batch_size": 64}),
         "--tags", json.dumps(TAGS), "--output", str(features), "--shifts", str(shifts)])
    row = pd.read_csv(features).iloc[0]
    peak = summary[(summary["probe_set"] == "stance") & (summary["pooling"] == "mean")]["peak_layer"].iloc[0]
    assert row["layer"] == peak and row["sae_l0"] <= 8 and row["sae_fve_start"] == pytest.approx(row["sae_fve_end"])
    assert row["share_start_only"] == 0 and row["share_end_only"] == 0 and row["effect_correlation"] == pytest.approx(1)
    assert len(pd.read_csv(shifts)) == row["sae_features"]
