"""A local Hugging Face chat model (hub id or model folder) as a label scorer and a generator.

Prompts are rendered with the model's chat template, sorted by length and batched with left
padding. A label's score is the total next-token probability of the first tokens that could
start it ("support", " support", "Support"); the softmax over the labels is returned.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from valuedrift.io import InputError

log = logging.getLogger(__name__)

Messages = list[dict]

# files that decide how text becomes token ids, hashed into a local model's version
TOKENIZER_FILES = ("tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json", "added_tokens.json",
                   "chat_template*")


@dataclass(frozen=True)
class LocalSettings:
    model: str                # hub id or model folder
    batch_size: int = 16      # prompts per forward pass or generate() call
    max_length: int = 2048    # longest rendered prompt, in tokens
    dtype: str = "auto"       # auto: bfloat16 on a GPU that has it, else float32; or a torch dtype name


def model_version(model: str) -> str:
    """sha256 prefix of a folder's config and tokenizer files; a hub id is its own version."""
    folder = Path(model)
    if not folder.is_dir():
        return model
    files = [folder / "config.json"] + sorted({p for pattern in TOKENIZER_FILES for p in folder.glob(pattern)})
    digest = hashlib.sha256()
    for path in files:
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def torch_dtype(name: str):
    import torch

    if name == "auto":
        cuda = torch.cuda.is_available()
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise InputError(f"LocalSettings.dtype {name!r} is not a torch dtype (try auto, float32, bfloat16)")
    return dtype


def prepare_tokenizer(tokenizer):
    """Left padding, and a pad token where the tokenizer has none (Llama 3's, for one): batched
    generation needs both. The pad token then doubles as end of text, which is never attended."""
    tokenizer.padding_side = "left"  # the last position is then every row's next token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def stop_token_ids(generation_config, tokenizer) -> list[int]:
    """Every id that ends a turn: a model's generation config may list several (Llama 3
    instruct: end of text, end of message, end of turn) where the tokenizer names one."""
    declared = getattr(generation_config, "eos_token_id", None)
    declared = [declared] if isinstance(declared, int) else list(declared or [])
    return list(dict.fromkeys([tokenizer.eos_token_id, *declared]))


class LocalChatModel:
    def __init__(self, settings: LocalSettings):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.settings = settings
        self.version = model_version(settings.model)
        self.tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(settings.model))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = AutoModelForCausalLM.from_pretrained(settings.model, dtype=torch_dtype(settings.dtype))
        self.model = model.to(device).eval()

    def render(self, messages: Messages) -> str:
        # thinking models (Qwen3) would otherwise open with a reasoning block, not the answer;
        # templates without the switch ignore it
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  enable_thinking=False)

    def batches(self, prompts: list[Messages]) -> Iterator[tuple[list[int], dict]]:
        """(prompt indices, encoded batch on the model's device), similar lengths together."""
        texts = [self.render(m) for m in prompts]
        lengths = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        too_long = [i for i, n in enumerate(lengths) if n > self.settings.max_length]
        if too_long:
            i = too_long[0]
            raise InputError(f"{len(too_long)} prompt(s) exceed max_length {self.settings.max_length} tokens "
                             f"(prompt {i} has {lengths[i]}); raise LocalSettings.max_length")
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        for start in range(0, len(order), self.settings.batch_size):
            idx = order[start:start + self.settings.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                                 add_special_tokens=False)
            yield idx, enc.to(self.model.device)

    def label_token_ids(self, labels: Sequence[str]) -> list[list[int]]:
        """The distinct first tokens of each label's spellings; labels may not share one."""
        ids = []
        for label in labels:
            firsts = {self.tokenizer(v, add_special_tokens=False)["input_ids"][0]
                      for v in (label, " " + label, label.capitalize())}
            # a first token that is only whitespace starts every word, so it says nothing of the label
            firsts = {i for i in firsts if self.tokenizer.decode([i]).strip()}
            if not firsts:
                raise InputError(f"label {label!r} has no first token in {self.settings.model}'s tokenizer")
            ids.append(sorted(firsts))
        for a in range(len(labels)):
            for b in range(a + 1, len(labels)):
                shared = set(ids[a]) & set(ids[b])
                if shared:
                    tokens = [self.tokenizer.convert_ids_to_tokens(t) for t in sorted(shared)]
                    raise InputError(f"labels {labels[a]!r} and {labels[b]!r} share the first token(s) {tokens} "
                                     f"in {self.settings.model}'s tokenizer, so their probabilities cannot be told apart")
        return ids

    def label_probabilities(self, prompts: list[Messages], labels: Sequence[str]) -> np.ndarray:
        """Array (n, len(labels)): softmax over the labels of their next-token log-probability mass."""
        import torch

        ids = self.label_token_ids(labels)
        out = np.zeros((len(prompts), len(labels)))
        for idx, enc in self.batches(prompts):
            with torch.inference_mode():
                # positions count real tokens only, so a left-padded row scores like an unpadded one
                positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
                logits = self.model(**enc, position_ids=positions, logits_to_keep=1).logits[:, -1].float()
            scores = torch.stack([torch.logsumexp(logits[:, i], dim=-1) for i in ids], dim=-1)
            out[idx] = torch.softmax(scores, dim=-1).cpu().numpy()
        return out

    def complete(self, prompts: list[Messages], max_tokens: int = 512, temperature: float = 0.7,
                 seed: int = 0) -> list[str]:
        """Sampled replies (greedy at temperature 0), stopping at end of turn; in input order."""
        import torch
        from transformers import set_seed

        set_seed(seed)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0} if temperature > 0 \
            else {"do_sample": False}
        eos = stop_token_ids(self.model.generation_config, self.tokenizer)
        out: list[str] = [""] * len(prompts)
        for idx, enc in self.batches(prompts):
            with torch.inference_mode():
                tokens = self.model.generate(**enc, **sampling, max_new_tokens=max_tokens,
                                             pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos)
            for row, new in zip(idx, tokens[:, enc["input_ids"].shape[1]:]):
                out[row] = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        return out
