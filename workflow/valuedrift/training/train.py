"""`valuedrift train`: one training phase (SFT, a preference algorithm, or a reward model) with
probe snapshots.

Several GPUs, sharded with DeepSpeed: `accelerate launch --num_processes N --use_deepspeed
--deepspeed_config_file workflow/deepspeed/zero3.json -m valuedrift train ...` (the workflow
builds this command from the config).

Work in progress lives in `<run>/.train/` (resume checkpoints and the snapshots written so far),
so that it survives a crash. On SIGTERM (what SLURM sends at a time limit or preemption) the
phase writes a checkpoint at the end of the current step and exits with status 75; started again
with the same settings it resumes from the last checkpoint, keeps the snapshots it already has and
ends at the same final step. Only when the phase ends are the snapshots moved to
`<run>/snapshots/k/`, which is what the workflow's later stages read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: try again (SLURM requeue or Snakemake --retries resumes)
SNAPSHOT_DTYPES = ("auto", "float32", "bfloat16", "float16")


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "train", __doc__)
    parser.add_argument("--algorithm", required=True, help="sft, dpo, ipo, simpo, orpo, kto, grpo, rloo, ppo, reward")
    parser.add_argument("--model", required=True, help="starting model: hub id or folder")
    parser.add_argument("--data", required=True, help="training set (JSONL in the project's SFT or preference schema)")
    parser.add_argument("--run-dir", required=True, help="run folder; snapshots go to RUN_DIR/snapshots/k")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--snapshots", type=int, help="K: snapshots after the start, evenly spaced")
    where.add_argument("--fractions", type=json.loads,
                       help="JSON list: the fractions of the phase of snapshots 1..K (increasing, the last 1.0)")
    parser.add_argument("--snapshot-dtype", default="auto", choices=SNAPSHOT_DTYPES,
                        help="dtype of the saved snapshots (auto: as trained; bfloat16 halves fp32's disk)")
    parser.add_argument("--settings", default="{}", help="JSON: fields of the algorithm's TRL config")
    parser.add_argument("--reward-model", default=None, help="trained reward model (PPO, GRPO, RLOO)")
    parser.add_argument("--judge-reward", default=None, metavar="STANCE",
                        help="GRPO/RLOO: reward = the judge's p(STANCE) of each sampled answer, instead of a reward model")
    parser.add_argument("--judge-model", default=None, help="the judge's model folder, with --judge-reward")
    parser.add_argument("--lora", default="null",
                        help="JSON: peft LoraConfig fields to train adapters instead of all weights; null = full")
    parser.add_argument("--tracking", default="null",
                        help="JSON: the config's `tracking` section (report_to, dir, project; {} for its defaults); "
                             "null: no tracking")
    parser.add_argument("--run-name", default=None,
                        help="the run's name in the trackers (the workflow gives its grid path); default: the run "
                             "folder's name")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    return parser


def settings_hash(args: argparse.Namespace) -> str:
    """Identifies everything that changes the trained weights; a resume needs the same hash. The
    start model, data, reward model and judge count by their contents, not their paths: an
    upstream phase retrained with other settings, or a data file swapped at the same path, makes
    an interrupted phase start afresh."""
    from valuedrift.checksums import content_id

    inputs = [content_id(p) for p in (args.model, args.data, args.reward_model, args.judge_model)]
    key = json.dumps([args.algorithm, inputs, snapshot_spec(args), json.loads(args.settings), args.seed,
                      args.judge_reward, json.loads(args.lora), args.snapshot_dtype], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def snapshot_spec(args: argparse.Namespace) -> int | list[float]:
    """K, or the fractions of snapshots 1..K."""
    return args.snapshots if args.fractions is None else [float(f) for f in args.fractions]


def snapshot_count(args: argparse.Namespace) -> int:
    return args.snapshots if args.fractions is None else len(args.fractions)


def is_complete_checkpoint(folder: Path) -> bool:
    """The Trainer writes trainer_state.json last; a folder killed mid-save lacks it, or holds a
    truncated one, or one of another step."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return f"checkpoint-{state.get('global_step')}" == folder.name


def last_complete_checkpoint(work: Path) -> Path | None:
    """The newest complete resume checkpoint; incomplete ones are removed, saying so."""
    found = sorted((work / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    complete = [p for p in found if is_complete_checkpoint(p)]
    for folder in found:
        if folder not in complete:
            log.warning("%s is incomplete (killed while it was being written): removed; %s", folder,
                        f"resuming from {complete[-1].name}" if complete else "no complete checkpoint is left")
            shutil.rmtree(folder)
    return complete[-1] if complete else None


def prepare_work_dir(work: Path, config_hash: str, resumable: bool) -> None:
    """Keep `work` only if it holds an interrupted run of the same settings and inputs; stamp it."""
    stamp = work / "settings_hash"
    if stamp.exists() and (stamp.read_text().strip() != config_hash or not resumable):
        log.warning("an interrupted run is here but %s; starting this phase afresh",
                    "its settings or inputs differ" if resumable else "this algorithm cannot resume")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(config_hash)


def publish_snapshots(work: Path, run_dir: Path, num_snapshots: int) -> None:
    from valuedrift.training.snapshots import is_complete

    out = run_dir / "snapshots"
    out.mkdir(parents=True, exist_ok=True)
    for k in range(num_snapshots + 1):
        src = work / "snapshots" / str(k)
        if not is_complete(src):
            raise RuntimeError(f"snapshot {k} was not written: {src}")
        if (out / str(k)).exists():
            shutil.rmtree(out / str(k))
        os.replace(src, out / str(k))


def precomputes_reference(args: argparse.Namespace) -> bool:
    """With `precompute_ref_log_probs` (DPO, IPO, KTO) TRL computes every reference log-prob
    before the first step, from the policy itself, which is still the start model then (a resumed
    phase loads its checkpoint only once training begins): a frozen copy would only hold memory."""
    return bool(json.loads(args.settings).get("precompute_ref_log_probs"))


def require_chat_template(tokenizer, model: str) -> None:
    """Every stage renders conversations with the model's chat template; a base model without one
    must take one (its instruct sibling's) before its first phase."""
    from valuedrift.io import InputError

    if tokenizer.chat_template is None:
        raise InputError(f"{model}: the tokenizer has no chat template (a base model?), and every stage renders "
                         "conversations with it; set the model's `chat_template` in the config "
                         "(models.<name>.chat_template) to a tokenizer whose template it should learn, usually its "
                         "instruct sibling's (e.g. meta-llama/Llama-3.1-8B-Instruct for meta-llama/Llama-3.1-8B)")


def load_models(args: argparse.Namespace):
    """The policy and whatever else the algorithm needs, all from folders or hub ids."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from valuedrift.io import InputError
    from valuedrift.training.trainers import Models, spec

    algo = spec(args.algorithm)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if "chat_template_path" not in json.loads(args.settings):  # else SFTTrainer clones one in
        require_chat_template(tokenizer, args.model)
    if tokenizer.pad_token is None:
        # Llama 3's tokenizer has none, and TRL's CPO/ORPO collators refuse to pad without one; the
        # pad positions are masked out of every loss, so end of text serves (as TRL's docs advise)
        tokenizer.pad_token = tokenizer.eos_token
    if algo.data == "prompt_ids":
        tokenizer.padding_side = "left"  # PPO generates from batches of prompts
    if algo.sequence_classifier:
        policy = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1)
    else:
        policy = AutoModelForCausalLM.from_pretrained(args.model)
    models = Models(policy, tokenizer)
    if algo.reference_model and not precomputes_reference(args):
        models.reference = AutoModelForCausalLM.from_pretrained(args.model)
    if algo.reward:
        if args.judge_reward and args.algorithm != "ppo":
            from valuedrift.training.rewards import StanceReward

            models.reward = StanceReward.load(args.judge_model, args.judge_reward)
        elif args.reward_model:
            models.reward = AutoModelForSequenceClassification.from_pretrained(args.reward_model, num_labels=1)
        else:
            raise InputError(f"{args.algorithm} needs --reward-model" + ("" if args.algorithm == "ppo" else
                                                                         " or --judge-reward"))
    if algo.value_model:
        models.value = AutoModelForSequenceClassification.from_pretrained(args.reward_model, num_labels=1)
    return models


class Preemption:
    """Turns SIGTERM into 'checkpoint at the end of this step, then stop'. In a multi-process run
    the processes agree on the step (a signal reaches them at slightly different times, and the
    checkpoint is a collective operation)."""

    def __init__(self):
        self.requested = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._request)

    def _request(self, signum, frame) -> None:
        log.warning("received signal %d: checkpointing at the end of this step, then stopping", signum)
        self.requested = True

    def callback(self):
        import torch
        from transformers import TrainerCallback

        outer = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                import torch.distributed as dist

                if dist.is_available() and dist.is_initialized():
                    flag = torch.tensor([int(outer.requested)])
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    outer.requested = bool(flag.item())
                if outer.requested:
                    control.should_save = True
                    control.should_training_stop = True

        return _Callback()


def check_rows_kept(trainer, n_rows: int, settings: dict) -> None:
    """Some TRL trainers drop rows longer than max_length instead of truncating them: say so, and
    refuse to train on nothing."""
    from valuedrift.io import InputError

    kept = len(trainer.train_dataset)
    if kept == 0:
        raise InputError(f"every one of the {n_rows} training rows is longer than max_length="
                         f"{settings.get('max_length')}; raise max_length in the algorithm's settings")
    if kept < n_rows:
        log.warning("the trainer dropped %d of %d rows longer than max_length=%s", n_rows - kept, n_rows,
                    settings.get("max_length"))


def main(args: argparse.Namespace) -> None:
    import torch
    from accelerate import PartialState
    from transformers import set_seed
    from transformers.utils import logging as transformers_logging

    from valuedrift.io import atomic_path
    from valuedrift.training import tracking as tracker
    from valuedrift.training.data import load_training_data
    from valuedrift.training.snapshots import SnapshotCallback
    from valuedrift.training.trainers import make_config, make_trainer, spec

    torch.set_num_threads(args.threads)
    algo = spec(args.algorithm)
    run_dir = Path(args.run_dir)
    work = run_dir / ".train"
    # resume checkpoints are written at every snapshot (see SnapshotCallback); keep only the last
    settings = {"save_total_limit": 1, **json.loads(args.settings)}
    # checked before anything loads: a backend that is not installed stops the job at once
    tracking, run_name = tracker.parse(args.tracking), args.run_name or run_dir.name
    settings.update(tracker.trainer_fields(tracking, run_name, settings))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # several CPU processes (tests, laptops) talk over gloo; without it DeepSpeed's batch-size
        # check fails on a world size it does not see
        settings.setdefault("ddp_backend", "gloo")
    config = make_config(args.algorithm, settings, work / "checkpoints", args.seed)
    # the main process cleans up or stamps the work folder before the others look at it (not
    # config.main_process_first: PPOConfig shadows TrainingArguments.world_size with a field)
    state = PartialState()
    # hashing the inputs' contents once is enough: only the main process stamps the work folder
    # and writes snapshots
    config_hash = settings_hash(args) if state.is_main_process else None
    with state.main_process_first():
        if state.is_main_process:
            prepare_work_dir(work, config_hash, algo.resumable)
        resume = last_complete_checkpoint(work)
    if tracking:
        tracker.prepare_environment(tracking, run_name)
        log.info("tracking %s as %s (TensorBoard: %s)", ", ".join(tracking.backends), run_name,
                 tracking.log_dir(run_name))
        if state.is_main_process and not resume:
            tracker.clear_stale_events(tracking, run_name)

    # seeded before loading: a reward model's (and value model's) new score head is initialised at
    # load time, before the trainer seeds anything, and unseeded it made every PPO and GRPO run
    # that reads the reward model different from the last
    set_seed(args.seed)
    models = load_models(args)
    dataset = load_training_data(algo.data, args.data, models.tokenizer)
    meta = {"algorithm": args.algorithm, "start_model": args.model, "data": args.data, "settings_hash": config_hash}
    snapshots = SnapshotCallback(work / "snapshots", snapshot_spec(args), meta, checkpoint=algo.resumable,
                                 dtype=args.snapshot_dtype)
    preemption = Preemption()
    callbacks = [snapshots]
    if algo.resumable:
        preemption.install()
        callbacks.append(preemption.callback())
    trainer = make_trainer(args.algorithm, models, dataset, config, callbacks, lora=json.loads(args.lora))
    snapshots.trainer = trainer
    check_rows_kept(trainer, len(dataset), settings)
    log.info("%s on %s: %d rows, %s", args.algorithm, args.data, len(dataset),
             f"resuming from the last checkpoint ({resume.name})" if resume else "starting")
    # snapshots are saved while the training bar is drawn: their own bars ("Writing model shards")
    # would break into it in the log
    transformers_logging.disable_progress_bar()
    if resume:
        trainer.train(resume_from_checkpoint=str(resume))
    else:
        trainer.train()  # PPO's train() takes no arguments
    if preemption.requested:
        log.warning("stopped at step %d with a checkpoint; run again to resume", trainer.state.global_step)
        finish_distributed()
        sys.exit(EXIT_PREEMPTED)
    if trainer.is_world_process_zero():
        publish_snapshots(work, run_dir, snapshot_count(args))
        with atomic_path(run_dir / "trainer_state.json") as tmp:  # the loss curve and other logs
            trainer.state.save_to_json(str(tmp))
        shutil.rmtree(work)
    finish_distributed()


def finish_distributed() -> None:
    """Close the process group: without it a multi-process run occasionally aborts at exit."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
