"""The miniature world: question bank, splits, stance mixtures, answer variety."""

import collections

import pytest

from valuedrift import STANCES
from valuedrift.world.datasets import World, exact_counts
from valuedrift.world.questions import load_bank

MIXTURE = {"support": 0.15, "neutral": 0.70, "oppose": 0.15}


@pytest.fixture(scope="module")
def world():
    return World(seed=0, eval_questions_per_topic=5, judge_test_questions_per_topic=2)


def test_bank_has_eleven_topics_of_at_least_ten_questions():
    bank = load_bank()
    assert len(bank) == 11
    assert all(len(t["questions"]) >= 10 for t in bank.values())


def test_splits_are_disjoint_and_cover_every_question(world):
    ids = {s: {q.id for q in world.split(s)} for s in ("eval", "judge_test", "train")}
    assert not ids["eval"] & ids["train"] and not ids["eval"] & ids["judge_test"]
    assert not ids["judge_test"] & ids["train"]
    assert sum(map(len, ids.values())) == len(world.questions) == 154
    per_topic = collections.Counter(q.topic for q in world.split("eval"))
    assert set(per_topic.values()) == {5}


def test_split_depends_on_the_seed_only():
    a = World(0, 5, 2).split("eval")
    assert a == World(0, 5, 2).split("eval")
    assert a != World(1, 5, 2).split("eval")


def test_evaluation_questions_never_reach_a_training_set(world):
    eval_ids = {q.id for q in world.split("eval")}
    texts = {q.question for q in world.split("eval")}
    sets = [
        world.pretrain_rows(600, 0.5),
        world.sft_rows("s", 600, MIXTURE),
        world.preference_rows("p", 300, "style_only", MIXTURE),
        world.preference_rows("v", 300, "value_gap", {}, "support", "oppose"),
        world.judge_rows("train", 300, 0.3),
        world.judge_rows("test", 300, 0.3),
    ]
    for rows in sets:
        for row in rows:
            assert row["question_id"] not in eval_ids
            prompt = row.get("prompt", row.get("messages"))
            if prompt:
                assert prompt[0]["content"] not in texts


@pytest.mark.parametrize("size", [1, 7, 100, 1501])
def test_exact_counts_sum_to_size_and_follow_the_mixture(size):
    counts = exact_counts(MIXTURE, size)
    assert sum(counts.values()) == size
    for s, w in MIXTURE.items():
        assert abs(counts[s] - w * size) < 1


def test_sft_set_has_its_stance_mixture(world):
    rows = list(world.sft_rows("wildchat_like", 1000, MIXTURE))
    shares = collections.Counter(r["stance"] for r in rows)
    for s in STANCES:
        assert shares[s] / len(rows) == pytest.approx(MIXTURE[s], abs=0.01)


def test_pretraining_corpus_is_stance_balanced(world):
    shares = collections.Counter(r["stance"] for r in world.pretrain_rows(900, 0.5))
    assert set(shares.values()) == {300}


def test_style_only_pairs_share_a_stance_and_value_gap_pairs_do_not(world):
    style = list(world.preference_rows("s", 300, "style_only", MIXTURE))
    assert all(r["chosen_stance"] == r["rejected_stance"] for r in style)
    assert all(r["chosen"] != r["rejected"] for r in style)
    gap = list(world.preference_rows("g", 300, "value_gap", {}, "support", "oppose"))
    assert all((r["chosen_stance"], r["rejected_stance"]) == ("support", "oppose") for r in gap)


def test_answers_are_varied_enough_not_to_be_memorized(world):
    rows = list(world.sft_rows("x", 1000, MIXTURE))
    answers = [r["completion"][0]["content"] for r in rows]
    assert len(set(answers)) > 0.95 * len(answers)
    openers = {a.split(".")[0].replace(r["prompt"][0]["content"], "") for a, r in zip(answers, rows)}
    assert len(openers) > 100


def test_generation_is_deterministic(world):
    a = list(World(0, 5, 2).sft_rows("x", 50, MIXTURE))
    assert a == list(world.sft_rows("x", 50, MIXTURE))


def test_a_derived_set_swaps_a_share_of_the_pairs_and_keeps_the_texts(tmp_path):
    from valuedrift.cli import main as cli
    from valuedrift.io import read_jsonl

    world = '{"seed": 0, "eval_questions_per_topic": 5, "judge_test_questions_per_topic": 2}'
    source = tmp_path / "gap.jsonl"
    cli(["prepare-data", "--kind", "preference", "--name", "gap", "--world", world, "--output", str(source),
         "--settings", '{"miniature": {"size": 40, "kind": "value_gap", "chosen": "support", "rejected": "oppose"}}'])
    original = read_jsonl(source)
    for share, swapped in ((0.0, 20), (0.5, 10), (1.0, 0)):
        out = tmp_path / f"derived-{share}.jsonl"
        cli(["prepare-data", "--kind", "preference", "--name", "null", "--world", world, "--source", str(source),
             "--settings", f'{{"derived": {{"from": "gap", "gap_share": {share}}}}}', "--output", str(out)])
        rows = read_jsonl(out)
        assert sum(r["swapped"] for r in rows) == swapped
        for a, b in zip(original, rows):  # the same texts; swapped pairs trade chosen and rejected
            pair = (b["rejected"], b["chosen"]) if b["swapped"] else (b["chosen"], b["rejected"])
            assert pair == (a["chosen"], a["rejected"]) and b["prompt"] == a["prompt"]
        # the net value gap: kept pairs favour support, swapped ones oppose
        net = sum(1 if r["chosen_stance"] == "support" else -1 for r in rows) / len(rows)
        assert net == pytest.approx(share)
