"""Sparse dictionaries of one layer's activations: an SAE (SAELens) and a start-vs-end crosscoder.

- `train_sae`: a TopK sparse autoencoder (SAELens's `TopKTrainingSAE`, trained by its `SAETrainer`)
  on token activations of one model. TopK fixes the number of active features per token, so no
  sparsity penalty needs tuning per model.
- `Crosscoder`: one shared dictionary for two models' activations of the same tokens (Lindsey et
  al. 2024, "Sparse crosscoders"), in the BatchTopK form of Minder et al. 2025 ("Overcoming
  sparsity artifacts in crosscoders"): the code f = BatchTopK(W_start x_start + W_end x_end + b)
  keeps the k x batch largest pre-activations of a batch, and each model has its own decoder,
  x_m ~ D_m f + c_m. No maintained package ships a crosscoder that trains on activations we hold
  in memory (SAELens has none; dictionary_learning's needs nnsight), so it is written here, short.
  A feature's relative decoder norm r = |d_end| / (|d_start| + |d_end|) sorts it into start-only
  (r < 0.1), end-only (r > 0.9) or shared.

Activations are scaled per model by one number, so that their mean squared norm is the width d
(as SAELens's `expected_average_only_in`), before either dictionary sees them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DictionarySettings:
    width: int = 4            # features = width x the layer's hidden size
    k: int = 16               # active features per token (TopK SAE; crosscoder: on average, BatchTopK)
    epochs: int = 4           # passes over the training tokens
    batch_size: int = 256     # tokens per step
    lr: float = 1e-3
    decoder_penalty: float = 0.5   # crosscoder: x the decoder-norm-weighted L1 of the code (Lindsey et al.)
    shared_band: tuple[float, float] = (0.1, 0.9)  # relative decoder norms between: shared features
    seed: int = 0

    def __post_init__(self) -> None:
        from valuedrift.io import InputError

        object.__setattr__(self, "shared_band", tuple(self.shared_band))
        if min(self.width, self.k, self.epochs, self.batch_size) < 1 or self.lr <= 0:
            raise InputError(f"dictionary width, k, epochs, batch_size must be >= 1 and lr > 0, got {self}")
        low, high = self.shared_band
        if not 0 < low < high < 1:
            raise InputError(f"dictionary shared_band must be two numbers 0 < low < high < 1, got {self.shared_band}")


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def scale(x: np.ndarray) -> float:
    """The one factor that makes the mean squared norm of the rows equal to their width."""
    return float(np.sqrt(x.shape[1] / np.mean(np.sum(x.astype(np.float64) ** 2, axis=1))))


def batches(n: int, settings: DictionarySettings, epochs: int | None = None):
    """Index batches over `epochs` seeded shuffles of n rows (full batches only)."""
    import torch

    generator = torch.Generator().manual_seed(settings.seed)
    for _ in range(epochs or settings.epochs):
        order = torch.randperm(n, generator=generator)
        for i in range(0, n - settings.batch_size + 1, settings.batch_size):
            yield order[i:i + settings.batch_size]


def fraction_explained(x, reconstruction) -> float:
    """1 - residual sum of squares / total sum of squares around the mean (per coordinate)."""
    x, reconstruction = np.asarray(x, np.float64), np.asarray(reconstruction, np.float64)
    return float(1 - ((x - reconstruction) ** 2).sum() / ((x - x.mean(axis=0)) ** 2).sum())


# ---- SAE (SAELens) ----

def train_sae(x: np.ndarray, settings: DictionarySettings):
    """A TopK SAE on the (already scaled) rows of x, trained by SAELens."""
    import torch
    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    if len(x) < settings.batch_size:
        from valuedrift.io import InputError

        raise InputError(f"{len(x)} tokens are fewer than one batch of {settings.batch_size}")
    torch.manual_seed(settings.seed)
    data = torch.as_tensor(x, dtype=torch.float32)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=x.shape[1], d_sae=settings.width * x.shape[1],
                                                k=min(settings.k, settings.width * x.shape[1])))
    steps = settings.epochs * (len(x) // settings.batch_size)
    sae.to(device())
    trainer = SAETrainer(SAETrainerConfig(total_training_samples=steps * settings.batch_size, device=device(),
                                          train_batch_size_samples=settings.batch_size, lr=settings.lr,
                                          lr_end=settings.lr, n_batches_for_norm_estimate=1,
                                          dead_feature_window=max(1, steps // 4),
                                          feature_sampling_window=max(1, steps // 4)),
                         sae, (data[i] for i in batches(len(x), settings, epochs=settings.epochs + 1)))
    return trainer.fit().eval().cpu()


def sae_codes(sae, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return sae.encode(torch.as_tensor(x, dtype=torch.float32)).numpy()


def sae_reconstruction(sae, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return sae.decode(sae.encode(torch.as_tensor(x, dtype=torch.float32))).numpy()


# ---- crosscoder ----

def _crosscoder_module(d: int, n_features: int, k: int):
    import torch
    from torch import nn

    class Crosscoder(nn.Module):
        """Two models' activations -> one BatchTopK code -> each model's own reconstruction."""

        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(2 * d, n_features)
            # decoder rows start short (norm 0.1 each, as SAELens's decoder_init_norm)
            self.decoder = nn.Parameter(0.1 * nn.functional.normalize(torch.randn(2, n_features, d), dim=2))
            self.bias = nn.Parameter(torch.zeros(2, d))
            self.k = k
            with torch.no_grad():  # the encoder starts as the decoders' transpose (as in SAELens)
                self.encoder.weight.copy_(torch.cat([self.decoder[0], self.decoder[1]], dim=1))

        def encode(self, x_start, x_end, batch_topk: bool = True):
            pre = torch.relu(self.encoder(torch.cat([x_start, x_end], dim=1)))
            # a feature's worth is its activation times its decoders' summed norms (Minder et al.)
            value = pre * self.decoder.norm(dim=2).sum(0)
            if batch_topk:  # the k x batch largest of the batch survive, wherever they are
                threshold = value.flatten().topk(min(self.k * len(pre), pre.numel())).values[-1]
            else:  # at inference one token at a time: its k largest
                threshold = value.topk(self.k, dim=1).values[:, -1:]
            return pre * (value >= threshold) * (pre > 0)

        def decode(self, f):
            return torch.einsum("bf,mfd->mbd", f, self.decoder) + self.bias[:, None]

        def relative_norms(self) -> np.ndarray:
            norms = self.decoder.detach().norm(dim=2)  # (2, features)
            return (norms[1] / (norms[0] + norms[1]).clamp(min=1e-12)).numpy()

    return Crosscoder()


def train_crosscoder(x_start: np.ndarray, x_end: np.ndarray, settings: DictionarySettings):
    """A crosscoder on the (already scaled) activations of the same tokens in two models."""
    import torch

    torch.manual_seed(settings.seed)
    a, b = torch.as_tensor(x_start, dtype=torch.float32), torch.as_tensor(x_end, dtype=torch.float32)
    model = _crosscoder_module(a.shape[1], settings.width * a.shape[1], settings.k).to(device())
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    for i, batch in enumerate(batches(len(a), settings)):
        x_a, x_b = a[batch].to(model.bias.device), b[batch].to(model.bias.device)
        f = model.encode(x_a, x_b)
        reconstruction = model.decode(f)
        loss = ((reconstruction[0] - x_a) ** 2).sum(1).mean() + ((reconstruction[1] - x_b) ** 2).sum(1).mean()
        # the penalty shrinks the decoder of a model that does not need a feature toward zero, so
        # a feature used by one model only shows it in its relative norm
        loss = loss + settings.decoder_penalty * (f * model.decoder.norm(dim=2).sum(0)).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i % 200 == 0:
            log.info("crosscoder step %d: loss %.4f", i, loss.item())
    return model.eval().cpu()


def crosscoder_codes(model, x_start, x_end) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model.encode(torch.as_tensor(x_start, dtype=torch.float32), torch.as_tensor(x_end, dtype=torch.float32),
                            batch_topk=False).numpy()


def crosscoder_reconstruction(model, x_start, x_end) -> tuple[np.ndarray, np.ndarray]:
    import torch

    with torch.inference_mode():
        f = model.encode(torch.as_tensor(x_start, dtype=torch.float32), torch.as_tensor(x_end, dtype=torch.float32),
                         batch_topk=False)
        out = model.decode(f).numpy()
    return out[0], out[1]


def feature_kinds(model, alive: np.ndarray, settings: DictionarySettings) -> np.ndarray:
    """Per feature: 'start-only', 'end-only', 'shared', or 'dead' (never active on the tokens)."""
    r = model.relative_norms()
    low, high = settings.shared_band
    kinds = np.where(r < low, "start-only", np.where(r > high, "end-only", "shared"))
    return np.where(alive, kinds, "dead")
