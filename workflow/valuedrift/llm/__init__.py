"""Chat models used as judges and generators: a local Hugging Face model (`local.LocalChatModel`)
or a model behind an OpenAI-compatible API (`api.ApiClient`: OpenAI, vLLM, and the like).

Both answer the same two questions: the probabilities of a fixed set of one-word labels as the
reply's first token (`label_probabilities`), and sampled replies (`complete`).
"""

from __future__ import annotations


def chat_model(spec: dict, namespace: str = ""):
    """The chat model a config entry names: `{kind: local_llm | openai_api, model: ..., ...}` with
    the fields of `local.LocalSettings` or `api.ApiSettings`. `namespace` separates cache entries."""
    from valuedrift.config import from_dict
    from valuedrift.io import InputError

    from valuedrift.llm.api import with_transport

    spec = dict(with_transport(spec))
    kind = spec.pop("kind", None)
    if kind == "local_llm":
        from valuedrift.llm.local import LocalChatModel, LocalSettings

        return LocalChatModel(from_dict(LocalSettings, spec))
    if kind == "openai_api":
        from valuedrift.llm.api import ApiClient, ApiSettings

        return ApiClient(from_dict(ApiSettings, spec), namespace=namespace)
    raise InputError(f"a chat model needs kind local_llm or openai_api, not {kind!r}")
