"""How the vLLM backend drives one engine through a run's snapshots.

vLLM needs a CUDA machine and cannot be installed here, so these tests check valuedrift's side
of the contract against a stand-in module that records the calls vLLM's public API receives
(`LLM`, `SamplingParams`, `LoRARequest`, `LLM.collective_rpc`, `LLM.reset_prefix_cache`). They
show that a run starts one engine, serves LoRA snapshots as adapters with ids of their own,
reloads a full snapshot's weights in place, and seeds every prompt the same way at every snapshot.
Whether a real vLLM accepts these calls is checked only on a GPU machine.
"""

import json
import shutil
import sys
import types
from dataclasses import dataclass, field

import pytest

from valuedrift.behaviour.generate import GenerationSettings, VllmEngine, generation_rows


@dataclass
class Calls:
    engines: list = field(default_factory=list)
    rpc: list = field(default_factory=list)
    resets: int = 0
    generate: list = field(default_factory=list)


@pytest.fixture
def vllm(monkeypatch):
    calls = Calls()

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LoRARequest:
        def __init__(self, lora_name, lora_int_id, lora_path):
            self.name, self.id, self.path = lora_name, lora_int_id, lora_path

    class LLM:
        def __init__(self, **kwargs):
            calls.engines.append(kwargs)

        def collective_rpc(self, method, args=()):
            calls.rpc.append((method, args))

        def reset_prefix_cache(self):
            calls.resets += 1

        def generate(self, prompts, params, lora_request=None):
            calls.generate.append({"prompts": prompts, "params": params, "lora": lora_request})
            out = types.SimpleNamespace
            return [out(outputs=[out(text=f" answer {j}", token_ids=[1, 2, 3], finish_reason="stop")
                                 for j in range(p.kwargs["n"])]) for p in params]

    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, SamplingParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    for name, m in (("vllm", module), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, m)
    return calls


PROMPTS = [{"question_id": f"q{i}", "topic": "t", "question": f"Should we do thing {i}?"} for i in range(3)]
SETTINGS = GenerationSettings(samples_per_question=2, backend="vllm")


def snapshot(tiny, folder, k, adapter_of=None):
    """A snapshot folder with the tiny model's tokenizer; an adapter config where it is a LoRA one."""
    shutil.copytree(tiny / "base", folder)
    (folder / "meta.json").write_text(json.dumps({"k": k, "step": 10 * k, "fraction": k / 2}))
    if adapter_of:
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(adapter_of), "r": 8}))
    return folder


def test_full_snapshots_reload_weights_into_one_engine(vllm, tiny, tmp_path):
    engine = VllmEngine(SETTINGS, seed=7)
    folders = [snapshot(tiny, tmp_path / str(k), k) for k in range(3)]
    rows = [generation_rows(engine, str(f), PROMPTS, {"run": "r"}) for f in folders]
    assert len(vllm.engines) == 1 and vllm.engines[0]["model"] == str(folders[0])
    reloads = [args[0]["model_config"]["model"] for method, args in vllm.rpc if method == "update_config"]
    assert reloads == [str(folders[1]), str(folders[2])]
    assert [method for method, _ in vllm.rpc] == ["update_config", "reload_weights"] * 2 and vllm.resets == 2
    assert [[r["k"] for r in snapshot_rows][0] for snapshot_rows in rows] == [0, 1, 2]
    assert all(len(r) == len(PROMPTS) * 2 for r in rows)


def test_lora_snapshots_are_adapters_over_one_base_engine(vllm, tiny, tmp_path):
    base = tmp_path / "sft-end"
    folders = [snapshot(tiny, tmp_path / str(k), k, adapter_of=base) for k in range(3)]
    engine = VllmEngine(SETTINGS, seed=7)
    for f in folders:
        generation_rows(engine, str(f), PROMPTS, {})
    assert len(vllm.engines) == 1
    assert vllm.engines[0]["model"] == str(base) and vllm.engines[0]["enable_lora"] and vllm.engines[0]["max_lora_rank"] == 8
    requests = [g["lora"] for g in vllm.generate]
    assert [r.path for r in requests] == [str(f) for f in folders]
    assert len({r.id for r in requests}) == 3, "each adapter needs an id of its own, or vLLM serves the first again"
    assert vllm.rpc == []


def test_every_prompt_has_its_own_seed_and_every_snapshot_the_same_ones(vllm, tiny, tmp_path):
    engine = VllmEngine(SETTINGS, seed=7)
    for k in range(2):
        generation_rows(engine, str(snapshot(tiny, tmp_path / str(k), k)), PROMPTS, {})
    seeds = [[p.kwargs["seed"] for p in g["params"]] for g in vllm.generate]
    assert len(set(seeds[0])) == len(PROMPTS) and seeds[0] == seeds[1]
