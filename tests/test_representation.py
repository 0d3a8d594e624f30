"""The representation probe's hidden states, read back against the model's own outputs, and the
run-level command on a real (tiny) run."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import WORLD

from valuedrift.cli import main as cli
from valuedrift.io import read_jsonl


@pytest.fixture(scope="module")
def pairs(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    cli(["prepare-data", "--kind", "probe-pairs", "--world", WORLD, "--output", str(path), "--settings",
         json.dumps({"miniature": {"size": 24, "kind": "value_gap", "chosen": "support", "rejected": "oppose"}})])
    return read_jsonl(path)


def test_probe_pairs_are_held_out_from_every_training_set(pairs, tiny):
    trained = {r["question_id"] for r in read_jsonl(tiny / "sft.jsonl") + read_jsonl(tiny / "pref.jsonl")}
    from valuedrift.world.questions import split_questions

    judge_test = {q.id for q in split_questions(0, 5, 2) if q.split == "judge_test"}
    assert {p["question_id"] for p in pairs} <= judge_test and not {p["question_id"] for p in pairs} & trained


def test_pooled_states_match_the_models_own_hidden_states(pairs, tiny, tmp_path):
    import torch

    from valuedrift.behaviour.generate import load_for_inference
    from valuedrift.representation.hidden import HiddenSettings, extract, render

    model, tokenizer = load_for_inference(str(tiny / "base"))
    batched = extract(model, tokenizer, pairs, HiddenSettings(batch_size=7), tmp_path)
    (tmp_path / "one").mkdir()
    single = extract(model, tokenizer, pairs, HiddenSettings(batch_size=1), tmp_path / "one")
    for key in batched:  # padding and batching change nothing
        np.testing.assert_allclose(batched[key], single[key], atol=1e-5)
    ids, start = render(tokenizer, pairs[3]["prompt"], pairs[3]["rejected"][0]["content"])
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
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
    out = tmp_path / "probes.csv"
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    cli(["probe-representations", "--run-dir", str(run), "--snapshots", "1", "--pairs", str(pairs_file),
         "--settings", json.dumps({"probe": {"folds": 3, "inner_folds": 2, "Cs": [1.0], "n_boot": 50}}),
         "--tags", '{"model": "tiny", "phase": "sft"}', "--output", str(out)])
    table = pd.read_csv(out)
    layers = 3  # embeddings + the fixture model's 2 layers
    assert len(table) == 2 * 2 * layers and set(table["pooling"]) == {"mean", "last"}
    # both snapshots are the same model: identical geometry and no change
    mean = table[table["pooling"] == "mean"]
    assert np.allclose(mean["cka"], 1) and np.allclose(mean["dom_cosine"], 1)
    assert np.allclose(table["delta_auroc"], 0) and (table["model"] == "tiny").all()
    assert not list(run.glob(".hidden-*"))  # the temporary hidden states are gone


def test_report_picks_the_peak_on_the_starts_inner_scores_and_calls_verdicts_from_the_interval():
    from valuedrift.representation.report import summary

    rows = []
    for k in (0, 1):
        for layer, select in enumerate((0.99, 0.7, 0.9, 0.8)):
            # the snapshot's own test AUROC would favour layer 1; the choice must not look at it
            auroc = 0.95 if (k == 1 and layer == 1) else select
            delta = (0.05, 0.01, 0.09) if (k == 1 and layer == 2) else (0.0, -0.01, 0.01)
            rows.append({"model": "m", "seed": 0, "sft_data": "s", "algorithm": "dpo", "pref_data": "p", "phase": "preference",
                         "k": k, "pooling": "mean", "layer": layer, "select_score": select, "auroc": auroc,
                         "delta_auroc": delta[0], "delta_low": delta[1], "delta_high": delta[2], "cka": 1.0,
                         "dom_cosine": 1.0, "transfer_auroc": auroc, "selectivity": 0.4, "length_auroc": 0.6})
    out = summary(pd.DataFrame(rows)).iloc[0]
    assert out["peak_layer"] == 2  # layer 0, the embeddings, is not a candidate
    assert out["verdict"] == "enhances" and out["change"] == pytest.approx(0.05)
