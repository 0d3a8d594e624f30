"""`valuedrift generate` on a tiny model: the rows it writes, and the backend and dtype settings."""

import importlib.util
import json

import pytest

from valuedrift.cli import main as cli
from valuedrift.io import read_jsonl

from conftest import WORLD


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "eval.jsonl"
    cli(["prepare-data", "--kind", "eval-prompts", "--world", WORLD, "--output", str(path)])
    return path


def generate(tiny, prompts, out, model=None, **settings):
    cli(["generate", "--model", str(model or tiny / "base"), "--prompts", str(prompts), "--output", str(out),
         "--settings", json.dumps({"samples_per_question": 3, "max_new_tokens": 16, **settings}),
         "--tags", '{"run": "test"}'])
    return read_jsonl(out)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_every_question_gets_its_samples_in_either_dtype(tiny, prompts, tmp_path, dtype):
    questions = read_jsonl(prompts)
    rows = generate(tiny, prompts, tmp_path / "out.jsonl", dtype=dtype, batch_size=16)
    assert len(rows) == 3 * len(questions)
    assert {(r["question_id"], r["sample"]) for r in rows} == {(q["question_id"], s) for q in questions
                                                                 for s in range(3)}
    assert all(0 < r["n_tokens"] <= 16 and r["run"] == "test" and r["generation"]["dtype"] == dtype for r in rows)
    assert any(r["answer"] for r in rows)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_without_vllm_says_how_to_get_it(tiny, prompts, tmp_path, caplog):
    with pytest.raises(SystemExit) as e:
        generate(tiny, prompts, tmp_path / "out.jsonl", backend="vllm")
    assert e.value.code == 2
    assert "needs the vllm package" in caplog.text and "backend: hf" in caplog.text
    assert not (tmp_path / "out.jsonl").exists()


def test_unknown_backend_is_refused(tiny, prompts, tmp_path, caplog):
    with pytest.raises(SystemExit):
        generate(tiny, prompts, tmp_path / "out.jsonl", backend="tgi")
    assert "behaviour.backend 'tgi'" in caplog.text


def test_a_tokenizer_without_pad_token_generates_and_every_declared_end_of_turn_stops(tiny, prompts, tmp_path):
    """Llama 3's tokenizer has no pad token and its generation config lists several end-of-turn ids:
    generation pads with end of text and stops at any of them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plain = generate(tiny, prompts, tmp_path / "plain.jsonl", max_new_tokens=24)
    tokenizer = AutoTokenizer.from_pretrained(tiny / "base")
    model = AutoModelForCausalLM.from_pretrained(tiny / "base")
    # half the vocabulary declared as end of turn besides the tokenizer's own: a barely trained
    # model then writes one within a few tokens
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, *range(len(tokenizer) // 2)]
    tokenizer.pad_token = None
    folder = tmp_path / "llama-like"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert AutoTokenizer.from_pretrained(folder).pad_token is None

    rows = generate(tiny, prompts, tmp_path / "stops.jsonl", model=folder, max_new_tokens=24)
    assert len(rows) == len(plain)
    assert sum(r["finished"] for r in plain) < 0.2 * len(plain)
    assert sum(r["finished"] for r in rows) > 0.9 * len(rows)
    assert sum(r["n_tokens"] for r in rows) < 0.3 * sum(r["n_tokens"] for r in plain)
    assert all(r["n_tokens"] == 24 or r["finished"] for r in rows)


def perturbed_copy(tiny, folder):
    """The tiny base model with slightly different weights: another 'snapshot'."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny / "base")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny / "base").save_pretrained(folder)
    return folder


def test_a_run_in_one_process_writes_what_each_snapshot_would_alone(tiny, prompts, tmp_path):
    """One job per run: each snapshot's file equals the file a job of its own would write."""
    other = perturbed_copy(tiny, tmp_path / "other")
    settings = json.dumps({"samples_per_question": 2, "max_new_tokens": 12})
    together = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    cli(["generate", "--model", str(tiny / "base"), str(other), "--prompts", str(prompts),
         "--output", *map(str, together), "--settings", settings])
    for model, out in ((tiny / "base", together[0]), (other, together[1])):
        alone = tmp_path / "alone.jsonl"
        cli(["generate", "--model", str(model), "--prompts", str(prompts), "--output", str(alone),
             "--settings", settings])
        # the same answers and scores; only the start's scores need the start in the same job
        drop = ("logp_start",)
        assert [{k: v for k, v in r.items() if k not in drop} for r in read_jsonl(out)] == \
               [{k: v for k, v in r.items() if k not in drop} for r in read_jsonl(alone)]
    assert read_jsonl(together[0]) != read_jsonl(together[1])


def test_answers_are_scored_under_the_snapshot_and_the_start(tiny, prompts, tmp_path):
    """logp and logp_start are each answer's log-probability, at the sampling temperature, under the
    snapshot and under the run's start: checked token by token by hand for a few answers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    other = perturbed_copy(tiny, tmp_path / "other")
    (other / "meta.json").write_text(json.dumps({"k": 1, "step": 5, "fraction": 0.5}))
    outs = [tmp_path / "k0.jsonl", tmp_path / "k1.jsonl"]
    cli(["generate", "--model", str(tiny / "base"), str(other), "--prompts", str(prompts), "--output", *map(str, outs),
         "--settings", json.dumps({"samples_per_question": 2, "max_new_tokens": 10, "temperature": 0.7})])
    start, later = read_jsonl(outs[0]), read_jsonl(outs[1])
    assert all(r["logp"] == r["logp_start"] for r in start)  # k=0 is the start
    assert all(r["logp"] < 0 and r["logp_start"] < 0 for r in later)
    assert any(abs(r["logp"] - r["logp_start"]) > 1e-3 for r in later)

    # by hand: each sampled token's log-probability, one forward pass per token
    from valuedrift.behaviour.generate import GenerationSettings, HfGenerator, render_prompts

    settings = GenerationSettings(samples_per_question=2, max_new_tokens=10, temperature=0.7)
    generator = HfGenerator(settings, seed=0)
    questions = [q["question"] for q in read_jsonl(prompts)][:2]
    generator.answers(str(tiny / "base"), questions)
    samples = generator.answers(str(other), questions)
    tokenizer = AutoTokenizer.from_pretrained(tiny / "base")
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in render_prompts(tokenizer, questions)]
    models = {"logp": AutoModelForCausalLM.from_pretrained(other), "logp_start": AutoModelForCausalLM.from_pretrained(tiny / "base")}
    for sample in samples[:3]:
        for key, model in models.items():
            total = 0.0
            for j, token in enumerate(sample.token_ids):
                with torch.no_grad():
                    logits = model(torch.tensor([prompt_ids[sample.question] + sample.token_ids[:j]])).logits[0, -1]
                total += float(torch.log_softmax(logits / 0.7, -1)[token])
            assert abs(total - getattr(sample, key)) < 1e-3, (key, total, getattr(sample, key))


def test_models_and_outputs_must_pair_up(tiny, prompts, tmp_path, caplog):
    with pytest.raises(SystemExit) as e:
        cli(["generate", "--model", str(tiny / "base"), str(tiny / "base"), "--prompts", str(prompts),
             "--output", str(tmp_path / "a.jsonl")])
    assert e.value.code == 2 and "2 --model folders but 1 --output files" in caplog.text


def test_only_the_first_kl_samples_of_each_question_are_scored(tiny, prompts, tmp_path):
    out = tmp_path / "k0.jsonl"
    cli(["generate", "--model", str(tiny / "base"), "--prompts", str(prompts), "--output", str(out),
         "--settings", json.dumps({"samples_per_question": 3, "max_new_tokens": 6, "kl_samples": 1})])
    rows = read_jsonl(out)
    assert all((r["logp"] is not None) == (r["sample"] == 0) for r in rows)


def test_cheap_judges_judge_in_the_generate_job_as_the_judge_command_would(tiny, prompts, stance_judge, tmp_path):
    judges = json.dumps([{"name": "stance_classifier", "settings": {"kind": "stance_classifier"}, "model_dir": str(stance_judge)}])
    gens, inside = tmp_path / "gens.jsonl", tmp_path / "inside.jsonl"
    cli(["generate", "--model", str(tiny / "base"), "--prompts", str(prompts), "--output", str(gens),
         "--settings", json.dumps({"samples_per_question": 2, "max_new_tokens": 8}), "--judges", judges,
         "--stances", str(inside)])
    apart = tmp_path / "apart.jsonl"
    cli(["judge", "--generations", str(gens), "--judges", judges, "--output", str(apart)])
    assert read_jsonl(inside) == read_jsonl(apart) and len(read_jsonl(inside)) == 2 * len(read_jsonl(prompts))
