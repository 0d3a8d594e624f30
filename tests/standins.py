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
