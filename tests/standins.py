"""Local stand-ins for hub models, in the exact layout the real studies' models have: a few-MB
random-weight Llama-3 or Qwen3 model whose tokenizer has the special tokens, chat template and
padding of the real one (Llama 3: no pad token, BOS added by the tokenizer and by the template,
three end-of-turn ids in generation_config.json; Qwen3: ChatML, a pad token, <|im_end|> ending a
turn). Tests build them where the studies name `meta-llama/...` or `Qwen/...`.
"""

from __future__ import annotations

from pathlib import Path

LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eom_id|>", "<|eot_id|>"]
LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
QWEN3_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN3_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _bpe(texts: list[str], special: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def llama3(folder: Path, texts: list[str], vocab_size: int = 600) -> Path:
    """A Llama-3.1-Instruct-shaped model folder."""
    from tokenizers import processors
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = _bpe(texts, LLAMA3_SPECIAL, vocab_size)
    bos = raw.token_to_id("<|begin_of_text|>")
    # like Llama 3's tokenizer, BOS is added to every encoding (and the chat template writes it too)
    raw.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                        chat_template=LLAMA3_TEMPLATE)
    ends = [raw.token_to_id(t) for t in ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")]
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=bos, eos_token_id=ends, tie_word_embeddings=True)
    _save(folder, LlamaForCausalLM(config), tokenizer, GenerationConfig(bos_token_id=bos, eos_token_id=ends,
                                                                         do_sample=True, temperature=0.6, top_p=0.9))
    return folder


def qwen3(folder: Path, texts: list[str], vocab_size: int = 600) -> Path:
    """A Qwen3-Instruct-shaped model folder."""
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    raw = _bpe(texts, QWEN3_SPECIAL, vocab_size)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        chat_template=QWEN3_TEMPLATE)
    ends = [raw.token_to_id("<|im_end|>"), raw.token_to_id("<|endoftext|>")]
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=2048,
                         eos_token_id=ends[0], tie_word_embeddings=True)
    _save(folder, Qwen3ForCausalLM(config), tokenizer,
          GenerationConfig(eos_token_id=ends, pad_token_id=ends[1], do_sample=True, temperature=0.7, top_p=0.8))
    return folder


def _save(folder: Path, model, tokenizer, generation_config) -> None:
    import torch

    torch.manual_seed(0)  # the same random weights on every machine
    model.init_weights()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    generation_config.save_pretrained(folder)


# --- the studies' hub models --------------------------------------------------------------------

def llama3_base(folder: Path, texts: list[str], vocab_size: int = 600) -> Path:
    """A Llama-3.x-base-shaped model folder: the instruct model's tokenizer without a chat template,
    `<|end_of_text|>` as its EOS and the only end id of `generation_config.json`."""
    import json

    llama3(folder, texts, vocab_size)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    config["eos_token"] = "<|end_of_text|>"
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    end = _token_id(folder, "<|end_of_text|>")
    for name in ("config.json", "generation_config.json"):
        values = json.loads((folder / name).read_text())
        values["eos_token_id"] = end
        (folder / name).write_text(json.dumps(values, indent=2))
    return folder


def _token_id(folder: Path, token: str) -> int:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids(token)


def world_texts() -> list[str]:
    """What the stand-in tokenizers learn from: the miniature world's questions and answers."""
    return [text for q, answers in world_answers() for text in (q.question, *answers.values())]


def world_answers(seed: int = 0):
    """(question, {stance: detailed answer}) for every question of the miniature world's bank."""
    import random

    from valuedrift.world.answers import answer
    from valuedrift.world.questions import split_questions, topics

    rng, bank = random.Random(seed), topics()
    return [(q, {s: answer(q, bank[q.topic], s, "detailed", rng) for s in ("support", "neutral", "oppose")})
            for q in split_questions(seed, 5, 2)]


# --- the studies' hub datasets ------------------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures" / "hub"


def _fixture(name: str) -> list[dict]:
    import json

    return [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def prism_rows():
    """PRISM-format conversations: the miniature world's questions as controversy-guided opening
    prompts, one statement per topic (values guided), and unguided small talk; with the topic each
    value-laden prompt was written for."""
    import copy

    from valuedrift.world.questions import split_questions

    template = _fixture("prism_conversations")[0]
    rows, topics = [], {}
    for q in split_questions(0, 5, 2):
        rows.append((q.question, "controversy guided", q.topic))
        topics.setdefault(q.topic, q.proposition)
    rows += [(f"{p[0].upper()}{p[1:]} is the right thing to do.", "values guided", t) for t, p in topics.items()]
    rows += [(f"Tell me a fun fact number {i}?", "unguided", None) for i in range(10)]
    out = []
    for i, (text, kind, _) in enumerate(rows):
        row = copy.deepcopy(template)
        row.update(conversation_id=f"c{i:04d}", opening_prompt=text, conversation_type=kind)
        out.append(row)
    return out, {text: topic for text, _, topic in rows}


def _hashed(text: str, n: int = 64) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _grown(name: str) -> dict[str, list[dict]]:
    """split -> rows of one dataset: its fixture rows, then one row per question of the miniature
    world (a supporting answer chosen over an opposing one), each a copy of a fixture row with its
    texts and ids replaced, so that every column keeps the hub's name, nesting and type."""
    import copy

    fixture = _fixture(name)
    template = copy.deepcopy(fixture[0])
    rows = {"train": list(fixture), "test": []}
    for q, answers in world_answers():
        chosen, rejected = answers["support"], answers["oppose"]
        row = copy.deepcopy(template)
        if name == "wildchat":
            row["conversation_hash"] = _hashed(q.question, 32)
            row["conversation"][0]["content"], row["conversation"][1]["content"] = q.question, chosen
            row.update(toxic=False, language="English", turn=1)
        elif name == "alpaca":
            row.update(instruction=q.question, input="", output=chosen,
                       text=f"### Instruction:\n{q.question}\n\n### Response:\n{chosen}")
        elif name == "ultrafeedback_binarized":
            user = {"content": q.question, "role": "user"}
            row.update(prompt=q.question, prompt_id=_hashed(q.question), score_chosen=8.0, score_rejected=3.0,
                       chosen=[user, {"content": chosen, "role": "assistant"}],
                       rejected=[user, {"content": rejected, "role": "assistant"}])
            row["messages"] = row["chosen"]
        elif name == "hh_rlhf":
            row.update(chosen=f"\n\nHuman: {q.question}\n\nAssistant: {chosen}",
                       rejected=f"\n\nHuman: {q.question}\n\nAssistant: {rejected}")
        # held-out questions go to the test split, where a dataset has one the studies read
        rows["test" if q.split != "train" else "train"].append(row)
    return rows


def _card(configs: list[dict]) -> str:
    """A dataset card whose YAML header declares the configs and splits, as the hub's cards do."""
    import yaml

    return f"---\n{yaml.safe_dump({'configs': configs}, sort_keys=False)}---\n"


def _parquet(rows: list[dict], path: Path) -> str:
    from datasets import Dataset

    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(rows).to_parquet(str(path))
    return str(path.relative_to(path.parents[1]))


def hub_datasets(folder: Path) -> dict[str, Path]:
    """Local folders in the layouts of the studies' hub datasets (parquet shards under data/ with a
    card naming the splits; HH-RLHF's gzipped JSONL per subset; PRISM's config `conversations`),
    which `load_dataset(folder, name, split=...)` reads as it reads the hub's."""
    import gzip
    import json

    out = {}
    for name, splits in (("wildchat", {"train": "train"}), ("alpaca", {"train": "train"}),
                         ("ultrafeedback_binarized", {"train": "train_prefs", "test": "test_prefs"})):
        grown, d = _grown(name), folder / name
        files = [{"split": hub, "path": _parquet(grown[ours], d / "data" / f"{hub}-00000-of-00001.parquet")}
                 for ours, hub in splits.items()]
        if name != "ultrafeedback_binarized":  # one split: the held-out rows are training rows too
            files = [{"split": "train", "path": _parquet(grown["train"] + grown["test"],
                                                         d / "data" / "train-00000-of-00001.parquet")}]
        (d / "README.md").write_text(_card([{"config_name": "default", "data_files": files}]))
        out[name] = d
    hh, d = _grown("hh_rlhf"), folder / "hh_rlhf"
    for subset, rows in (("harmless-base", hh["train"][::2] + hh["test"]), ("helpful-base", hh["train"][1::2])):
        (d / subset).mkdir(parents=True, exist_ok=True)
        with gzip.open(d / subset / "train.jsonl.gz", "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    (d / "README.md").write_text(_card([{"config_name": "default", "data_files": [
        {"split": "train", "path": "*/train.jsonl.gz"}]}]))
    out["hh_rlhf"] = d
    d = folder / "prism_alignment"
    d.mkdir(parents=True, exist_ok=True)
    (d / "conversations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prism_rows()[0]))
    (d / "README.md").write_text(_card([{"config_name": "conversations",
                                         "data_files": [{"split": "train", "path": "conversations.jsonl"}]}]))
    out["prism"] = d
    return out
