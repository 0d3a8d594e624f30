"""Every config value that reaches a shell command is quoted: paths holding spaces, quotes, `;`,
`$(...)` and backticks run as paths, and nothing in them is executed."""

import shlex
import shutil
import subprocess

import pytest
import yaml

pytestmark = pytest.mark.slow

# a folder name a shell would split, unquote or execute if it reached one unquoted
ODD = "odd dir 'q' \"dq\"; touch PWNED1; $(touch PWNED2); `touch PWNED3` & touch PWNED4"


def executed(*roots) -> list[str]:
    return sorted(str(p) for root in roots for p in root.rglob("PWNED*"))


@pytest.fixture(scope="module")
def odd(tiny, tmp_path_factory):
    """The tiny base model, the labelled answers and a DeepSpeed config under the odd name, and a
    working directory under it too."""
    root = tmp_path_factory.mktemp("quoting") / ODD
    shutil.copytree(tiny / "base", root / "model")
    from valuedrift.cli import main as cli

    from conftest import WORLD

    cli(["prepare-data", "--kind", "judge-test", "--world", WORLD, "--output", str(root / "labelled.jsonl"),
         "--settings", '{"train_size": 60, "test_size": 60, "noise_share": 0.3}'])
    return root


def overlay(odd, root, **extra) -> str:
    settings = {
        "models": {"ext": {"path": str(odd / "model")}},
        "grid": {"models": ["ext"], "seeds": [0], "sft_datasets": ["wildchat_like"], "algorithms": [],
                 "preference_datasets": []},
        "sft_datasets": {"wildchat_like": {"miniature": {"size": 64}}},
        "world": {"judge_data": {"train_size": 300, "test_size": 150, "noise_share": 0.3}},
        "judge": {"labelled": str(odd / "labelled.jsonl"), "compare": ["stance_classifier"], "min_accuracy": 0.5},
        "sft": {"num_train_epochs": 1, "per_device_train_batch_size": 16, "max_length": 96},
        "snapshots_per_phase": 1,
        "behaviour": {"samples_per_question": 1, "max_new_tokens": 8},
        **extra,
    }
    path = odd / "overlay.yaml"
    path.write_text(yaml.safe_dump(settings))
    return str(path)


def snakemake(root, odd, *args, **extra):
    work = odd / "work dir"
    work.mkdir(exist_ok=True)
    # targets before --configfile, which takes every word after it
    cmd = ["snakemake", "--snakefile", str(root / "Snakefile"), "--directory", str(work), "--cores", "2", *args,
           "--configfile", str(root / "config.yaml"), overlay(odd, root, **extra)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900), work


def test_odd_paths_run_as_paths_and_nothing_in_them_is_executed(root, odd):
    out, work = snakemake(root, odd, "results/ext/seed-0/sft-wildchat_like/behaviour/1/stances/stance_classifier.jsonl",
                          "results/diagnostics/judges/stance_classifier.jsonl")
    assert out.returncode == 0, out.stderr[-5000:]
    assert (work / "results" / "ext" / "seed-0" / "sft-wildchat_like" / "behaviour" / "1" / "stances" / "stance_classifier.jsonl").stat().st_size
    assert (work / "results" / "diagnostics" / "judges" / "stance_classifier.jsonl").stat().st_size
    assert executed(odd, root) == []


def test_the_deepspeed_path_reaches_the_launcher_as_one_argument(root, odd):
    shutil.copy(root / "workflow" / "deepspeed" / "zero2.json", odd / "zero2.json")
    out, _ = snakemake(root, odd, "-n", "-p", "results/ext/seed-0/sft-wildchat_like/snapshots/1",
                       deepspeed=str(odd / "zero2.json"))
    assert out.returncode == 0, out.stderr[-3000:]
    (line,) = [line for line in out.stdout.splitlines() if line.startswith("Shell command: accelerate launch")]
    words = shlex.split(line.removeprefix("Shell command: "))
    assert words[words.index("--deepspeed_config_file") + 1] == str(odd / "zero2.json")
    assert words[words.index("--model") + 1] == str(odd / "model")
    assert executed(odd, root) == []
