"""Hidden states of every layer for the probe pairs, pooled over each answer's tokens.

For each pair, prompt+chosen and prompt+rejected are rendered with the model's chat template and
run through the model once: one forward pass per batch returns every layer (the embeddings count as
layer 0). Each text is pooled two ways over its answer tokens (the prompt's tokens are left out):
`mean` (the mean over the answer's tokens) and `last` (the answer's last token). Texts are batched
by length, and the pooled vectors go straight into memory-mapped files, one per side and pooling,
of shape (layers, pairs, hidden), so memory stays bounded whatever the model and pair count.
An over-long text loses the start of its prompt, never its answer, and is counted.

The same pass gives the policy's own preference on each pair: the log-probability of each answer
given its prompt (summed over the answer's tokens), from the language-model head applied to the
final hidden states of the answer's positions only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SIDES = ("chosen", "rejected")
POOLINGS = ("mean", "last")


@dataclass(frozen=True)
class HiddenSettings:
    batch_size: int = 16          # texts per forward pass
    max_length: int = 2048        # tokens; longer texts are cut from the left (the prompt's start)
    dtype: str = "auto"           # auto: bfloat16 on a GPU that has it, else float32; or a torch dtype name
    poolings: tuple[str, ...] = POOLINGS  # the poolings the probes read (both are always extracted)

    def __post_init__(self) -> None:
        from valuedrift.io import InputError

        object.__setattr__(self, "poolings", tuple(self.poolings))
        if not self.poolings or set(self.poolings) - set(POOLINGS):
            raise InputError(f"representation.hidden.poolings must be a non-empty list of {list(POOLINGS)}, "
                             f"got {list(self.poolings)}")


def render(tokenizer, prompt: list[dict], answer: str) -> tuple[list[int], int]:
    """Token ids of prompt+answer and where the answer starts."""
    prefix = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prefix + answer, add_special_tokens=False)["input_ids"]
    return ids, len(prefix_ids)


def texts_of(pairs: list[dict], tokenizer, max_length: int) -> tuple[list[list[int]], list[int], int]:
    """(ids, answer start) of every text, chosen then rejected per pair, in pair order."""
    ids, starts, cut = [], [], 0
    for pair in pairs:
        for side in SIDES:
            text, start = render(tokenizer, pair["prompt"], pair[side][-1]["content"])
            if len(text) > max_length:
                cut += 1
                drop = len(text) - max_length
                text, start = text[drop:], max(0, start - drop)
            ids.append(text)
            starts.append(start)
    return ids, starts, cut


def open_outputs(out_dir: Path, layers: int, n_pairs: int, hidden: int) -> dict:
    return {(side, pool): np.lib.format.open_memmap(out_dir / f"{side}_{pool}.npy", mode="w+", dtype=np.float32,
                                                    shape=(layers, n_pairs, hidden))
            for side in SIDES for pool in POOLINGS}


def pool_batch(hidden_states, starts, lengths):
    """(mean, last) pooled answer tokens: each of shape (layers, batch, hidden)."""
    import torch

    stacked = torch.stack(hidden_states)  # (layers, batch, seq, hidden)
    positions = torch.arange(stacked.shape[2])
    mask = (positions[None, :] >= torch.tensor(starts)[:, None]) & (positions[None, :] < torch.tensor(lengths)[:, None])
    weights = mask.to(stacked.dtype) / mask.sum(1, keepdim=True).clamp(min=1)
    mean = torch.einsum("lbsh,bs->lbh", stacked, weights.to(stacked.device))
    last = stacked[:, torch.arange(len(lengths)), torch.tensor(lengths) - 1]
    return mean.float().cpu().numpy(), last.float().cpu().numpy()


def extract(model, tokenizer, pairs: list[dict], settings: HiddenSettings, out_dir: Path) -> tuple[dict, np.ndarray]:
    """Write the pooled states of `pairs` to `out_dir`; return the open arrays by (side, pooling), and
    the (pairs, 2) log-probabilities of the chosen and the rejected answer."""
    ids, starts, cut = texts_of(pairs, tokenizer, settings.max_length)
    if cut:
        log.warning("%d of %d texts were longer than %d tokens and lost the start of their prompt",
                    cut, len(ids), settings.max_length)
    layers = model.config.num_hidden_layers + 1
    out = open_outputs(out_dir, layers, len(pairs), model.config.hidden_size)
    logprobs = np.empty((len(pairs), 2))
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
    for batch, output in forward_batches(model, tokenizer, ids, order, settings.batch_size):
        hidden = output.hidden_states
        mean, last = pool_batch(hidden, [starts[i] for i in batch], [len(ids[i]) for i in batch])
        answer_lp = answer_logprobs(model, output.last_hidden_state, [ids[i] for i in batch], [starts[i] for i in batch])
        for j, i in enumerate(batch):  # text i is pair i // 2, side i % 2
            out[(SIDES[i % 2], "mean")][:, i // 2] = mean[:, j]
            out[(SIDES[i % 2], "last")][:, i // 2] = last[:, j]
            logprobs[i // 2, i % 2] = answer_lp[j]
    for array in out.values():
        array.flush()
    return out, logprobs


def forward_batches(model, tokenizer, ids: list[list[int]], order: list[int], batch_size: int):
    """(text indices, model output with every layer's states) per batch of `batch_size` texts taken
    in `order`, right-padded: the transformer without its language-model head, as logits over a
    150k vocabulary at every position would cost a third of the pass."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = max(len(ids[i]) for i in batch)
        input_ids = torch.tensor([ids[i] + [pad] * (width - len(ids[i])) for i in batch])
        attention = torch.tensor([[1] * len(ids[i]) + [0] * (width - len(ids[i])) for i in batch])
        with torch.inference_mode():
            yield batch, model.base_model(input_ids=input_ids.to(model.device),
                                          attention_mask=attention.to(model.device), output_hidden_states=True)


def answer_logprobs(model, final_states, ids: list[list[int]], starts: list[int], chunk: int = 1024) -> np.ndarray:
    """log p(answer | prompt) of each text of a batch: the head on the final (normed) states of the
    positions that predict answer tokens, only those, in chunks of rows, so a large vocabulary
    costs answer tokens x vocabulary and never batch x length x vocabulary at once."""
    import torch

    rows, targets, owner = [], [], []
    for j, (text, start) in enumerate(zip(ids, starts)):
        first = max(start, 1)  # a text cut to its answer alone has no prediction of its first token
        rows.append(final_states[j, first - 1:len(text) - 1])
        targets += text[first:]
        owner += [j] * (len(text) - first)
    states, targets, owner = torch.cat(rows), torch.tensor(targets), torch.tensor(owner)
    out = torch.zeros(len(ids), dtype=torch.float64)
    with torch.inference_mode():
        for i in range(0, len(states), chunk):
            logits = model.get_output_embeddings()(states[i:i + chunk]).float()
            picked = torch.log_softmax(logits, -1).gather(1, targets[i:i + chunk, None].to(logits.device))[:, 0]
            out.index_add_(0, owner[i:i + chunk], picked.cpu().double())
    return out.numpy()


def answer_lengths(pairs: list[dict], tokenizer) -> np.ndarray:
    """(pairs, 2) answer lengths in tokens, chosen and rejected: the length baseline's feature."""
    return np.array([[len(tokenizer(p[side][-1]["content"], add_special_tokens=False)["input_ids"]) for side in SIDES]
                     for p in pairs])
