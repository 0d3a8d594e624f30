"""The workflow config: JSON-schema validation with messages that name the key and the fix,
cross-checks the schema cannot express, and typed settings for our own stages.

`valuedrift check-config config.yaml [more.yaml ...]` validates the merged files; the Snakefile
calls `validate_config` at parse time so a bad config stops the run before any job starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
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


# a key that holds a secret (api_key, hf_token, password, ...); `api_key_env` names one and is fine,
# and TRL's pad_token, eos_token and stop_token are tokens of a vocabulary
SECRET = re.compile(r"key|token|(?:.*[_-])?(?:api_?key|secret|password|passwd|credentials?)"
                    r"|(?:.*[_-])?(?:access|auth|bearer|hub|hf|github|openai|private|secret)[_-](?:token|key)",
                    re.IGNORECASE)
SECRET_FIX = ("secrets are read from environment variables, never from the config: remove it, put the key in "
              "an environment variable and name that variable in `api_key_env` (a hub token goes in HF_TOKEN)")


def looks_secret(name) -> bool:
    return isinstance(name, str) and SECRET.fullmatch(name) is not None


def _secret_problem(key: str) -> str:
    return f"config key {key}: looks like a secret (its value is not shown) — {SECRET_FIX}"


def _hides_value(error) -> bool:
    """Whether the error's value may be a secret, or hold one, and must not be printed: a pasted key
    lands in `api_key_env` as often as in `api_key`."""
    path = list(error.absolute_path)
    last = path[-1] if path else None
    return last == "api_key_env" or looks_secret(last) or _holds_secret(error.instance)


def _holds_secret(value) -> bool:
    if isinstance(value, dict):
        return any(looks_secret(k) or k == "api_key_env" or _holds_secret(v) for k, v in value.items())
    return isinstance(value, list) and any(_holds_secret(v) for v in value)


def _secrets_in_entries(config: dict) -> list[str]:
    """Secret-looking keys of every judge and chat-model entry, whatever else is wrong with it (the
    schema names them only once the entry's `kind` is valid)."""
    def entry(*path):
        value = config
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return value if isinstance(value, dict) else {}

    entries = [(f"judges.{name}", spec) for name, spec in entry("judges").items()]
    entries += [("eval_prompts.vprism.rephraser", entry("eval_prompts", "vprism", "rephraser")),
                ("value_gap_builder.generator", entry("value_gap_builder", "generator"))]
    return [_secret_problem(f"{key}.{k}") for key, spec in entries if isinstance(spec, dict)
            for k in spec if looks_secret(k)]


def _explain(error) -> list[str]:
    """One jsonschema error as 'config key X: what is wrong — what to do' (one line per unknown
    secret); never with a value that may be a secret."""
    key = _key(error.absolute_path)
    v, value = error.validator, error.instance
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed))
        out = [_secret_problem(f"{key}.{k}") for k in extra if looks_secret(k)]
        unknown = [k for k in extra if not looks_secret(k)]
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        if unknown:
            out.append(f"config key {key}: unknown key(s) {', '.join(map(repr, unknown))} — remove or correct "
                       f"the spelling{hint}")
        return out
    if v == "required":
        return [f"config key {key}: {error.message} — add it (see config.yaml for an example)"]
    if v == "oneOf" and isinstance(value, dict):
        return [f"config key {key}: {error.schema.get('description', 'fits none, or several, of its forms')}"]
    if _hides_value(error):
        if v == "pattern" and key.endswith("api_key_env"):
            return [f"config key {key}: not the name of an environment variable (the value is not shown; is it "
                    "the key itself?) — put the key in an environment variable (export OPENAI_API_KEY=...) and "
                    "give that variable's name here"]
        return [f"config key {key}: the value (not shown) is not valid ({v}: {error.validator_value!r}) — "
                f"{error.schema.get('description', 'fix the value')}"]
    if v in ("type", "enum", "const"):
        return [f"config key {key}: {value!r} is not valid ({error.message}) — {_fix(error)}"]
    if v in ("oneOf", "anyOf"):  # a value of several forms: say which forms, not "none of the schemas"
        return [f"config key {key}: {value!r} is not valid — {_fix(error)}"]
    return [f"config key {key}: {error.message}"]


def _fix(error) -> str:
    from valuedrift.training.fields import NUMBER

    expected = error.validator_value if error.validator == "type" else None
    expected = [expected] if isinstance(expected, str) else expected or []
    value = error.instance
    if ("integer" in expected or error.validator in ("oneOf", "anyOf")) and isinstance(value, float) \
            and value.is_integer():
        # `snakemake --config seed=1e3` gives the float 1000.0
        return f"write a whole number, without a decimal point or exponent: {int(value)}"
    if {"number", "integer"} & set(expected) and isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        return "YAML reads a number such as 1e-4 (no decimal point) as text: write 1.0e-4"
    return error.schema.get("description", "fix the value")


def _is_integer(checker, value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validator():
    """Draft 2020-12 with `integer` meaning a Python int: the draft counts 2.0 as an integer, but
    a float where a count is meant is a typo (or `--config seed=1e3`)."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine("integer", _is_integer)
    return jsonschema.validators.extend(base, type_checker=checker)(load_schema())


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
        unknown = sorted(set(names) - set(grid[section]) - _external_labels(config, section))
        if unknown:
            problems.append(f"config key filter.{section}: {', '.join(map(repr, unknown))} not in grid.{section} — "
                            "a filter can only narrow the grid")
    if config["online_reward"] == "judge" and {_method(config, a) for a in grid["algorithms"]} & {"grpo", "rloo"}:
        for name in grid["preference_datasets"]:
            if chosen_stance(config["preference_datasets"][name], config["preference_datasets"]) is None:
                problems.append(f"config key online_reward: `judge` rewards the chosen stance of a value-gap set, "
                                f"but {name!r} has none — use reward_model or drop GRPO/RLOO for it")
    if grid["algorithms"] and not grid["preference_datasets"]:
        problems.append("config key grid.preference_datasets: empty while grid.algorithms is not — "
                        "name at least one preference dataset or clear grid.algorithms")
    for section in ("representation", "dictionaries"):
        unknown = sorted(set((config.get(section) or {}).get("preference_datasets") or []) - set(config["preference_datasets"]))
        if unknown:
            problems.append(f"config key {section}.preference_datasets: {', '.join(map(repr, unknown))} not defined "
                            "under `preference_datasets` — name sets of the grid, or null for every set")
    problems += _check_external(config)
    problems += _check_datasets(config) + _check_judges(config) + _check_builders(config)
    problems += _check_variants(config) + _check_derived(config) + _check_snapshots(config)
    problems += _check_trainers(config) + _check_paths(config) + _check_world(config)
    problems += _check_tracking(config)
    if config["deepspeed"] and not Path(config["deepspeed"]).is_file():
        problems.append(f"config key deepspeed: {config['deepspeed']!r} does not exist — give the path of a "
                        "DeepSpeed JSON (workflow/deepspeed/zero2.json or zero3.json) or null")
    for name, spec in config["models"].items():
        mini = spec.get("miniature")
        if mini and mini["hidden_size"] % mini["num_heads"]:
            problems.append(f"config key models.{name}.miniature.hidden_size: {mini['hidden_size']} is not "
                            f"divisible by num_heads ({mini['num_heads']})")
    return problems


def _external_labels(config: dict, section: str) -> set:
    """The labels external runs give a grid axis (a filter may name them too)."""
    from valuedrift.grid import EXTERNAL_AXES, external_run

    return {getattr(external_run(name, spec), EXTERNAL_AXES[section])
            for name, spec in (config.get("external_runs") or {}).items()}


def _check_external(config: dict) -> list[str]:
    """External runs: labels a run of the grid can carry, one folder each, checkpoints that exist."""
    from valuedrift import grid
    from valuedrift.training.external import checkpoint_folders

    entries = config.get("external_runs") or {}
    if not config["grid"]["models"] and not entries:
        return ["config key grid.models: empty and no external_runs — name a model to train, or give runs trained "
                "elsewhere under external_runs"]
    problems, paths = [], {run.path for run in grid.runs({**config, "external_runs": None})}
    for name, spec in entries.items():
        key, run = f"config key external_runs.{name}", grid.external_run(name, spec)
        if run.algorithm != "sft" and run.algorithm not in config["algorithms"]:
            problems.append(f"{key}.algorithm: {run.algorithm!r} is neither sft nor an entry of `algorithms` — "
                            "name the algorithm that trained it (dpo, kto, ...)")
        if (run.algorithm == "sft") == bool(run.pref_data):
            problems.append(f"{key}.pref_data: " + ("an SFT run has no preference set — remove it" if run.pref_data
                            else "a preference run needs one — name the set it trained on (any label)"))
        if run.path in paths:
            problems.append(f"{key}: its labels give the folder {run.path}, which another run already has — "
                            "change its model, seed or set labels")
        paths.add(run.path)
        folders = checkpoint_folders(spec)
        absent = [str(f) for f in folders if not f.is_dir()]
        if not folders or absent:
            problems.append(f"{key}.checkpoints: {', '.join(absent) or spec['checkpoints']!r} "
                            f"{'do not exist' if absent else 'matches no folder'} — give existing checkpoint folders "
                            "(a glob such as runs/dpo/checkpoint-*, or a list)")
    return problems


def _check_tracking(config: dict) -> list[str]:
    """A tracking backend that is not installed (the schema names unknown ones)."""
    from valuedrift.training.tracking import config_problems

    return config_problems(config)


def _method(config: dict, variant: str) -> str:
    entry = config["algorithms"].get(variant) or {}
    return entry.get("algorithm", variant)


def _check_variants(config: dict) -> list[str]:
    """A variant names an algorithm; an entry named after an algorithm may not name another."""
    from valuedrift.training.trainers import PREFERENCE_ALGORITHMS

    problems = []
    for name, entry in config["algorithms"].items():
        algorithm = entry.get("algorithm", name)
        if algorithm not in PREFERENCE_ALGORITHMS:
            fix = (f"give it `algorithm:` one of {', '.join(PREFERENCE_ALGORITHMS)}" if "algorithm" not in entry
                   else f"use one of {', '.join(PREFERENCE_ALGORITHMS)}")
            problems.append(f"config key algorithms.{name}{'.algorithm' * ('algorithm' in entry)}: "
                            f"{algorithm!r} is not a preference algorithm — {fix}")
        elif name in PREFERENCE_ALGORITHMS and algorithm != name:
            problems.append(f"config key algorithms.{name}.algorithm: the entry {name!r} is that algorithm's own "
                            f"settings — name the variant differently (e.g. {algorithm}_{name})")
    return problems


def _check_derived(config: dict) -> list[str]:
    sets = config["preference_datasets"]
    problems = []
    for name, spec in sets.items():
        source = (spec.get("derived") or {}).get("from")
        if source is None:
            continue
        if source not in sets:
            problems.append(f"config key preference_datasets.{name}.derived.from: {source!r} is not a preference "
                            "set — name one defined under preference_datasets")
        elif "derived" in sets[source]:
            problems.append(f"config key preference_datasets.{name}.derived.from: {source!r} is itself derived — "
                            f"derive from its source, {sets[source]['derived']['from']!r}, instead")
    return problems


def _check_snapshots(config: dict) -> list[str]:
    fractions = config["snapshots_per_phase"]
    if not isinstance(fractions, list):
        return []
    if any(b <= a for a, b in zip(fractions, fractions[1:])) or fractions[-1] != 1:
        return [f"config key snapshots_per_phase: {fractions} — fractions must increase and end at 1.0 "
                "(the phase's end), e.g. [0.1, 0.25, 0.5, 1.0]"]
    return []


def chosen_stance(spec: dict, sets: dict | None = None) -> str | None:
    """The stance a preference set's chosen answers take, where it has one (value-gap sets; a
    derived set only where it keeps its source's whole gap)."""
    if "derived" in spec:
        derived = spec["derived"]
        source = (sets or {}).get(derived["from"])
        return chosen_stance(source) if source and derived["gap_share"] == 1 else None
    if "synthetic" in spec:
        return spec["synthetic"]["chosen"]
    mini = spec.get("miniature", {})
    return mini.get("chosen") if mini.get("kind") == "value_gap" else None


def probe_pairs_spec(config: dict, name: str) -> dict:
    """Probe set `name`'s chosen source as a dataset entry: {source: its settings}."""
    source = config["probe_pairs"][name]["source"]
    return {source: config["probe_pairs"][name].get(source)}


def _selected(spec: dict, run) -> bool:
    """Is the run among the seeds and preference sets `spec` names (null or absent: every one)?
    SFT runs have no preference set and pass that test."""
    return ((spec.get("seeds") is None or run.seed in spec["seeds"])
            and (run.phase == "sft" or spec.get("preference_datasets") is None
                 or run.pref_data in spec["preference_datasets"]))


def representation_run(config: dict, run) -> bool:
    """Is this run's representation probed (`representation.seeds`, `.preference_datasets`)? A run
    trained elsewhere always is: it was named to be probed."""
    return bool(run.external) or _selected(config["representation"], run)


def feature_run(config: dict, run) -> bool:
    """Does this run get sparse dictionaries (SAE, crosscoder)? Preference runs of the seeds and
    preference sets `dictionaries` names (null: every one); none where `dictionaries` is null."""
    spec = config.get("dictionaries")
    return (bool(spec) and run.phase == "preference" and representation_run(config, run)
            and (bool(run.external) or _selected(spec, run)))


def dictionary_settings(config: dict) -> dict:
    """The settings `valuedrift probe-features` takes: the SAE and crosscoder fields, the token cap
    and the hidden-state settings of the representation probe."""
    spec = config.get("dictionaries") or {}
    return {**spec.get("sae", {}), "max_tokens": spec.get("max_tokens", 20000),
            "hidden": config["representation"].get("hidden", {})}


def _check_datasets(config: dict) -> list[str]:
    from valuedrift.data.hub import KIND

    problems = []
    specs = [(f"config key {section}.{name}", section, spec) for section in ("sft_datasets", "preference_datasets")
             for name, spec in config[section].items()]
    for name, entry in config["probe_pairs"].items():
        probe = probe_pairs_spec(config, name)
        if probe[entry["source"]] is None:
            problems.append(f"config key probe_pairs.{name}.{entry['source']}: the source needs its settings")
        else:
            specs.append((f"config key probe_pairs.{name}", "probe_pairs", probe))
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
    if mini.get("kind") in ("style_only", "fluency") and "mixture" not in mini:
        problems.append(f"{key}.miniature: a {mini['kind']} set needs `mixture`")
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
        if spec.get("features") == "embedding" and not spec.get("encoder"):
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


# what valuedrift passes to TRL and peft itself (trainers.make_config, make_trainer); the same key
# from the config would be a second value for one argument
SET_HERE = {"output_dir": "each phase's own folder", "seed": "from the top-level `seed`",
            # refused rather than let win: a phase logging elsewhere would drop out of the side-by-side
            # view of the grid (valuedrift.training.tracking)
            "report_to": "from `tracking.report_to`, one choice for every phase; set it there",
            "run_name": "the run's grid path", "project": "from `tracking.project`"}
LORA_SET_HERE = {"task_type": "CAUSAL_LM"}
LIBRARY = {"trl": "TRL", "peft": "peft"}


def _trainer_settings(config: dict):
    """(config key, algorithm, settings) of every phase's TRL settings."""
    yield "sft", "sft", config["sft"]
    yield "reward_model", "reward", config["reward_model"]
    for name, settings in config["algorithms"].items():
        yield f"algorithms.{name}", _method(config, name), settings
    for name, spec in config["models"].items():
        if "miniature" in spec:
            yield f"models.{name}.miniature.pretrain", "sft", spec["miniature"]["pretrain"]


def _check_trainers(config: dict) -> list[str]:
    """Trainer and LoRA settings against the registry of TRL's and peft's fields, before any job
    starts (TRL itself would object only when the phase's training starts)."""
    from valuedrift.training.fields import LORA
    from valuedrift.training.trainers import ALGORITHMS

    problems = []
    for key, algorithm, settings in _trainer_settings(config):
        if algorithm not in ALGORITHMS:  # named by _check_variants
            continue
        algo = ALGORITHMS[algorithm]
        problems += _check_fields(key, settings, algo.config_class, SET_HERE)
        for field, fixed in algo.fixed.items():
            if field in settings and settings[field] != fixed:
                problems.append(f"config key {key}.{field}: valuedrift sets it to {fixed!r} for {algorithm} "
                                f"(it is what makes {algorithm}) — remove it")
    if isinstance(config["lora"], dict):
        problems += _check_fields("lora", config["lora"], LORA, LORA_SET_HERE)
    return problems


def _check_fields(key: str, settings: dict, class_path: str, set_here: dict[str, str]) -> list[str]:
    """Names and types of `settings` against the class's fields; a string that reads unambiguously
    as the field's type (what `snakemake --config` passes) is converted in place."""
    import difflib

    from valuedrift.training import fields

    specs = fields.registry()[class_path]
    module, name = class_path.split(":")
    problems = []
    for field, value in list(settings.items()):
        where = f"config key {key}.{field}"
        if field == "algorithm" and key.startswith("algorithms."):  # a variant's algorithm, not TRL's
            continue
        if looks_secret(field):
            problems.append(_secret_problem(f"{key}.{field}"))
        elif field in set_here:
            problems.append(f"{where}: valuedrift sets it ({set_here[field]}) — remove it")
        elif field not in specs:
            close = difflib.get_close_matches(field, specs, n=1)
            problems.append(f"{where}: not a field of {LIBRARY[module.split('.')[0]]}'s {name} — remove it or "
                            f"correct the spelling{f' (did you mean {close[0]}?)' if close else ''}")
        elif (fitted := fields.conform(specs[field], value)) is fields.BAD:
            problems.append(f"{where}: {value!r} is not valid for {name}.{field} ({specs[field]['annotation']}) "
                            f"— give {fields.describe(specs[field])}")
        else:
            settings[field] = fitted
    return problems


DATA_SUFFIXES = {".jsonl", ".json", ".parquet", ".csv", ".tsv", ".txt", ".arrow", ".gz", ".zip", ".yaml", ".yml"}
HUB_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*/[A-Za-z0-9_][A-Za-z0-9._-]*")


def is_hub_id(text: str) -> bool:
    """owner/name, as the hub spells repositories; a data file's name is never one."""
    return HUB_ID.fullmatch(text) is not None and Path(text).suffix.lower() not in DATA_SUFFIXES


FOLDER, DATA = "folder", "folder or data file (.jsonl/.json/.parquet/.csv)"


def _paths(config: dict):
    """(config key, value, what it must be) of every local path or hub id in the config."""
    for name, spec in config["models"].items():
        if "path" in spec:
            yield f"models.{name}.path", spec["path"], FOLDER
    vprism = config["eval_prompts"].get("vprism") or {}
    sources = [(f"{section}.{name}.hub", spec.get("hub")) for section in ("sft_datasets", "preference_datasets")
               for name, spec in config[section].items()]
    sources += [(f"probe_pairs.{name}.hub", spec.get("hub")) for name, spec in config["probe_pairs"].items()]
    sources += [("eval_prompts.vprism.prism", vprism.get("prism"))]
    yield from ((f"{key}.path", source["path"], DATA) for key, source in sources if source)
    for name, spec in (config.get("external_runs") or {}).items():
        for field in ("start", "base"):
            if spec.get(field):
                yield f"external_runs.{name}.{field}", spec[field], FOLDER
    for name, spec in config["judges"].items():
        # a model of `models` as encoder is resolved by the workflow (a miniature one is built there)
        if spec.get("encoder") and spec["encoder"] not in config["models"]:
            yield f"judges.{name}.encoder", spec["encoder"], FOLDER
    llms = [(f"judges.{name}", spec) for name, spec in config["judges"].items()]
    llms += [("eval_prompts.vprism.rephraser", vprism.get("rephraser")),
             ("value_gap_builder.generator", (config.get("value_gap_builder") or {}).get("generator"))]
    yield from ((f"{key}.model", spec["model"], FOLDER) for key, spec in llms if spec and spec["kind"] == "local_llm")
    if vprism.get("embedder", "lsa") != "lsa":
        yield "eval_prompts.vprism.embedder", vprism["embedder"], FOLDER
    # files the workflow reads as they are: never hub ids
    if config["judge"].get("labelled"):
        yield ("judge.labelled", config["judge"]["labelled"],
               "JSONL file (question, answer, stance), or null for the miniature world's held-out judge set")
    questions = (config.get("value_gap_builder") or {}).get("questions")
    if questions and questions not in ("vprism_heldout", "miniature"):
        yield ("value_gap_builder.questions", questions,
               "JSONL file (question_id, topic, question), or vprism_heldout or miniature")


def _check_paths(config: dict) -> list[str]:
    """A path must exist (from the working directory, the workflow's) unless it is a hub id;
    otherwise its job would fail after a hub lookup that cannot succeed."""
    problems = []
    for key, path, what in _paths(config):
        if Path(path).expanduser().exists() or (what in (FOLDER, DATA) and is_hub_id(path)):
            continue
        if what in (FOLDER, DATA):
            problems.append(f"config key {key}: {path!r} does not exist and is not a hub id (owner/name) — give "
                            f"an existing {what} or a hub id")
        else:
            problems.append(f"config key {key}: {path!r} does not exist — give an existing {what}")
    return problems


def _check_world(config: dict) -> list[str]:
    """The miniature world's split must leave training questions in every topic
    (valuedrift.world.questions.split_questions would refuse it in the first job)."""
    from valuedrift.world.questions import load_bank

    world = config["world"]
    taken = world["eval_questions_per_topic"] + world["judge_test_questions_per_topic"]
    sizes = {topic: len(spec["questions"]) for topic, spec in load_bank().items()}
    topic = min(sizes, key=sizes.get)
    if taken < sizes[topic]:
        return []
    return [f"config key world.eval_questions_per_topic + world.judge_test_questions_per_topic: together {taken}, "
            f"which leaves no training question in topic {topic!r} ({sizes[topic]} questions) — lower them to a "
            f"sum of at most {sizes[topic] - 1}"]


def _seeds_as_integers(config: dict) -> None:
    """`snakemake --config 'filter={seeds: [1]}'` passes the nested 1 as the text "1"."""
    for section in ("grid", "filter"):
        seeds = (config.get(section) or {}).get("seeds")
        if isinstance(seeds, list):
            config[section]["seeds"] = [int(s) if isinstance(s, str) and s.strip().isdigit() else s for s in seeds]


def workflow_file(path: str | None, workflow_dir: str | os.PathLike) -> str | None:
    """A file the config names relative to the workflow (the experiments' `deepspeed:
    workflow/deepspeed/zero3.json`), as found from any working directory (`snakemake --directory`):
    the path as given where it exists, else the workflow's own file, else the path unchanged (and
    the check names it)."""
    if not path or Path(path).exists() or Path(path).is_absolute():
        return path
    own = Path(workflow_dir) / path
    return str(own) if own.exists() else path


def validate_config(config: dict) -> dict:
    """Raise ConfigError listing every problem; return the config when it is valid. Trainer and
    LoRA values given as strings (`snakemake --config`) are converted to their fields' types in
    place, so the caller's dict holds what TRL takes; so are training seeds."""
    _seeds_as_integers(config)
    errors = sorted(_validator().iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    problems = [line for e in errors for line in _explain(e)]
    problems = list(dict.fromkeys(_secrets_in_entries(config) + problems))
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


def read_config_file(path: str | Path) -> dict:
    """One YAML config file; a syntax error names the file, line and column, not a traceback."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where}: not valid YAML ({getattr(e, 'problem', None) or e}) — "
                          "fix the syntax there") from e
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {path}: holds a {type(data).__name__}, not a mapping of config keys — "
                          "write `key: value` lines (see config.yaml)")
    return data or {}


def main(args: argparse.Namespace) -> None:
    config: dict = {}
    for path in args.configs:
        config = merge(config, read_config_file(path))
    validate_config(config)
    print(f"config OK: {' + '.join(args.configs)}")
