"""The SAE and the crosscoder on planted sparse activations whose dictionary is known."""

import numpy as np
import pytest

from valuedrift.io import InputError
from valuedrift.representation.dictionaries import (DictionarySettings, crosscoder_codes, crosscoder_reconstruction,
                                                    feature_kinds, fraction_explained, sae_codes,
                                                    sae_reconstruction, scale, train_crosscoder, train_sae)
from valuedrift.representation.features import preference_effects

D, N = 32, 20000
SETTINGS = DictionarySettings(width=4, k=4, epochs=10, batch_size=128, lr=3e-3)


def unit_rows(rng, m):
    a = rng.normal(size=(m, D))
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def planted():
    """48 features both models have (in different directions), 16 only the start has, 16 only the
    end has; each token uses about 3 of the 80."""
    rng = np.random.default_rng(0)
    shared_start, shared_end, start_only, end_only = (unit_rows(rng, m) for m in (48, 48, 16, 16))
    codes = (rng.random((N, 80)) < 0.04) * rng.uniform(1, 3, size=(N, 80))
    start = codes[:, :48] @ shared_start + codes[:, 48:64] @ start_only
    end = codes[:, :48] @ shared_end + codes[:, 64:] @ end_only
    return start * scale(start), end * scale(end), {"shared": shared_start, "start-only": start_only,
                                                    "end-only": end_only}


def test_the_sae_reconstructs_and_finds_the_planted_features(planted):
    start, _, atoms = planted
    sae = train_sae(start[:16000], SETTINGS)
    assert fraction_explained(start[16000:], sae_reconstruction(sae, start[16000:])) > 0.8  # held-out tokens
    assert (sae_codes(sae, start[:100]) > 0).sum(axis=1).max() <= SETTINGS.k
    decoder = sae.W_dec.detach().numpy()
    decoder /= np.linalg.norm(decoder, axis=1, keepdims=True)
    found = (np.vstack([atoms["shared"], atoms["start-only"]]) @ decoder.T).max(axis=1)
    assert np.mean(found > 0.9) > 0.8
    # noise has nothing to find: a dictionary of it explains little of new noise
    noise = np.random.default_rng(1).normal(size=(4000, D))
    assert fraction_explained(noise[2000:], sae_reconstruction(train_sae(noise[:2000], SETTINGS), noise[2000:])) < 0.7


def test_the_crosscoder_splits_shared_start_only_and_end_only_features(planted):
    start, end, atoms = planted
    crosscoder = train_crosscoder(start[:16000], end[:16000], SETTINGS)
    held_start, held_end = crosscoder_reconstruction(crosscoder, start[16000:], end[16000:])
    assert fraction_explained(start[16000:], held_start) > 0.8 and fraction_explained(end[16000:], held_end) > 0.8
    alive = (crosscoder_codes(crosscoder, start[:16000], end[:16000]) > 0).any(axis=0)
    kinds = feature_kinds(crosscoder, alive, SETTINGS)
    decoder = crosscoder.decoder.detach().numpy()
    for kind, side in (("shared", 0), ("start-only", 0), ("end-only", 1)):
        directions = decoder[side] / np.linalg.norm(decoder[side], axis=1, keepdims=True).clip(1e-9)
        best = (atoms[kind] @ directions.T).argmax(axis=1)   # the feature that carries each planted one
        assert np.mean(kinds[best] == kind) >= 0.75, kind
    shares = {kind: np.mean(kinds[alive] == kind) for kind in ("shared", "start-only", "end-only")}
    assert shares["shared"] > shares["start-only"] > 0.05 and shares["end-only"] > 0.05


def test_preference_effects_average_prompts_and_test_across_them():
    rng = np.random.default_rng(2)
    n_pairs, features = 60, 3
    texts = np.repeat(np.arange(2 * n_pairs), 5)   # 5 tokens per answer
    codes = rng.random((len(texts), features))
    codes[(texts % 2 == 0), 0] += 1.0              # feature 0 fires more on chosen answers
    effect, p = preference_effects(codes, texts, np.arange(n_pairs) // 2)
    assert effect[0] == pytest.approx(1.0, abs=0.1) and p[0] < 1e-6
    assert abs(effect[1]) < 0.2 and p[1] > 0.001


def test_bad_settings_are_input_errors():
    with pytest.raises(InputError, match="shared_band"):
        DictionarySettings(shared_band=(0.9, 0.1))
    with pytest.raises(InputError):
        DictionarySettings(k=0)
    with pytest.raises(InputError, match="fewer than one batch"):
        train_sae(np.zeros((10, 4)), SETTINGS)
