"""Config validation: every mistake stops the run with a message naming the key."""

import copy
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from valuedrift.config import ConfigError, validate_config

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())


def broken(edit):
    config = copy.deepcopy(DEFAULT)
    edit(config)
    return config


def problem(config) -> str:
    with pytest.raises(ConfigError) as e:
        validate_config(config)
    return str(e.value)


def test_default_config_is_valid():
    validate_config(copy.deepcopy(DEFAULT))


def test_shipped_configs_are_valid(tmp_path, monkeypatch):
    import rehearse

    from valuedrift.config import merge, workflow_file

    ci = merge(DEFAULT, yaml.safe_load((ROOT / "tests" / "config-ci.yaml").read_text()))
    validate_config(copy.deepcopy(ci))
    # a study's dress rehearsal goes over it, in a folder that holds the stand-ins it names
    rehearse.build_standins(tmp_path)
    monkeypatch.chdir(tmp_path)
    for path in sorted((ROOT / "workflow" / "experiments").glob("*.yaml")):
        study = merge(DEFAULT, yaml.safe_load(path.read_text()))
        study["deepspeed"] = workflow_file(study["deepspeed"], ROOT)  # as common.smk finds it
        validate_config(copy.deepcopy(study))
        rehearsal = ROOT / "tests" / "rehearsal" / path.name
        if rehearsal.exists():
            validate_config(merge(study, yaml.safe_load(rehearsal.read_text())))


def test_unknown_key_is_named():
    msg = problem(broken(lambda c: c["behaviour"].update(temprature=0.7)))
    assert "behaviour" in msg and "'temprature'" in msg and "temperature" in msg


def test_wrong_type_is_named():
    msg = problem(broken(lambda c: c["world"].update(eval_questions_per_topic="five")))
    assert "world.eval_questions_per_topic" in msg and "'five'" in msg


def test_impossible_values_are_named():
    assert "behaviour.temperature" in problem(broken(lambda c: c["behaviour"].update(temperature=0)))
    assert "snapshots_per_phase" in problem(broken(lambda c: c.update(snapshots_per_phase=0)))


def test_mixture_must_sum_to_one():
    msg = problem(broken(lambda c: c["sft_datasets"]["wildchat_like"]["miniature"]["mixture"].update(neutral=0.9)))
    assert "sft_datasets.wildchat_like.miniature.mixture" in msg and "sum to 1" in msg


def test_grid_names_must_be_defined():
    msg = problem(broken(lambda c: c["grid"]["sft_datasets"].append("ultrachat")))
    assert "grid.sft_datasets" in msg and "'ultrachat'" in msg


def test_value_gap_needs_two_stances():
    msg = problem(broken(lambda c: c["preference_datasets"]["support_chosen"]["miniature"].update(rejected="support")))
    assert "support_chosen" in msg and "different stances" in msg


def test_a_model_needs_exactly_one_source():
    msg = problem(broken(lambda c: c["models"]["tiny"].update(path="Qwen/Qwen3-4B-Base")))
    assert "models.tiny" in msg and "exactly one" in msg


def test_snakemake_refuses_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("behaviour: {samples_per_question: -1}\n")
    out = subprocess.run(["snakemake", "-n", "--configfile", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0
    assert "behaviour.samples_per_question" in out.stdout + out.stderr


def test_check_config_command(tmp_path):
    ok = subprocess.run(["valuedrift", "check-config", str(ROOT / "config.yaml")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: -3\n")
    out = subprocess.run(["valuedrift", "check-config", str(ROOT / "config.yaml"), str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "config key seed" in out.stderr


def test_filter_can_only_narrow_the_grid():
    msg = problem(broken(lambda c: c["filter"].update(algorithms=["rloo"])))
    assert "filter.algorithms" in msg and "'rloo'" in msg


def test_judge_reward_needs_value_gap_sets():
    msg = problem(broken(lambda c: c.update(online_reward="judge")))
    assert "online_reward" in msg and "'support_chosen_null'" in msg  # a null set has no chosen stance


def dry_run(*args):
    out = subprocess.run(["snakemake", "-n", "--directory", "/tmp/valuedrift-dry-run", "--snakefile",
                          str(ROOT / "Snakefile"), "--configfile", str(ROOT / "config.yaml"), *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_dry_run_shows_every_stage():
    out = dry_run("-p")
    for rule in ("prepare_pretrain_corpus", "prepare_sft_data", "prepare_preference_data", "prepare_eval_prompts",
                 "prepare_judge_data", "build_base_model", "train_sft", "train_reward_model", "train_preference",
                 "train_judge", "generate", "aggregate", "drift", "plot", "judge_pairs", "value_gap",
                 "judge_labelled", "judge_report", "training_health", "judge_sensitivity"):
        assert f"rule {rule}:" in out, rule
    # the default judges are trained stance classifiers: the generate job judges too
    assert "rule judge:" not in out and "--judges" in out
    for algorithm in ("ppo", "dpo", "simpo", "orpo", "kto", "grpo"):
        assert f"sft-wildchat_like/{algorithm}-support_chosen/snapshots/4" in out, algorithm


def test_filter_runs_part_of_the_grid():
    out = dry_run("--config", "filter={algorithms: [kto], preference_datasets: [support_chosen_null], seeds: [1]}")
    assert "seed-1/sft-wildchat_like/kto-support_chosen_null" in out and "seed-0/" not in out
    assert "dpo-" not in out and "kto-support_chosen/" not in out and "train_reward_model" not in out


def test_lint_reports_nothing():
    out = subprocess.run(["snakemake", "--lint", "--directory", "/tmp/valuedrift-dry-run", "--snakefile",
                          str(ROOT / "Snakefile"), "--configfile", str(ROOT / "config.yaml")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_cluster_dry_run_shows_gpus_memory_and_time(root):
    """A dry run of the shipped cluster experiment through the SLURM profile: every heavy job asks
    for the GPUs, memory and time its kind declares, and training launches with DeepSpeed."""
    # from the project folder, as a user runs it: the experiment's DeepSpeed path is relative
    out = subprocess.run(["snakemake", "-n", "-p", "--profile", "slurm", "--configfile", "config.yaml",
                          "workflow/experiments/miniature-cluster.yaml"], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    out = out.stdout
    blocks = {}
    for block in out.split("\nrule ")[1:]:
        name, _, body = block.partition(":")
        resources = next((line for line in body.splitlines() if line.strip().startswith("resources:")), "")
        blocks.setdefault(name, set()).add(resources)
    for rule, (gpu, mem, runtime) in {"train_sft": (2, 64000, 120), "train_preference": (2, 64000, 120),
                                      "train_reward_model": (2, 64000, 120), "generate": (1, 32000, 30)}.items():
        for line in blocks[rule]:
            assert f"gpu={gpu}" in line and f"mem_mb={mem}," in line and f"runtime={runtime}" in line, (rule, line)
    assert "accelerate launch --num_processes 2 --use_deepspeed --deepspeed_config_file workflow/deepspeed/zero2.json" in out


def test_a_hub_loader_must_give_the_sets_kind_of_rows():
    msg = problem(broken(lambda c: c["sft_datasets"].update(
        uf={"hub": {"loader": "ultrafeedback", "path": "HuggingFaceH4/ultrafeedback_binarized"}})))
    assert "sft_datasets.uf.hub.loader" in msg and "preference rows" in msg


def test_a_dataset_needs_exactly_one_source():
    msg = problem(broken(lambda c: c["preference_datasets"]["style_only"].update(
        hub={"loader": "hh_rlhf", "path": "Anthropic/hh-rlhf"})))
    assert "preference_datasets.style_only" in msg and "exactly one of" in msg


def test_judges_must_be_defined():
    assert "judge.name" in problem(broken(lambda c: c["judge"].update(name="gpt4o")))
    msg = problem(broken(lambda c: c["judge"].update(compare=["stance_classifier", "gpt4o"])))
    assert "judge.compare" in msg and "'gpt4o'" in msg
    msg = problem(broken(lambda c: c["judges"].update(gpt4o={"kind": "openai_api"})))
    assert "judges.gpt4o" in msg and "needs `model`" in msg


def test_synthetic_sets_need_the_builder():
    msg = problem(broken(lambda c: c["preference_datasets"].update(gap={"synthetic": {"chosen": "support",
                                                                                      "rejected": "oppose"}})))
    assert "value_gap_builder" in msg and "gap" in msg


def test_real_study_dry_run_builds_the_whole_dag(root):
    """The Value Drifts grid: 4 models x 2 SFT sets x 3 algorithms x 4 preference sets, V-PRISM,
    synthetic value-gap pairs, diagnostics; nothing is downloaded by a dry run."""
    out = subprocess.run(["snakemake", "-n", "-F", "--configfile", "config.yaml", "workflow/experiments/value-drifts.yaml"],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for rule in ("prepare_prism_prompts", "build_vprism", "build_value_gap", "judge_pairs", "judge_report"):
        assert f"rule {rule}:" in out.stdout, rule
    assert "prepare_eval_prompts" not in out.stdout and "build_base_model" not in out.stdout
    # 8 SFT runs, 96 preference runs: each run's 11 snapshots generated in one job, judged in one
    assert "generate                     104" in out.stdout and "train_preference              96" in out.stdout
    assert "judge                        104" in out.stdout


def test_judge_reward_needs_a_trained_judge():
    def edit(c):
        c.update(online_reward="judge")
        c["grid"]["preference_datasets"] = ["support_chosen"]
        c["judges"]["api"] = {"kind": "openai_api", "model": "gpt-4o"}
        c["judge"]["name"] = "api"
    msg = problem(broken(edit))
    assert "online_reward" in msg and "openai_api" in msg


def test_internals_study_dry_run_skips_sft_and_probes_every_run(root):
    out = subprocess.run(["snakemake", "-n", "-F", "--configfile", "config.yaml",
                          "workflow/experiments/alignment-internals.yaml"], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # 3 instruct models x 6 algorithms on UltraFeedback, no SFT phase
    assert "skip_sft                       3" in out.stdout and "train_sft" not in out.stdout
    assert "probe_representations         18" in out.stdout and "train_preference              18" in out.stdout
    # an SAE and a crosscoder of every run (dictionaries: every seed and set), and both probe sets
    assert re.search(r"\bprobe_features +18\n", out.stdout) and re.search(r"\bprepare_probe_pairs +2\n", out.stdout)


def test_judge_and_model_entries_take_only_their_settings():
    msg = problem(broken(lambda c: c["judges"]["stance_classifier"].update(temperature=0.3)))
    assert "judges.stance_classifier" in msg and "'temperature'" in msg and "features" in msg
    msg = problem(broken(lambda c: c.update(value_gap_builder={
        "questions": "miniature", "generator": {"kind": "local_llm", "model": "Qwen/Qwen3-8B", "batchsize": 8}})))
    assert "value_gap_builder.generator" in msg and "'batchsize'" in msg and "batch_size" in msg
    msg = problem(broken(lambda c: c["representation"]["probe"].update(nboot=10)))
    assert "representation.probe" in msg and "'nboot'" in msg and "n_boot" in msg


def test_closed_entries_list_exactly_their_dataclass_fields():
    """Each closed entry of the schema becomes a settings dataclass: the two must not drift apart."""
    from valuedrift.behaviour.judges import JUDGES
    from valuedrift.behaviour.judges.stance_classifier import ClassifierSettings
    from valuedrift.config import load_schema
    from valuedrift.data.hub import HubSource
    from valuedrift.data.value_gap import BuilderSettings
    from valuedrift.data.vprism import VPrismSettings
    from valuedrift.llm.api import ApiSettings
    from valuedrift.llm.local import LocalSettings
    from valuedrift.representation.dictionaries import DictionarySettings
    from valuedrift.representation.hidden import HiddenSettings
    from valuedrift.representation.probes import ProbeSettings

    schema = load_schema()
    defs, top = schema["$defs"], schema["properties"]
    entries = [
        (defs["stance_classifier"], ClassifierSettings, {"kind"}),
        (defs["local_llm"], LocalSettings, {"kind"}),
        (defs["openai_api"], ApiSettings, {"kind"}),
        (defs["hub_source"], HubSource, set()),
        (top["value_gap_builder"], BuilderSettings, {"generator", "questions"}),
        (top["eval_prompts"]["properties"]["vprism"], VPrismSettings, set()),
        (top["representation"]["properties"]["hidden"], HiddenSettings, set()),
        (top["representation"]["properties"]["probe"], ProbeSettings, set()),
        (top["dictionaries"]["oneOf"][1]["properties"]["sae"], DictionarySettings, set()),
    ]
    for entry, cls, extra in entries:
        assert entry["additionalProperties"] is False, cls.__name__
        assert set(entry["properties"]) == {f.name for f in dataclasses.fields(cls)} | extra, cls.__name__
    # every kind of judge has its closed entry
    branches = top["judges"]["additionalProperties"]["allOf"]
    kinds = {b["if"]["properties"]["kind"]["const"]: b["then"]["$ref"].split("/")[-1] for b in branches}
    assert set(kinds) == set(JUDGES) and all(defs[d]["properties"]["kind"]["const"] == k for k, d in kinds.items())


def test_a_secret_is_refused_and_never_shown():
    msg = problem(broken(lambda c: c["judges"].update(
        gpt4o={"kind": "openai_api", "model": "gpt-4o", "api_key": "sk-test-123"})))
    assert "judges.gpt4o.api_key" in msg and "environment variable" in msg and "api_key_env" in msg
    assert "sk-test-123" not in msg
    # in a generator, and with the entry's kind misspelt as well
    msg = problem(broken(lambda c: c.update(value_gap_builder={
        "questions": "miniature", "generator": {"kind": "openai", "model": "gpt-4o", "token": "sk-test-456"}})))
    assert "value_gap_builder.generator.token" in msg and "sk-test-456" not in msg


def test_api_key_env_must_name_a_variable_and_is_never_shown():
    msg = problem(broken(lambda c: c["judges"].update(
        gpt4o={"kind": "openai_api", "model": "gpt-4o", "api_key_env": "sk-test-123"})))
    assert "judges.gpt4o.api_key_env" in msg and "environment variable" in msg and "sk-test-123" not in msg
    msg = problem(broken(lambda c: c["judges"].update(
        gpt4o={"kind": "openai_api", "model": "gpt-4o", "api_key_env": 918273645})))
    assert "judges.gpt4o.api_key_env" in msg and "918273645" not in msg


def test_integers_must_be_integers():
    msg = problem(broken(lambda c: c.update(snapshots_per_phase=2.0)))
    assert "config key snapshots_per_phase" in msg and "2.0" in msg and "write a whole number" in msg
    assert "fractions" in problem(broken(lambda c: c.update(snapshots_per_phase="four")))
    # what `snakemake --config seed=1e3` passes
    msg = problem(broken(lambda c: c.update(seed=1000.0)))
    assert "config key seed" in msg and "1000" in msg


def test_trainer_strings_become_the_fields_type():
    def edit(c):  # as `snakemake --config 'algorithms={dpo: {beta: "0.5"}}'` passes them
        c["algorithms"]["dpo"]["beta"] = "0.5"
        c["lora"] = {"r": "16"}
    config = broken(edit)
    validate_config(config)
    assert config["algorithms"]["dpo"]["beta"] == 0.5 and isinstance(config["algorithms"]["dpo"]["beta"], float)
    assert config["lora"]["r"] == 16 and isinstance(config["lora"]["r"], int)


def test_a_trainer_value_of_the_wrong_type_is_named():
    msg = problem(broken(lambda c: c["algorithms"]["dpo"].update(beta="high")))
    assert "algorithms.dpo.beta" in msg and "'high'" in msg and "DPOConfig" in msg
    msg = problem(broken(lambda c: c["sft"].update(max_length=128.5)))
    assert "sft.max_length" in msg and "SFTConfig" in msg


def test_an_unknown_trainer_field_names_the_trl_class():
    msg = problem(broken(lambda c: c["algorithms"]["dpo"].update(betta=0.1)))
    assert "algorithms.dpo.betta" in msg and "TRL's DPOConfig" in msg and "beta" in msg
    msg = problem(broken(lambda c: c["models"]["tiny"]["miniature"]["pretrain"].update(epochs=1)))
    assert "models.tiny.miniature.pretrain.epochs" in msg and "SFTConfig" in msg
    msg = problem(broken(lambda c: c["reward_model"].update(learnin_rate=1e-4)))
    assert "reward_model.learnin_rate" in msg and "RewardConfig" in msg


def test_lora_settings_are_checked_against_peft():
    msg = problem(broken(lambda c: c.update(lora={"r": "big"})))
    assert "lora.r" in msg and "LoraConfig" in msg and "'big'" in msg
    msg = problem(broken(lambda c: c.update(lora={"r": 8, "rank": 8})))
    assert "lora.rank" in msg and "peft's LoraConfig" in msg


def test_settings_valuedrift_sets_itself_are_refused():
    msg = problem(broken(lambda c: c["algorithms"]["simpo"].update(loss_type="sigmoid")))
    assert "algorithms.simpo.loss_type" in msg and "'simpo'" in msg
    assert "sft.seed" in problem(broken(lambda c: c["sft"].update(seed=1)))
    assert "lora.task_type" in problem(broken(lambda c: c.update(lora={"r": 8, "task_type": "SEQ_CLS"})))


def test_local_paths_must_exist_and_hub_ids_pass(tmp_path):
    msg = problem(broken(lambda c: c["models"].update(x={"path": "foo/bar/baz"})))
    assert ("config key models.x.path: 'foo/bar/baz' does not exist and is not a hub id (owner/name) — give an "
            "existing folder or a hub id") in msg
    assert "models.x.path" in problem(broken(lambda c: c["models"].update(x={"path": "./qwen3"})))
    validate_config(broken(lambda c: c["models"].update(x={"path": "Qwen/Qwen3-4B-Base"}, y={"path": str(tmp_path)})))
    msg = problem(broken(lambda c: c["preference_datasets"].update(
        uf={"hub": {"loader": "ultrafeedback", "path": "data/uf.jsonl"}})))
    assert "preference_datasets.uf.hub.path" in msg and "'data/uf.jsonl'" in msg
    msg = problem(broken(lambda c: c["judge"].update(labelled=str(tmp_path / "labels.jsonl"))))
    assert "judge.labelled" in msg and "does not exist" in msg
    msg = problem(broken(lambda c: c["judges"]["stance_classifier_lm"].update(encoder="/models/minilm")))
    assert "judges.stance_classifier_lm.encoder" in msg


def test_question_splits_must_leave_training_questions():
    msg = problem(broken(lambda c: c["world"].update(eval_questions_per_topic=12, judge_test_questions_per_topic=2)))
    assert "world.eval_questions_per_topic" in msg and "world.judge_test_questions_per_topic" in msg
    assert "at most 13" in msg
    validate_config(broken(lambda c: c["world"].update(eval_questions_per_topic=11, judge_test_questions_per_topic=2)))


def test_a_grid_without_preference_runs_is_an_sft_study():
    validate_config(broken(lambda c: c["grid"].update(algorithms=[], preference_datasets=[])))

    def edit(c):
        c["grid"].update(algorithms=["dpo"], preference_datasets=[])
        c["filter"]["preference_datasets"] = []
    assert "grid.preference_datasets" in problem(broken(edit))


def test_the_trl_registry_matches_the_installed_libraries():
    """Regenerate with `python -m valuedrift.training.fields --write` after upgrading TRL or peft."""
    import json

    from valuedrift.training import fields

    committed = json.loads(fields.REGISTRY.read_text())
    fresh = fields.build()
    assert fresh["versions"] == committed["versions"]
    for path in sorted(set(fresh["classes"]) | set(committed["classes"])):
        assert fresh["classes"].get(path) == committed["classes"].get(path), path


def test_validation_imports_no_heavy_library():
    code = ("import sys, yaml; from valuedrift.config import validate_config; "
            f"validate_config(yaml.safe_load(open({str(ROOT / 'config.yaml')!r}))); "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_check_config_names_the_line_of_a_yaml_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\nbehaviour: {temperature: 0.7\nmetrics: 3\n")
    out = subprocess.run(["valuedrift", "check-config", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert str(bad) in out.stderr and "line 3, column 8" in out.stderr


def test_snakemake_config_strings_reach_training_as_numbers():
    out = dry_run("-p", "--config", 'algorithms={dpo: {beta: "0.5"}}',
                  "filter={algorithms: [dpo], preference_datasets: [support_chosen]}")
    assert '"beta": 0.5,' in out


def test_a_variant_names_its_algorithm():
    ok = broken(lambda c: c["algorithms"].update(simpo_g0={**c["algorithms"]["simpo"], "algorithm": "simpo",
                                                          "simpo_gamma": 0.0}))
    ok["grid"]["algorithms"].append("simpo_g0")
    validate_config(ok)
    msg = problem(broken(lambda c: c["algorithms"].update(fancy={"beta": 0.1})))
    assert "algorithms.fancy" in msg and "`algorithm:`" in msg
    msg = problem(broken(lambda c: c["algorithms"]["dpo"].update(algorithm="kto")))
    assert "algorithms.dpo.algorithm" in msg and "name the variant differently" in msg
    msg = problem(broken(lambda c: c["algorithms"].update(v={"algorithm": "simpo", "simpo_gama": 0.5})))
    assert "algorithms.v.simpo_gama" in msg and "CPOConfig" in msg  # the variant's settings are its algorithm's


def test_a_derived_set_names_an_underived_source():
    msg = problem(broken(lambda c: c["preference_datasets"].update(x={"derived": {"from": "nope", "gap_share": 0}})))
    assert "preference_datasets.x.derived.from" in msg and "'nope'" in msg
    msg = problem(broken(lambda c: c["preference_datasets"].update(
        x={"derived": {"from": "support_chosen_null", "gap_share": 0.5}})))
    assert "is itself derived" in msg


def test_snapshot_fractions_increase_to_the_end():
    validate_config(broken(lambda c: c.update(snapshots_per_phase=[0.05, 0.2, 1.0])))
    assert "must increase and end at 1.0" in problem(broken(lambda c: c.update(snapshots_per_phase=[0.5, 0.2, 1.0])))
    assert "must increase and end at 1.0" in problem(broken(lambda c: c.update(snapshots_per_phase=[0.2, 0.5])))


def test_training_seeds_are_a_grid_axis():
    assert "grid.seeds" in problem(broken(lambda c: c["grid"].update(seeds=[])))
    assert "grid.seeds" in problem(broken(lambda c: c["grid"].update(seeds=[1.5])))
    assert "filter.seeds" in problem(broken(lambda c: c["filter"].update(seeds=[7])))


def test_experiments_find_the_workflows_deepspeed_files_from_any_working_directory(tmp_path, monkeypatch):
    """`snakemake --directory /scratch/...` (results on a cluster's scratch disk): the experiments'
    `deepspeed: workflow/deepspeed/zero2.json` is the workflow's own file, not the scratch folder's."""
    from valuedrift.config import workflow_file

    monkeypatch.chdir(tmp_path)
    assert workflow_file("workflow/deepspeed/zero2.json", ROOT) == str(ROOT / "workflow" / "deepspeed" / "zero2.json")
    assert workflow_file("nowhere.json", ROOT) == "nowhere.json" and workflow_file(None, ROOT) is None
    out = subprocess.run(["snakemake", "-n", "--quiet", "rules", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                          str(tmp_path), "--configfile", str(ROOT / "config.yaml"),
                          str(ROOT / "workflow" / "experiments" / "alignment-internals.yaml")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
