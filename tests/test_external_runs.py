"""Runs trained elsewhere: checkpoints that a plain TRL script wrote (tests/fixtures/plain_trl_dpo.py,
no valuedrift in it), full weights and a LoRA adapter, imported as snapshots and probed by the
whole workflow; a half-written checkpoint is skipped, never probed."""

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from valuedrift.cli import main as cli
from valuedrift.config import ConfigError, validate_config
from valuedrift.training import external


@pytest.fixture(scope="module")
def trl_runs(tiny, root, tmp_path_factory):
    """DPO of the tiny model by a plain TRL script: checkpoints at steps 2, 4, 6, 8, full and LoRA;
    the full run also has a checkpoint-10 whose save was cut short (no trainer_state.json)."""
    d = tmp_path_factory.mktemp("trl_runs")
    script = root / "tests" / "fixtures" / "plain_trl_dpo.py"
    for name, extra in (("full", []), ("lora", ["--lora"])):
        out = subprocess.run([sys.executable, str(script), str(tiny / "base"), str(tiny / "pref.jsonl"), str(d / name),
                              *extra], capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
    cut = d / "full" / "checkpoint-10"
    shutil.copytree(d / "full" / "checkpoint-8", cut)
    (cut / "trainer_state.json").unlink()
    return d


def import_run(tmp_path, name, spec, fractions):
    cli(["import-checkpoints", "--name", name, "--spec", json.dumps(spec), "--fractions", json.dumps(fractions),
         "--run-dir", str(tmp_path / name), "--state", str(tmp_path / name / "trainer_state.json")])
    return [json.loads((tmp_path / name / "snapshots" / str(k) / "meta.json").read_text())
            for k in range(len(fractions) + 1)]


def test_checkpoints_become_snapshots_at_their_steps(trl_runs, tiny, tmp_path, caplog):
    spec = {"checkpoints": str(trl_runs / "full" / "checkpoint-*"), "start": str(tiny / "base")}
    metas = import_run(tmp_path, "full", spec, [0.5, 1.0])
    assert [m["step"] for m in metas] == [0, 4, 8]
    assert [m["fraction"] for m in metas] == [0.0, 0.5, 1.0]
    assert "skipping" in caplog.text and "checkpoint-10" in caplog.text  # cut short: never probed
    snapshot = tmp_path / "full" / "snapshots" / "1"
    assert (snapshot / "model.safetensors").resolve() == (trl_runs / "full" / "checkpoint-4" / "model.safetensors")
    assert not (snapshot / "optimizer.pt").exists()  # the training state stays behind
    # the curves the training-health report reads: the last complete checkpoint's
    state = json.loads((tmp_path / "full" / "trainer_state.json").read_text())
    assert state["global_step"] == 8 and any("rewards/margins" in row for row in state["log_history"])


def test_adapter_checkpoints_load_over_their_base(trl_runs, tiny, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    spec = {"checkpoints": str(trl_runs / "lora" / "checkpoint-*"), "base": str(tiny / "base")}
    metas = import_run(tmp_path, "lora", spec, [0.5, 1.0])
    assert [m["step"] for m in metas] == [0, 4, 8]  # snapshot 0: the base the adapters start from
    adapter = json.loads((tmp_path / "lora" / "snapshots" / "2" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str((tiny / "base").resolve())
    ids = torch.tensor([[1, 2, 3, 4]])
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "lora" / "snapshots" / "0")
    end = AutoModelForCausalLM.from_pretrained(tmp_path / "lora" / "snapshots" / "2")
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, end(ids).logits)  # the adapter is applied


def test_zero3_checkpoints_without_gathered_weights_are_converted(tiny, root, tmp_path):
    """The plain script under `accelerate launch` with ZeRO-3 and no 16-bit gathering at save: its
    checkpoints hold only DeepSpeed's shards, which the import converts to a loadable model."""
    import torch
    from transformers import AutoModelForCausalLM

    settings = json.loads((root / "workflow" / "deepspeed" / "zero3.json").read_text())
    settings["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = False
    (tmp_path / "zero3.json").write_text(json.dumps(settings))
    out = subprocess.run(["accelerate", "launch", "--num_processes", "1", "--use_deepspeed", "--deepspeed_config_file",
                          str(tmp_path / "zero3.json"), str(root / "tests" / "fixtures" / "plain_trl_dpo.py"),
                          str(tiny / "base"), str(tiny / "pref.jsonl"), str(tmp_path / "zero"), "--steps", "4"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert not (tmp_path / "zero" / "checkpoint-4" / "model.safetensors").exists()  # shards only
    metas = import_run(tmp_path, "z", {"checkpoints": str(tmp_path / "zero" / "checkpoint-*"),
                                       "start": str(tiny / "base")}, [0.5, 1.0])
    assert [m["step"] for m in metas] == [0, 2, 4]
    ids = torch.tensor([[1, 2, 3, 4]])
    base = AutoModelForCausalLM.from_pretrained(tiny / "base")
    end = AutoModelForCausalLM.from_pretrained(tmp_path / "z" / "snapshots" / "2")
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, end(ids).logits)
    assert not (tmp_path / "zero" / "checkpoint-4" / "config.json").is_symlink()  # nothing written through links


def test_cut_short_files_and_too_few_checkpoints_are_refused(trl_runs, tmp_path):
    truncated = tmp_path / "step-12"
    shutil.copytree(trl_runs / "full" / "checkpoint-8", truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert "cut short" in external.missing(truncated)
    assert external.missing(trl_runs / "full" / "checkpoint-8") is None
    spec = {"checkpoints": str(trl_runs / "full" / "checkpoint-*")}
    with pytest.raises(SystemExit):  # 4 checkpoints after the first cannot fill 5 snapshots
        import_run(tmp_path, "many", spec, [0.2, 0.4, 0.6, 0.8, 1.0])


def external_config(root, trl_runs, tiny, **override) -> dict:
    config = yaml.safe_load((root / "config.yaml").read_text())
    config["grid"] = {"models": [], "seeds": [0], "sft_datasets": ["wildchat_like"], "algorithms": [],
                      "preference_datasets": []}
    config["external_runs"] = {
        "trl_full": {"checkpoints": str(trl_runs / "full" / "checkpoint-*"), "start": str(tiny / "base"),
                     "model": "tiny_trl", "algorithm": "dpo", "pref_data": "support_pairs"},
        "trl_lora": {"checkpoints": str(trl_runs / "lora" / "checkpoint-*"), "base": str(tiny / "base"),
                     "model": "tiny_trl_lora", "algorithm": "dpo", "pref_data": "support_pairs"},
        **override}
    return config


def test_config_names_the_key_and_the_fix(root, trl_runs, tiny):
    bad = {"checkpoints": str(trl_runs / "nowhere" / "checkpoint-*"), "algorithm": "dpx"}
    with pytest.raises(ConfigError) as error:
        validate_config(external_config(root, trl_runs, tiny, bad=bad))
    text = str(error.value)
    assert "external_runs.bad.algorithm: 'dpx' is neither sft nor an entry of `algorithms`" in text
    assert "external_runs.bad.pref_data: a preference run needs one" in text
    assert "external_runs.bad.checkpoints" in text and "matches no folder" in text
    same = {"checkpoints": str(trl_runs / "full" / "checkpoint-*"), "model": "tiny_trl", "algorithm": "dpo",
            "pref_data": "support_pairs"}
    with pytest.raises(ConfigError, match="external_runs.same: its labels give the folder"):
        validate_config(external_config(root, trl_runs, tiny, same=same))


@pytest.mark.slow
def test_workflow_probes_external_checkpoints_end_to_end(root, trl_runs, tiny, tmp_path):
    """`snakemake --configfile config.yaml <external>.yaml`: trajectories, drift tables, training
    health and the representation report of both runs, and `valuedrift plan` prices them."""
    overlay = {key: external_config(root, trl_runs, tiny)[key] for key in ("grid", "external_runs")}
    overlay |= {"snapshots_per_phase": [0.5, 1.0], "judge": {"compare": ["stance_classifier"]},
                "probe_pairs": {"stance": {"miniature": {"size": 60}}, "quality": {"miniature": {"size": 60}}},
                "representation": {"probe": {"refits": 8}}, "metrics": {"bootstrap_samples": 200},
                "dictionaries": {"max_tokens": 3000, "sae": {"epochs": 3, "batch_size": 64}}}
    path = tmp_path / "external.yaml"
    path.write_text(yaml.safe_dump(overlay))
    configs = [str(root / "config.yaml"), str(path)]
    out = subprocess.run(["snakemake", "--snakefile", str(root / "Snakefile"), "--directory", str(tmp_path),
                          "--cores", "2", "--configfile", *configs], capture_output=True, text=True, timeout=1200)
    logs = "\n".join(f"== {p}\n{p.read_text()[-2000:]}" for p in (tmp_path / "results" / "logs").rglob("*.log"))
    assert out.returncode == 0, out.stderr[-4000:] + logs[-8000:]
    report = tmp_path / "results" / "report"
    for name in ("trajectories.png", "drift_heatmap.png", "representation_layer_changes.png"):
        assert (report / name).stat().st_size > 1000
    summary = pd.read_csv(report / "drift_summary.csv")
    assert sorted(summary["model"]) == ["tiny_trl", "tiny_trl_lora"]
    assert set(summary["trained"]) == {"yes"}  # DPO's logged margin rose in both runs
    representation = pd.read_csv(report / "representation_summary.csv")
    assert set(representation["model"]) == {"tiny_trl", "tiny_trl_lora"}
    shares = pd.read_csv(tmp_path / "results" / "aggregate" / "stance_distributions.csv")
    assert sorted(shares.loc[shares["model"] == "tiny_trl", "step"].unique()) == [0, 4, 8]
    plan = subprocess.run([sys.executable, "-m", "valuedrift", "plan", *configs, "--snakefile", str(root / "Snakefile")],
                          capture_output=True, text=True, cwd=root)
    assert plan.returncode == 0, plan.stderr
    assert "external run trl_full" in plan.stdout and "snapshots: 6, 0 B" in plan.stdout
