"""`valuedrift build-base`: the miniature world's base model, built and pretrained offline.

A byte-level BPE tokenizer is trained on the pretraining corpus, a Qwen3-shaped causal LM of a
few hundred thousand parameters is initialized, and TRL's SFTTrainer pretrains it on the
stance-balanced corpus with the loss on every token (plain language modelling of dialogues).
The result is an ordinary Hugging Face model folder, used exactly like a hub model downstream.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile

log = logging.getLogger(__name__)

# Turns render as "<|user|>\n…<|end|>\n<|assistant|>\n…<|end|>\n"; `<|end|>` is the end-of-turn
# (EOS) token that generation stops at. The prompt rendering is a prefix of the full rendering,
# which TRL's prompt-completion handling requires.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|assistant|>\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<|pad|>", eos_token="<|end|>", bos_token=None,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer, hidden_size: int, num_layers: int, num_heads: int, seed: int):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return Qwen3ForCausalLM(config)


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "build-base", __doc__)
    parser.add_argument("--corpus", required=True, help="pretraining corpus (JSONL with 'messages')")
    parser.add_argument("--output", required=True, help="model folder to write")
    parser.add_argument("--settings", required=True, help="JSON: architecture and 'pretrain' (SFTConfig fields)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    return parser


def main(args: argparse.Namespace) -> None:
    import torch
    from datasets import Dataset

    from valuedrift.io import atomic_dir, read_jsonl
    from valuedrift.training.trainers import Models, make_config, make_trainer

    torch.set_num_threads(args.threads)
    settings = json.loads(args.settings)
    rows = read_jsonl(args.corpus, required=["messages"])
    texts = [m["content"] for row in rows for m in row["messages"]]
    tokenizer = train_tokenizer(texts, settings["vocab_size"])
    model = build_model(tokenizer, settings["hidden_size"], settings["num_layers"], settings["num_heads"], args.seed)
    log.info("built a %d-layer model with %.2f M parameters, vocabulary %d",
             settings["num_layers"], model.num_parameters() / 1e6, len(tokenizer))
    dataset = Dataset.from_list([{"messages": row["messages"]} for row in rows])
    with tempfile.TemporaryDirectory() as scratch, atomic_dir(args.output) as out:
        config = make_config("sft", settings.get("pretrain", {}), scratch, args.seed)
        make_trainer("sft", Models(model, tokenizer), dataset, config).train()
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
