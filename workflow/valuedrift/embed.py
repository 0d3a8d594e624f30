"""Sentence embeddings: mean-pooled hidden states of any HF encoder or language model, or an
offline TF-IDF + LSA fallback.

Used as features by the stance classifier (`features: embedding`) and to cluster PRISM prompts
into V-PRISM topics. A sentence encoder such as sentence-transformers/all-MiniLM-L6-v2 is
mean-pooled and L2-normalized exactly as sentence-transformers does it, so no extra dependency
is needed for it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)


class TextEncoder:
    def __init__(self, model: str, batch_size: int = 64, max_length: int = 256):
        from transformers import AutoModel, AutoTokenizer

        self.model_id = model
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModel.from_pretrained(model).eval()
        self.batch_size, self.max_length = batch_size, max_length

    @property
    def version(self) -> str:
        """Changes when the encoder's weights change (local folders) or its id changes (hub)."""
        files = sorted(Path(self.model_id).glob("*.safetensors")) if Path(self.model_id).is_dir() else []
        digest = hashlib.sha256(self.model_id.encode())
        for f in files:
            digest.update(f.read_bytes())
        return digest.hexdigest()[:12]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.hidden_size), dtype=np.float32)


def lsa_embed(texts: Sequence[str], dims: int = 64, seed: int = 0) -> np.ndarray:
    """Offline embeddings: TF-IDF reduced by truncated SVD, L2-normalized (latent semantic analysis)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    tfidf = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit_transform(texts)
    dims = max(1, min(dims, tfidf.shape[1] - 1, len(texts) - 1))
    return normalize(TruncatedSVD(dims, random_state=seed).fit_transform(tfidf))


def embed(texts: Sequence[str], embedder: str, seed: int = 0) -> np.ndarray:
    """`embedder` is `lsa` (offline) or an encoder's hub id / folder."""
    if embedder == "lsa":
        return lsa_embed(texts, seed=seed)
    return TextEncoder(embedder).encode(texts)
