"""Real, brief TRL training on a tiny model: snapshots at the fixed positions, loadable, complete."""

import json

import pytest

from valuedrift.cli import main as cli
from valuedrift.training.snapshots import snapshot_steps
from valuedrift.training.trainers import ALGORITHMS


def test_snapshot_steps_at_given_fractions():
    assert snapshot_steps(50, [0.1, 0.25, 0.5, 1.0]) == [0, 5, 12, 25, 50]
    with pytest.raises(ValueError, match="coincide"):
        snapshot_steps(8, [0.05, 0.1, 1.0])  # 0.05 and 0.1 of 8 steps both round to step 0 or 1


def test_snapshot_steps_are_evenly_spaced():
    assert snapshot_steps(10, 2) == [0, 5, 10]
    assert snapshot_steps(10, 4) == [0, 2, 5, 8, 10]
    assert snapshot_steps(3, 3) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="fewer than the 4 snapshots"):
        snapshot_steps(3, 4)


@pytest.fixture(scope="module")
def data(tiny):
    return tiny


def train(data, algorithm, start, train_data, run_dir, settings, *extra):
    cli(["train", "--algorithm", algorithm, "--model", str(start), "--data", str(train_data), "--run-dir", str(run_dir),
         "--snapshots", "2", "--settings", json.dumps({"per_device_train_batch_size": 8, **settings}), *extra])


def check_snapshots(run_dir, total_steps=None, model_class=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if total_steps is None:  # online algorithms decide their own step count
        total_steps = json.loads((run_dir / "snapshots" / "2" / "meta.json").read_text())["total_steps"]
    for k, step in enumerate(snapshot_steps(total_steps, 2)):
        folder = run_dir / "snapshots" / str(k)
        meta = json.loads((folder / "meta.json").read_text())
        assert (meta["k"], meta["step"], meta["total_steps"]) == (k, step, total_steps)
        (model_class or AutoModelForCausalLM).from_pretrained(folder)
        AutoTokenizer.from_pretrained(folder)
    assert not (run_dir / ".train").exists(), "work folder is removed once the snapshots are published"


@pytest.fixture(scope="module")
def sft_run(data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "sft"
    train(data, "sft", data / "base", data / "sft.jsonl", run_dir, {"num_train_epochs": 1, "max_length": 96})
    return run_dir


def test_sft_writes_loadable_snapshots(sft_run):
    check_snapshots(sft_run, total_steps=6)  # 48 rows / 8 per step


def test_snapshot_zero_is_the_starting_model(data, sft_run):
    from safetensors.torch import load_file

    start = load_file(data / "base" / "model.safetensors")
    k0 = load_file(sft_run / "snapshots" / "0" / "model.safetensors")
    end = load_file(sft_run / "snapshots" / "2" / "model.safetensors")
    name = "model.layers.0.mlp.up_proj.weight"
    assert (start[name] == k0[name]).all()
    assert not (start[name] == end[name]).all()


@pytest.fixture(scope="module")
def reward_model(data, sft_run, tmp_path_factory):
    """The reward model that PPO and GRPO share, trained with TRL's RewardTrainer on the pairs."""
    from transformers import AutoModelForSequenceClassification

    run_dir = tmp_path_factory.mktemp("runs") / "reward"
    train(data, "reward", sft_run / "snapshots" / "2", data / "pref.jsonl", run_dir,
          {"num_train_epochs": 1, "max_length": 512})
    check_snapshots(run_dir, total_steps=4, model_class=AutoModelForSequenceClassification)
    return run_dir / "snapshots" / "2"


# brief settings per algorithm; the published defaults are in config.yaml
ONLINE = {"num_generations": 4, "max_completion_length": 12, "num_train_epochs": 1}
ALGORITHM_SETTINGS = {
    "dpo": {"num_train_epochs": 1, "beta": 0.1, "max_length": 96},
    "ipo": {"num_train_epochs": 1, "beta": 0.1, "max_length": 96},
    "simpo": {"num_train_epochs": 1, "beta": 2.0, "simpo_gamma": 1.0, "max_length": 96},
    "orpo": {"num_train_epochs": 1, "beta": 0.1, "max_length": 96},
    "kto": {"num_train_epochs": 1, "beta": 0.1, "max_length": 96},
    "grpo": ONLINE,
    "rloo": ONLINE,
    "ppo": {"total_episodes": 32, "response_length": 12, "num_ppo_epochs": 1, "num_mini_batches": 1,
            "stop_token": "eos", "kl_coef": 0.05},
}


@pytest.mark.parametrize("algorithm", list(ALGORITHM_SETTINGS))
def test_algorithm_trains_from_the_sft_result(algorithm, data, sft_run, reward_model, tmp_path):
    run_dir = tmp_path / algorithm
    train(data, algorithm, sft_run / "snapshots" / "2", data / "pref.jsonl", run_dir, ALGORITHM_SETTINGS[algorithm],
          "--reward-model", str(reward_model))
    check_snapshots(run_dir)


def differing_tensors(run_a, run_b, k=2) -> list[str]:
    """The tensors of snapshot k whose bits differ between two runs (a NaN equals the same NaN)."""
    import torch
    from safetensors.torch import load_file

    a, b = (load_file(run / "snapshots" / str(k) / "model.safetensors") for run in (run_a, run_b))
    assert a.keys() == b.keys()
    bits = lambda t: t.contiguous().reshape(-1).view(torch.uint8)  # noqa: E731
    return sorted(name for name in a if not torch.equal(bits(a[name]), bits(b[name])))


def phase_inputs(algorithm, data, sft_run, reward_model):
    """Start model, training rows, settings and extra arguments of a brief phase of `algorithm`."""
    if algorithm == "sft":
        return data / "base", data / "sft.jsonl", {"num_train_epochs": 1, "max_length": 96}, ()
    if algorithm == "reward":
        return sft_run / "snapshots" / "2", data / "pref.jsonl", {"num_train_epochs": 1, "max_length": 512}, ()
    return (sft_run / "snapshots" / "2", data / "pref.jsonl", ALGORITHM_SETTINGS[algorithm],
            ("--reward-model", str(reward_model)))


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_a_fixed_seed_gives_bit_identical_weights(algorithm, data, sft_run, reward_model, tmp_path):
    """The same phase twice with the same seed; the second starts after the first has moved every
    global random state (torch, numpy, Python), so whatever the phase draws unseeded shows."""
    start, rows, settings, extra = phase_inputs(algorithm, data, sft_run, reward_model)
    for run in ("first", "second"):
        train(data, algorithm, start, rows, tmp_path / run, settings, "--seed", "1", *extra)
    assert differing_tensors(tmp_path / "first", tmp_path / "second") == []


def test_reward_model_ppo_and_grpo_repeat_bit_for_bit_in_fresh_processes(data, sft_run, reward_model, tmp_path):
    """As the workflow runs them, each phase in a process of its own (here with another hash seed):
    the reward model retrained with the same seed has the very weights of the `reward_model`
    fixture, and PPO and GRPO trained on it the very weights of PPO and GRPO trained on the fixture
    in this process. Online algorithms sample their answers, so their seeds must reach the
    sampling, the dataloader and every freshly initialised head."""
    import os
    import subprocess

    env = {**os.environ, "PYTHONHASHSEED": "12345"}

    def fresh(algorithm, start, rows, run_dir, settings, *extra):
        subprocess.run(["valuedrift", "train", "--algorithm", algorithm, "--model", str(start), "--data", str(rows),
                        "--run-dir", str(run_dir), "--snapshots", "2", "--settings",
                        json.dumps({"per_device_train_batch_size": 8, **settings}), *extra],
                       env=env, check=True, capture_output=True)

    start, rows, settings, _ = phase_inputs("reward", data, sft_run, reward_model)
    fresh("reward", start, rows, tmp_path / "reward", settings)
    assert differing_tensors(reward_model.parent.parent, tmp_path / "reward") == []
    for algorithm in ("ppo", "grpo"):
        start, rows, settings, _ = phase_inputs(algorithm, data, sft_run, reward_model)
        train(data, algorithm, start, rows, tmp_path / f"{algorithm}-here", settings, "--reward-model",
              str(reward_model))
        fresh(algorithm, start, rows, tmp_path / f"{algorithm}-fresh", settings, "--reward-model",
              str(tmp_path / "reward" / "snapshots" / "2"))
        for k in (1, 2):
            assert differing_tensors(tmp_path / f"{algorithm}-here", tmp_path / f"{algorithm}-fresh", k) == [], \
                f"{algorithm} snapshot {k}"


def test_precomputed_reference_log_probs_need_no_reference_copy(data, sft_run, tmp_path, monkeypatch):
    """With precompute_ref_log_probs TRL takes the reference log-probs from the policy before the
    first step: no frozen copy is loaded, and the weights are those a copy gives."""
    from safetensors.torch import load_file

    import valuedrift.training.train as train_module

    settings = {**ALGORITHM_SETTINGS["dpo"], "precompute_ref_log_probs": True}
    loaded, load_models = [], train_module.load_models

    def recording(args):
        loaded.append(load_models(args))
        return loaded[-1]

    monkeypatch.setattr(train_module, "load_models", recording)
    train(data, "dpo", sft_run / "snapshots" / "2", data / "pref.jsonl", tmp_path / "no-copy", settings)
    assert loaded[-1].reference is None
    check_snapshots(tmp_path / "no-copy")
    monkeypatch.setattr(train_module, "precomputes_reference", lambda args: False)
    train(data, "dpo", sft_run / "snapshots" / "2", data / "pref.jsonl", tmp_path / "copy", settings)
    assert loaded[-1].reference is not None
    without, with_copy = (load_file(tmp_path / run / "snapshots" / "2" / "model.safetensors")
                          for run in ("no-copy", "copy"))
    assert all((without[name] == with_copy[name]).all() for name in with_copy)


def test_grpo_with_the_judge_as_reward(data, sft_run, stance_judge, tmp_path):
    run_dir = tmp_path / "grpo"
    train(data, "grpo", sft_run / "snapshots" / "2", data / "pref.jsonl", run_dir, ONLINE,
          "--judge-reward", "support", "--judge-model", str(stance_judge))
    check_snapshots(run_dir)


def test_unknown_trainer_field_is_refused_before_loading_anything(data, tmp_path):
    with pytest.raises(SystemExit) as e:
        train(data, "dpo", data / "base", data / "pref.jsonl", tmp_path / "x", {"betta": 0.1})
    assert e.value.code == 2
    assert not (tmp_path / "x").exists()


def test_settings_that_define_an_algorithm_cannot_be_overridden(data, tmp_path):
    with pytest.raises(SystemExit) as e:
        train(data, "simpo", data / "base", data / "pref.jsonl", tmp_path / "x", {"cpo_alpha": 1.0})
    assert e.value.code == 2


def test_lora_snapshots_are_adapters_that_load_over_the_sft_model(data, sft_run, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    run_dir = tmp_path / "dpo-lora"
    train(data, "dpo", sft_run / "snapshots" / "2", data / "pref.jsonl", run_dir, ALGORITHM_SETTINGS["dpo"],
          "--lora", json.dumps({"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}))
    assert (run_dir / "snapshots" / "2" / "adapter_config.json").exists()
    check_snapshots(run_dir, total_steps=4)
    ids = torch.tensor([[5, 6, 7, 8]])
    logits = {k: AutoModelForCausalLM.from_pretrained(run_dir / "snapshots" / str(k))(ids).logits for k in (0, 2)}
    start = AutoModelForCausalLM.from_pretrained(sft_run / "snapshots" / "2")(ids).logits
    assert torch.allclose(logits[0], start, atol=1e-5), "k=0 is the SFT model (LoRA starts at zero)"
    assert not torch.allclose(logits[2], start, atol=1e-5)


def test_snapshots_at_fractions_of_the_phase(data, tmp_path):
    run_dir = tmp_path / "sft-fractions"
    cli(["train", "--algorithm", "sft", "--model", str(data / "base"), "--data", str(data / "sft.jsonl"),
         "--run-dir", str(run_dir), "--fractions", "[0.2, 1.0]",
         "--settings", json.dumps({"per_device_train_batch_size": 4, "num_train_epochs": 1, "max_length": 96})])
    steps = [json.loads((run_dir / "snapshots" / str(k) / "meta.json").read_text())["step"] for k in range(3)]
    assert steps == [0, 2, 12]  # 48 rows / 4 per step = 12 steps; 0.2 x 12 = 2.4 -> 2


def test_bfloat16_snapshots_hold_the_trained_weights_in_half_the_disk(data, sft_run, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    run_dir = tmp_path / "sft-bf16"
    train(data, "sft", data / "base", data / "sft.jsonl", run_dir, {"num_train_epochs": 1, "max_length": 96},
          "--snapshot-dtype", "bfloat16")
    check_snapshots(run_dir, total_steps=6)
    for k in (0, 2):  # the same seeded training as sft_run, stored narrower
        full = load_file(sft_run / "snapshots" / str(k) / "model.safetensors")
        half = load_file(run_dir / "snapshots" / str(k) / "model.safetensors")
        assert all(half[name].dtype == torch.bfloat16 for name in full)
        assert all(torch.equal(half[name], full[name].to(torch.bfloat16)) for name in full)
    size = {run: (run / "snapshots" / "2" / "model.safetensors").stat().st_size for run in (sft_run, run_dir)}
    assert size[run_dir] < 0.52 * size[sft_run]
    assert AutoModelForCausalLM.from_pretrained(run_dir / "snapshots" / "2").dtype == torch.bfloat16


def test_ppo_scores_each_answer_where_the_reward_model_was_trained_to(data, reward_model):
    """RewardTrainer scores the chat-rendered text's last token, after the end-of-turn token; PPO
    reads the score at an answer's own last token. The wrapper appends the template's suffix to
    every answer that ended, so PPO's scores equal the reward model's on the rendered text, and
    leaves answers cut off before the end as they were."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.utils import get_reward

    from valuedrift.io import read_jsonl
    from valuedrift.training.rewards import scored_at_turn_end

    tok = AutoTokenizer.from_pretrained(reward_model)
    rm = AutoModelForSequenceClassification.from_pretrained(reward_model, num_labels=1).eval()
    wrapped = scored_at_turn_end(rm, tok)
    rows = read_jsonl(data / "pref.jsonl")[:6]
    prompts = [tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False)
               for r in rows]
    answers = [tok(r["chosen"][0]["content"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in rows]
    answers[0] = answers[0][:-5]  # cut off before its end
    width, length = max(map(len, prompts)), max(map(len, answers)) + 3
    pad = tok.pad_token_id or 0
    batch = torch.tensor([[pad] * (width - len(p)) + p + a + [pad] * (length - len(a)) for p, a in zip(prompts, answers)])
    with torch.no_grad():
        got = get_reward(wrapped, batch, pad, width)[1].reshape(-1)
        plain = get_reward(rm, batch, pad, width)[1].reshape(-1)
        for i, (row, answer) in enumerate(zip(rows, answers)):
            if i == 0:
                assert got[i] == pytest.approx(float(plain[i]), abs=1e-5)
                continue
            text = tok.apply_chat_template(row["prompt"] + [{"role": "assistant", "content": tok.decode(answer[:-1])}],
                                           tokenize=True, return_dict=False)
            assert float(got[i]) == pytest.approx(float(rm(torch.tensor([text])).logits[0, 0]), abs=1e-4)
    assert not torch.allclose(got[1:], plain[1:], atol=1e-4), "scoring at EOS itself is what the wrapper corrects"


@pytest.mark.parametrize("zero", [2, 3])
def test_ppo_saves_its_snapshots_under_deepspeed(zero, root, data, sft_run, reward_model, tmp_path):
    """TRL's PPO sets its DeepSpeed engine only after on_train_begin, where snapshot 0 is saved: the
    internals study (ZeRO-2) and Value Drifts (ZeRO-3) crashed there before valuedrift saved the
    policy itself."""
    import subprocess

    settings = {"per_device_train_batch_size": 8, **ALGORITHM_SETTINGS["ppo"]}
    out = subprocess.run(["accelerate", "launch", "--num_processes", "1", "--use_deepspeed", "--deepspeed_config_file",
                          str(root / "workflow" / "deepspeed" / f"zero{zero}.json"), "-m", "valuedrift", "train",
                          "--algorithm", "ppo", "--model", str(sft_run / "snapshots" / "2"), "--data",
                          str(data / "pref.jsonl"), "--run-dir", str(tmp_path / "ppo"), "--snapshots", "2",
                          "--settings", json.dumps(settings), "--reward-model", str(reward_model)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    check_snapshots(tmp_path / "ppo")
    from safetensors.torch import load_file

    start = load_file(sft_run / "snapshots" / "2" / "model.safetensors")
    k0 = load_file(tmp_path / "ppo" / "snapshots" / "0" / "model.safetensors")
    assert start.keys() == k0.keys() and all((start[n] == k0[n]).all() for n in start)  # the whole policy, gathered
