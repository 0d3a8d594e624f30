"""The stages on models shaped like the studies' hub models (tests/standins.py): Llama 3 (no pad
token, BOS from both the tokenizer and the chat template, three end-of-turn ids) and Qwen3 (ChatML),
through SFT, DPO with LoRA, generation, a local LLM judge and the representation probe, each as
its CLI runs it in the workflow."""

import json

import pytest

import standins
from conftest import WORLD
from valuedrift.cli import main as cli
from valuedrift.io import read_jsonl

SETTINGS = json.dumps({"num_train_epochs": 1, "per_device_train_batch_size": 8, "max_length": 128,
                       "learning_rate": 1e-3})
LORA = json.dumps({"r": 4, "lora_alpha": 8, "target_modules": "all-linear"})


@pytest.fixture(scope="module")
def models(tiny, tmp_path_factory):
    d = tmp_path_factory.mktemp("standins")
    # the tokenizers learn the miniature world's dialogues, which the tests then feed them
    texts = [m["content"] for row in read_jsonl(tiny / "pretrain.jsonl") for m in row["messages"]]
    return {"llama3": standins.llama3(d / "llama3", texts), "qwen3": standins.qwen3(d / "qwen3", texts),
            "llama3_base": standins.llama3_base(d / "llama3_base", texts)}


def test_the_standins_have_their_hub_models_quirks(models):
    from transformers import AutoTokenizer, GenerationConfig

    llama = AutoTokenizer.from_pretrained(models["llama3"])
    assert llama.pad_token is None and llama("x")["input_ids"][0] == llama.bos_token_id
    assert len(GenerationConfig.from_pretrained(models["llama3"]).eos_token_id) == 3
    assert AutoTokenizer.from_pretrained(models["qwen3"]).pad_token == "<|endoftext|>"


@pytest.mark.parametrize("arch", ["llama3", "qwen3"])
def test_every_stage_runs_on_hub_shaped_models(arch, models, tiny, tmp_path):
    from transformers import AutoTokenizer

    from valuedrift.representation.hidden import render
    from valuedrift.training.data import rows_for

    runs = tmp_path / "runs"
    cli(["train", "--algorithm", "sft", "--model", str(models[arch]), "--data", str(tiny / "sft.jsonl"),
         "--run-dir", str(runs / "sft"), "--fractions", "[1.0]", "--settings", SETTINGS, "--seed", "0"])
    cli(["train", "--algorithm", "dpo", "--model", str(runs / "sft" / "snapshots" / "1"), "--data",
         str(tiny / "pref.jsonl"), "--run-dir", str(runs / "dpo"), "--fractions", "[1.0]", "--settings", SETTINGS,
         "--lora", LORA, "--seed", "0"])
    snapshots = [str(runs / "dpo" / "snapshots" / str(k)) for k in (0, 1)]
    assert (runs / "dpo" / "snapshots" / "1" / "adapter_config.json").is_file()

    # one BOS, from the template, in what the probes and PPO's prompts tokenize (Llama's tokenizer
    # would add a second one if asked to)
    tokenizer = AutoTokenizer.from_pretrained(snapshots[1])
    pair = read_jsonl(tiny / "pref.jsonl")[0]
    ids, start = render(tokenizer, pair["prompt"], pair["chosen"][-1]["content"])
    prompt_ids = rows_for("prompt_ids", [pair], tokenizer)[0]["input_ids"]
    if tokenizer.bos_token_id is not None:
        assert ids.count(tokenizer.bos_token_id) == prompt_ids.count(tokenizer.bos_token_id) == 1
    assert 0 < start < len(ids)

    prompts = tmp_path / "prompts.jsonl"
    cli(["prepare-data", "--kind", "eval-prompts", "--world", WORLD, "--output", str(prompts)])
    generations = [str(tmp_path / f"g{k}.jsonl") for k in (0, 1)]
    cli(["generate", "--model", *snapshots, "--prompts", str(prompts), "--output", *generations,
         "--settings", json.dumps({"samples_per_question": 1, "max_new_tokens": 16})])
    stances = [str(tmp_path / f"s{k}.jsonl") for k in (0, 1)]
    judge = {"name": "qwen_judge", "settings": {"kind": "local_llm", "model": str(models["qwen3"]), "batch_size": 32}}
    cli(["judge", "--generations", *generations, "--judges", json.dumps([judge]), "--output", *stances])
    rows = read_jsonl(stances[1])
    assert len(rows) == 55 and all(abs(r["p_support"] + r["p_neutral"] + r["p_oppose"] - 1) < 1e-5 for r in rows)

    pairs = tmp_path / "pairs.jsonl"
    cli(["prepare-data", "--kind", "probe-pairs", "--name", "stance", "--world", WORLD, "--output", str(pairs),
         "--settings", json.dumps({"miniature": {"size": 30, "kind": "value_gap", "chosen": "support",
                                                 "rejected": "oppose"}})])
    cli(["probe-representations", "--run-dir", str(runs / "dpo"), "--snapshots", "1", "--pairs", f"stance={pairs}",
         "--settings", json.dumps({"probe": {"refits": 2}}), "--output", str(tmp_path / "probes.csv"),
         "--refits", str(tmp_path / "refits.csv")])
    assert (tmp_path / "probes.csv").stat().st_size > 0


@pytest.mark.parametrize("algorithm", ["simpo", "orpo"])
def test_simpo_and_orpo_train_a_tokenizer_without_pad_token(algorithm, models, tiny, tmp_path):
    """TRL's CPO and ORPO collators refuse to pad without a pad token, which Llama 3 lacks: the
    internals study's Llama runs of SimPO and ORPO crashed at their first batch."""
    cli(["train", "--algorithm", algorithm, "--model", str(models["llama3"]), "--data", str(tiny / "pref.jsonl"),
         "--run-dir", str(tmp_path / algorithm), "--fractions", "[1.0]", "--settings", SETTINGS,
         "--lora", LORA, "--seed", "0"])
    assert (tmp_path / algorithm / "snapshots" / "1" / "adapter_config.json").is_file()



def test_a_base_model_without_a_chat_template_takes_its_instruct_siblings(models, tiny, tmp_path, caplog):
    """Found by the Value Drifts rehearsal: SFT of a Llama-3 base model, which has no chat template,
    crashed inside TRL. It is now refused up front, naming the config key; with the key, SFT (and
    a skipped SFT) start from the instruct sibling's template and end-of-turn token, which every
    later stage reads from the snapshots."""
    from transformers import AutoTokenizer, GenerationConfig

    base, instruct = str(models["llama3_base"]), str(models["llama3"])
    train = ["train", "--algorithm", "sft", "--model", base, "--data", str(tiny / "sft.jsonl"), "--fractions", "[1.0]",
             "--seed", "0"]
    for refused in ([*train, "--run-dir", str(tmp_path / "none"), "--settings", SETTINGS],
                    ["publish-start", "--model", base, "--run-dir", str(tmp_path / "skip-none"), "--snapshots", "1"]):
        caplog.clear()
        with pytest.raises(SystemExit):
            cli(refused)
        assert "has no chat template" in caplog.text and "models.<name>.chat_template" in caplog.text

    settings = json.dumps({**json.loads(SETTINGS), "chat_template_path": instruct})
    cli([*train, "--run-dir", str(tmp_path / "sft"), "--settings", settings])
    cli(["publish-start", "--model", base, "--run-dir", str(tmp_path / "skip"), "--snapshots", "1",
         "--chat-template", instruct])
    eot = AutoTokenizer.from_pretrained(instruct).convert_tokens_to_ids("<|eot_id|>")
    for snapshot in (tmp_path / "sft" / "snapshots" / "0", tmp_path / "sft" / "snapshots" / "1",
                     tmp_path / "skip" / "snapshots" / "0"):
        tokenizer = AutoTokenizer.from_pretrained(snapshot)
        assert tokenizer.chat_template == AutoTokenizer.from_pretrained(instruct).chat_template
        assert tokenizer.eos_token == "<|eot_id|>" and GenerationConfig.from_pretrained(snapshot).eos_token_id == eot
