"""Randomly initialized models for the benchmarks, shaped like the miniature world's tiny model or
like Qwen3-0.6B (28 layers, hidden 1024, 16 query / 8 key-value heads, vocabulary 151,936), with the
world's BPE tokenizer (its ids fit either vocabulary)."""

from __future__ import annotations

SHAPES = {
    "tiny": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=4, head_dim=32),
    "qwen3-0.6b": dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128),
}


def world_tokenizer():
    from valuedrift.models.tiny import train_tokenizer
    from valuedrift.world.datasets import World

    return train_tokenizer([r["messages"][-1]["content"] for r in World(0, 5, 2).pretrain_rows(2000, 0.5)], 1024)


def build(shape: str, tokenizer, dtype: str = "float32"):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(**{"vocab_size": len(tokenizer), **SHAPES[shape]}, tie_word_embeddings=True,
                         max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return Qwen3ForCausalLM(config).to(device=device, dtype=getattr(torch, dtype)).eval()


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
