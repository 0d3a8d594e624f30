"""Training rows for each algorithm family, derived from the project's SFT and preference files.

- sft:        prompt, completion
- preference: prompt, chosen, rejected (DPO, IPO, SimPO, ORPO, reward model)
- unpaired:   prompt, completion, label: each pair gives a desirable (chosen) and an undesirable
              (rejected) row, as KTO expects
- prompt:     prompt: the pairs' prompts, answered online by the policy (GRPO, RLOO)
- prompt_ids: input_ids of the chat-rendered prompt, as TRL's PPO loop expects
"""

from __future__ import annotations

from valuedrift.io import read_jsonl

REQUIRED = {
    "sft": ["prompt", "completion"],
    "preference": ["prompt", "chosen", "rejected"],
    "unpaired": ["prompt", "chosen", "rejected"],
    "prompt": ["prompt"],
    "prompt_ids": ["prompt"],
}


def rows_for(kind: str, rows: list[dict], tokenizer=None) -> list[dict]:
    if kind in ("sft", "preference"):
        return [{c: row[c] for c in REQUIRED[kind]} for row in rows]
    if kind == "unpaired":
        return [{"prompt": row["prompt"], "completion": row[side], "label": side == "chosen"}
                for row in rows for side in ("chosen", "rejected")]
    if kind == "prompt":
        return [{"prompt": row["prompt"]} for row in rows]
    if kind == "prompt_ids":
        return [{"input_ids": tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True,
                                                            tokenize=True, return_dict=False)}
                for row in rows]
    raise ValueError(f"unknown training data kind {kind!r}")


def load_training_data(kind: str, path: str, tokenizer=None):
    """A `datasets.Dataset` of the rows algorithm family `kind` trains on; a malformed input row
    is an error naming the file and line."""
    from datasets import Dataset

    return Dataset.from_list(rows_for(kind, read_jsonl(path, required=REQUIRED[kind]), tokenizer))
