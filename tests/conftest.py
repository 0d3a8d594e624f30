import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# offline, quiet libraries in every test and in the subprocesses they start
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the tests start `valuedrift` and `snakemake`, and snakemake's rules start `valuedrift`: find the
# ones installed beside this Python even when its environment is not activated
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


WORLD = '{"seed": 0, "eval_questions_per_topic": 5, "judge_test_questions_per_topic": 2}'
TINY_MODEL = ('{"vocab_size": 400, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "pretrain": '
              '{"max_steps": 5, "per_device_train_batch_size": 16, "learning_rate": 3e-3, "max_length": 96}}')


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """A tiny world for training tests: pretraining corpus, an SFT set of 48 rows, 32 value-gap
    pairs, and a base model pretrained for a few steps (seconds, not minutes)."""
    from valuedrift.cli import main as cli

    d = tmp_path_factory.mktemp("tiny")
    cli(["prepare-data", "--kind", "pretrain", "--world", WORLD, "--settings", '{"size": 200, "terse_share": 0.5}',
         "--output", str(d / "pretrain.jsonl")])
    cli(["prepare-data", "--kind", "sft", "--name", "s", "--world", WORLD, "--output", str(d / "sft.jsonl"),
         "--settings", '{"miniature": {"size": 48, "mixture": {"support": 0.2, "neutral": 0.6, "oppose": 0.2}}}'])
    cli(["prepare-data", "--kind", "preference", "--name", "p", "--world", WORLD, "--output", str(d / "pref.jsonl"),
         "--settings", '{"miniature": {"size": 32, "kind": "value_gap", "chosen": "support", "rejected": "oppose"}}'])
    cli(["build-base", "--corpus", str(d / "pretrain.jsonl"), "--output", str(d / "base"), "--settings", TINY_MODEL])
    return d


@pytest.fixture(scope="module")
def server():
    """A loopback server speaking the OpenAI chat-completions protocol (tests/llm_server.py)."""
    from llm_server import ChatServer

    with ChatServer() as s:
        yield s


@pytest.fixture(scope="module")
def stance_judge(tmp_path_factory) -> Path:
    """A stance classifier trained on a small labelled set of the miniature world: its folder."""
    from valuedrift.cli import main as cli

    d = tmp_path_factory.mktemp("stance_judge")
    for split in ("train", "test"):
        cli(["prepare-data", "--kind", f"judge-{split}", "--world", WORLD, "--output", str(d / f"{split}.jsonl"),
             "--settings", '{"train_size": 90, "test_size": 60, "noise_share": 0.3}'])
    cli(["train-judge", "--train", str(d / "train.jsonl"), "--test", str(d / "test.jsonl"), "--output", str(d / "judge")])
    return d / "judge"
