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


def generate(tiny, prompts, out, **settings):
    cli(["generate", "--model", str(tiny / "base"), "--prompts", str(prompts), "--output", str(out),
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
