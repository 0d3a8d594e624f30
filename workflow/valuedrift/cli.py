"""The `valuedrift` command: one subcommand per stage of the workflow.

Each subcommand lives in its own module with `make_parser(subparsers)` and `main(args)`; modules
import torch and the other heavy libraries inside `main`, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# subcommand -> module; the order is the order of the workflow
COMMANDS = {
    "check-config": "valuedrift.config",
    "plan": "valuedrift.plan",
    "prepare-data": "valuedrift.data.prepare",
    "build-vprism": "valuedrift.data.vprism",
    "build-base": "valuedrift.models.tiny",
    "train-judge": "valuedrift.behaviour.judges.stance_classifier",
    "build-value-gap": "valuedrift.data.value_gap",
    "judge-pairs": "valuedrift.behaviour.judge_pairs",
    "value-gap": "valuedrift.analysis.value_gap",
    "judge-report": "valuedrift.analysis.judge_report",
    "train": "valuedrift.training.train",
    "publish-start": "valuedrift.training.start",
    "import-checkpoints": "valuedrift.training.external",
    "generate": "valuedrift.behaviour.generate",
    "judge": "valuedrift.behaviour.judge",
    "cache-merge": "valuedrift.llm.cache",
    "aggregate": "valuedrift.analysis.aggregate",
    "drift": "valuedrift.analysis.drift",
    "training-health": "valuedrift.analysis.training_health",
    "judge-sensitivity": "valuedrift.analysis.judge_sensitivity",
    "plot": "valuedrift.analysis.plots",
    "probe-representations": "valuedrift.representation.probe_run",
    "representation-report": "valuedrift.representation.report",
    "probe-features": "valuedrift.representation.features",
    "feature-report": "valuedrift.representation.feature_report",
}


# set to 1 where the command line is out of reach (a Snakemake rule's shell command)
DEBUG_ENV = "VALUEDRIFT_DEBUG"
# seconds between a progress bar's redraws where stderr is a file (a job's log), not a terminal
LOG_PROGRESS_INTERVAL = 10


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def command_parser(subparsers, name: str, doc: str, description: str | None = None) -> argparse.ArgumentParser:
    """The parser of one subcommand (standalone when `subparsers` is None); its description is
    the first paragraph of the module's docstring."""
    kwargs = dict(description=description or doc.split("\n\n")[0],
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    return subparsers.add_parser(name, **kwargs) if subparsers else argparse.ArgumentParser(prog=name, **kwargs)


def bootstrap_arguments(parser: argparse.ArgumentParser) -> None:
    """The confidence-interval flags every metrics command shares."""
    parser.add_argument("--bootstrap-samples", type=int, default=1000, help="resamples per interval")
    parser.add_argument("--confidence", type=float, default=0.95, help="coverage of the intervals")
    parser.add_argument("--seed", type=int, default=0)


def make_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="valuedrift", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", default=_env_flag(DEBUG_ENV),
                        help=f"show the full traceback of input errors too (or set {DEBUG_ENV}=1)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.make_parser(subparsers)
        modules[name] = module
    return parser, modules


def main(argv: list[str] | None = None) -> None:
    # quiet, offline-friendly defaults for the libraries underneath; the user's settings win
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if not sys.stderr.isatty():
        # a job's log file keeps every redraw of a progress bar: one every few seconds, not ten a
        # second (tqdm reads this when first imported, later, as a stage loads its libraries)
        os.environ.setdefault("TQDM_MININTERVAL", str(LOG_PROGRESS_INTERVAL))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser, modules = make_parser()
    args = parser.parse_args(argv)
    from valuedrift.io import InputError

    try:
        modules[args.command].main(args)
    except (InputError, FileNotFoundError) as e:
        # bad input: say what and where, without a traceback the user has to read through; the
        # traceback is there on request, for errors whose cause lies in the code
        logging.getLogger("valuedrift").error("%s", e, exc_info=args.debug)
        sys.exit(2)
