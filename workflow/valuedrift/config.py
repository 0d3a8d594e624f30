"""The workflow config: JSON-schema validation with messages that name the key and the fix,
cross-checks the schema cannot express, and typed settings for our own stages.

`valuedrift check-config config.yaml [more.yaml ...]` validates the merged files; the Snakefile
calls `validate_config` at parse time so a bad config stops the run before any job starts.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from valuedrift.io import InputError

SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"

T = TypeVar("T")


class ConfigError(InputError):
    """The config is invalid; the message lists every problem found."""


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _explain(error) -> str:
    """One jsonschema error as 'config key X: what is wrong; what to do'."""
    key = _key(error.absolute_path)
    v, value = error.validator, error.instance
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed))
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"config key {key}: unknown key(s) {', '.join(map(repr, extra))} — remove or correct the spelling{hint}"
    if v == "required":
        return f"config key {key}: {error.message} — add it (see config.yaml for an example)"
    if v == "oneOf" and isinstance(value, dict):
        return f"config key {key}: {error.schema.get('description', error.message)}"
    if v in ("type", "enum", "const"):
        return f"config key {key}: {value!r} is not valid ({error.message}) — {error.schema.get('description', 'fix the value')}"
    return f"config key {key}: {error.message}"


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))


def cross_check(config: dict) -> list[str]:
    problems = []
    grid = config["grid"]
    for section, names in (("models", grid["models"]), ("sft_datasets", grid["sft_datasets"]),
                           ("preference_datasets", grid["preference_datasets"]),
                           ("algorithms", grid["algorithms"])):
        for name in names:
            if name not in config[section]:
                problems.append(f"config key grid.{section}: {name!r} is not defined under `{section}` — "
                                f"define it there or remove it from the grid")
    for section, names in config["filter"].items():
        unknown = sorted(set(names) - set(grid[section]))
        if unknown:
            problems.append(f"config key filter.{section}: {', '.join(map(repr, unknown))} not in grid.{section} — "
                            "a filter can only narrow the grid")
    if config["online_reward"] == "judge" and set(grid["algorithms"]) & {"grpo", "rloo"}:
        for name in grid["preference_datasets"]:
            if chosen_stance(config["preference_datasets"][name]) is None:
                problems.append(f"config key online_reward: `judge` rewards the chosen stance of a value-gap set, "
                                f"but {name!r} has none — use reward_model or drop GRPO/RLOO for it")
    if grid["algorithms"] and not grid["preference_datasets"]:
        problems.append("config key grid.preference_datasets: empty while grid.algorithms is not — "
                        "name at least one preference dataset or clear grid.algorithms")
    problems += _check_datasets(config) + _check_judges(config) + _check_builders(config)
    if config["deepspeed"] and not Path(config["deepspeed"]).is_file():
        problems.append(f"config key deepspeed: {config['deepspeed']!r} does not exist — give the path of a "
                        "DeepSpeed JSON (workflow/deepspeed/zero2.json or zero3.json) or null")
    for name, spec in config["models"].items():
        mini = spec.get("miniature")
        if mini and mini["hidden_size"] % mini["num_heads"]:
            problems.append(f"config key models.{name}.miniature.hidden_size: {mini['hidden_size']} is not "
                            f"divisible by num_heads ({mini['num_heads']})")
    return problems


def chosen_stance(spec: dict) -> str | None:
    """The stance a preference set's chosen answers take, where it has one (value-gap sets)."""
    if "synthetic" in spec:
        return spec["synthetic"]["chosen"]
    mini = spec.get("miniature", {})
    return mini.get("chosen") if mini.get("kind") == "value_gap" else None


def probe_pairs_spec(config: dict) -> dict:
    """The probe pairs' chosen source as a dataset entry: {source: its settings}."""
    source = config["probe_pairs"]["source"]
    return {source: config["probe_pairs"].get(source)}


def _check_datasets(config: dict) -> list[str]:
    from valuedrift.data.hub import KIND

    problems = []
    specs = [(f"config key {section}.{name}", section, spec) for section in ("sft_datasets", "preference_datasets")
             for name, spec in config[section].items()]
    probe = probe_pairs_spec(config)
    if probe[config["probe_pairs"]["source"]] is None:
        problems.append(f"config key probe_pairs.{config['probe_pairs']['source']}: the source needs its settings")
    else:
        specs.append(("config key probe_pairs", "probe_pairs", probe))
    for key, section, spec in specs:
        expected = "sft" if section == "sft_datasets" else "preference"
        if "hub" in spec and KIND[spec["hub"]["loader"]] != expected:
            problems.append(f"{key}.hub.loader: {spec['hub']['loader']!r} gives {KIND[spec['hub']['loader']]} "
                            f"rows, not {expected} rows — use a loader of that kind")
        gap = spec.get("synthetic") or spec.get("miniature", {})
        if {"chosen", "rejected"} <= set(gap) and gap["chosen"] == gap["rejected"]:
            problems.append(f"{key}: chosen and rejected are both {gap['chosen']!r} — a value gap needs "
                            "two different stances")
        problems += _check_miniature(key, spec.get("miniature"))
    return problems


def _check_miniature(key: str, mini: dict | None) -> list[str]:
    problems = []
    if not mini:
        return problems
    if "mixture" in mini and abs(sum(mini["mixture"].values()) - 1) > 1e-6:
        problems.append(f"{key}.miniature.mixture: shares sum to {sum(mini['mixture'].values()):.3f} — "
                        "they must sum to 1")
    if mini.get("kind") == "style_only" and "mixture" not in mini:
        problems.append(f"{key}.miniature: a style_only set needs `mixture`")
    if mini.get("kind") == "value_gap" and not {"chosen", "rejected"} <= set(mini):
        problems.append(f"{key}.miniature: a value_gap set needs `chosen` and `rejected`")
    return problems


def _check_judges(config: dict) -> list[str]:
    judges, section = config["judges"], config["judge"]
    named = [("name", section["name"])] + [("compare", n) for n in section.get("compare", [])]
    problems = [f"config key judge.{key}: judge {name!r} is not defined under `judges` — define it there"
                for key, name in named if name not in judges]
    used = judges.get(section["name"], {})
    if config["online_reward"] == "judge" and used and used["kind"] != "stance_classifier":
        problems.append(f"config key online_reward: `judge` rewards with the trained stance classifier, but judge "
                        f"{section['name']!r} is {used['kind']} — use reward_model, or a stance_classifier judge")
    for name, spec in judges.items():
        if spec["kind"] != "stance_classifier" and "model" not in spec:
            problems.append(f"config key judges.{name}: a {spec['kind']} judge needs `model` (hub id, folder or "
                            "API model name)")
        if spec.get("features") == "embedding" and "encoder" not in spec:
            problems.append(f"config key judges.{name}: embedding features need `encoder` (a config model name, "
                            "hub id or folder)")
    return problems


def _check_builders(config: dict) -> list[str]:
    problems = []
    source = config["eval_prompts"]["source"]
    if source == "vprism" and "vprism" not in config["eval_prompts"]:
        problems.append("config key eval_prompts.vprism: the vprism source needs its settings (at least `prism`)")
    synthetic = [n for n, s in config["preference_datasets"].items() if "synthetic" in s]
    builder = config.get("value_gap_builder")
    if synthetic and not builder:
        problems.append(f"config key value_gap_builder: preference set(s) {', '.join(synthetic)} are synthetic — "
                        "add `value_gap_builder` with a generator and questions")
    questions = (builder or {}).get("questions")
    if questions == "vprism_heldout" and source != "vprism":
        problems.append("config key value_gap_builder.questions: vprism_heldout needs eval_prompts.source vprism "
                        "— give `miniature` or a JSONL path instead")
    if questions == "miniature" and source != "miniature":
        problems.append("config key value_gap_builder.questions: the miniature world's questions go with its "
                        "evaluation prompts (eval_prompts.source miniature) — give vprism_heldout or a JSONL path")
    return problems


def validate_config(config: dict) -> dict:
    """Raise ConfigError listing every problem; return the config unchanged when it is valid."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    problems = [_explain(e) for e in errors]
    if not problems:
        problems = cross_check(config)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return config


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Typed settings from a dict; an unknown key is an error naming the class's fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"unknown {cls.__name__} setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return cls(**values)


def merge(base: dict, override: dict) -> dict:
    """Deep merge, as Snakemake merges --configfile over the Snakefile's configfile."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_parser(subparsers=None) -> argparse.ArgumentParser:
    from valuedrift.cli import command_parser

    parser = command_parser(subparsers, "check-config", __doc__,
                            "Validate config files (merged left to right, like Snakemake's --configfile).")
    parser.add_argument("configs", nargs="+", help="YAML config files")
    return parser


def main(args: argparse.Namespace) -> None:
    config: dict = {}
    for path in args.configs:
        config = merge(config, yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})
    validate_config(config)
    print(f"config OK: {' + '.join(args.configs)}")
