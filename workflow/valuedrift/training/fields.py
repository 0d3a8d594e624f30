"""What the TRL and peft config classes accept, as a registry the config check reads without TRL.

The config is validated when Snakemake parses the workflow, where importing TRL (and with it torch)
would cost seconds on every dry run. So the fields of every TRL config class in
`trainers.ALGORITHMS`, and of peft's LoraConfig, are written once into trl_fields.json beside this
file: per field its annotation and the JSON types it takes. A test regenerates the registry from
the installed libraries and compares, so an upgrade of TRL or peft shows up there:

    python -m valuedrift.training.fields --write     # after upgrading TRL, peft or transformers
    python -m valuedrift.training.fields --check     # exit 1 when the file is out of date

A field spec is {"annotation": str, "types": [...], "choices": [...], "items": spec}: `types` are
JSON types (null, boolean, integer, number, string, array, object); `choices` the strings a string
must be; `items` the spec of an array's items. A spec without `types` takes anything: its
annotation is too involved to check (a peft sub-config class, accelerate's ParallelismConfig).
"""

from __future__ import annotations

import argparse
import enum
import json
import re
import sys
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any

REGISTRY = Path(__file__).resolve().with_name("trl_fields.json")
# every TRL config class derives from it; classes list only where they differ, so a diff of the
# registry after an upgrade shows what changed
BASE = "transformers:TrainingArguments"
LORA = "peft:LoraConfig"
LIBRARIES = ("trl", "peft", "transformers")
# a value conform() cannot make fit a field
BAD = object()

INTEGER = re.compile(r"[+-]?[0-9]+")
NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def class_paths() -> list[str]:
    """The "module:Class" of every config class the registry covers."""
    from valuedrift.training.trainers import ALGORITHMS

    return sorted({a.config_class for a in ALGORITHMS.values()} | {LORA})


# --- reading the registry (no TRL) -------------------------------------------------------------------


@lru_cache(maxsize=1)
def registry() -> dict[str, dict[str, dict]]:
    """class path -> {field name: spec}, every class's fields in full."""
    data = json.loads(REGISTRY.read_text(encoding="utf-8"))
    return {path: expand(data["classes"], path) for path in data["classes"]}


def expand(classes: dict, path: str) -> dict[str, dict]:
    entry = classes[path]
    fields = dict(expand(classes, entry["base"])) if "base" in entry else {}
    for name in entry.get("without", []):
        fields.pop(name)
    return {**fields, **entry["fields"]}


def conform(spec: dict, value: Any) -> Any:
    """`value` as the field takes it, or BAD. A string where the field takes no string is read as
    the field's type where that is unambiguous ("0.5" for a float, "3" for an int, "true" for a
    bool): `snakemake --config` and YAML (1e-4 without a decimal point) hand such strings over."""
    kinds = spec.get("types")
    if kinds is None:
        return value
    if isinstance(value, str) and "string" not in kinds:
        value = _from_string(value, kinds)
    if isinstance(value, list) and "array" in kinds:
        items = [conform(spec.get("items", {}), v) for v in value]
        return BAD if any(v is BAD for v in items) else items
    if isinstance(value, str) and spec.get("choices") and value not in spec["choices"]:
        return BAD
    return value if any(_is(kind, value) for kind in kinds) else BAD


def _from_string(text: str, kinds: list[str]) -> Any:
    word = text.strip()
    if "integer" in kinds and INTEGER.fullmatch(word):
        return int(word)
    if "number" in kinds and NUMBER.fullmatch(word):
        return float(word)
    if "boolean" in kinds and word.lower() in ("true", "false"):
        return word.lower() == "true"
    if "null" in kinds and word.lower() in ("null", "none"):
        return None
    return BAD


def _is(kind: str, value: Any) -> bool:
    if isinstance(value, bool):  # a bool is an int to Python, never to a config
        return kind == "boolean"
    return {"null": value is None, "integer": isinstance(value, int), "number": isinstance(value, (int, float)),
            "string": isinstance(value, str), "array": isinstance(value, list),
            "object": isinstance(value, dict)}.get(kind, False)


def describe(spec: dict) -> str:
    """What a field takes, in words: 'a number', 'one of cosine, linear or null'."""
    words = {"null": "null", "boolean": "true or false", "integer": "an integer", "number": "a number",
             "object": "a mapping"}
    out = []
    for kind in spec.get("types", []):
        if kind == "string":
            out.append(f"one of {', '.join(spec['choices'])}" if spec.get("choices") else "a string")
        elif kind == "array":
            item = describe(spec.get("items", {}))
            out.append(f"a list of {item}" if spec.get("items", {}).get("types") else "a list")
        else:
            out.append(words[kind])
    if not out:
        return "anything"
    return out[0] if len(out) == 1 else ", ".join(out[:-1]) + " or " + out[-1]


# --- writing the registry (imports TRL, peft and transformers) ---------------------------------------


def field_spec(annotation: Any) -> dict:
    """The JSON types a dataclass field annotation accepts; {} where it is too involved to say."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return _union([field_spec(a) for a in args], args)
    if annotation is type(None):
        return {"types": ["null"]}
    if annotation in (bool, int, float, str):
        return {"types": [{bool: "boolean", int: "integer", float: "number", str: "string"}[annotation]]}
    if origin is typing.Literal:
        return _literal(args)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = [m.value for m in annotation]
        return {"types": ["string"], "choices": sorted(values)} if all(isinstance(v, str) for v in values) else {}
    if annotation is dict or origin is dict:
        return {"types": ["object"]}
    if annotation is list or origin in (list, tuple, set):
        return _array(args)
    return {}


def _array(args: tuple) -> dict:
    item_args = [a for a in args if a is not Ellipsis]
    items = [field_spec(a) for a in item_args]
    if not items or any(not i for i in items) or any(i != items[0] for i in items):
        return {"types": ["array"]}
    # TRL wraps a single value into a list (DPOConfig.loss_type), so one item is taken as well
    out = {"types": sorted({"array", *items[0]["types"]}), "items": items[0]}
    if "choices" in items[0]:
        out["choices"] = items[0]["choices"]
    return out


def _literal(values: tuple) -> dict:
    kinds = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string"}
    spec = {"types": sorted({kinds[type(v)] for v in values})}
    strings = [v for v in values if isinstance(v, str)]
    # peft spells a family of values as a pattern ('pissa_niter_[number of iters]'): not a closed set
    if strings and not any("[" in s for s in strings):
        spec["choices"] = sorted(strings)
    return spec


def _union(specs: list[dict], args: tuple) -> dict:
    if any(not s for s in specs):
        return {}
    # transformers reads a string through the enum it is paired with (SchedulerType | str)
    enums = [s for s, a in zip(specs, args) if isinstance(a, type) and issubclass(a, enum.Enum)]
    if enums:
        specs = [s for s, a in zip(specs, args) if a is not str]
    kinds = sorted({k for s in specs for k in s["types"]})
    out: dict = {"types": kinds}
    string_specs = [s for s in specs if "string" in s["types"]]
    if string_specs and all(s.get("choices") for s in string_specs):
        out["choices"] = sorted({c for s in string_specs for c in s["choices"]})
    array_items = [s.get("items") for s in specs if "array" in s["types"]]
    if array_items and all(array_items) and all(i == array_items[0] for i in array_items):
        out["items"] = array_items[0]
    return out


def class_fields(cls) -> dict[str, dict]:
    import dataclasses

    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.init:
            annotation = hints.get(f.name, f.type)
            out[f.name] = {"annotation": _spell(annotation), **field_spec(annotation)}
    return out


def _spell(annotation: Any) -> str:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) > 2:
        # Union[str, list[str]] and Union[list[str], str] are one cached object, printed in the order
        # of whichever the process built first: sorted, the text no longer depends on import order
        members = sorted(_spell(a) for a in args if a is not type(None))
        return f"Union[{', '.join(members + ['None'] * (type(None) in args))}]"
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    # 'typing.Optional[peft.tuners.lora.config.EvaConfig]' -> 'Optional[EvaConfig]'
    return re.sub(r"\b(?:[a-z_][a-z0-9_]*\.)+(?=[A-Za-z_])", "", text).replace("NoneType", "None")


def build() -> dict:
    """The registry from the installed TRL, peft and transformers."""
    import importlib
    import warnings
    from importlib.metadata import version

    def load(path):
        module, name = path.split(":")
        with warnings.catch_warnings():  # trl.experimental warns on import
            warnings.simplefilter("ignore")
            return getattr(importlib.import_module(module), name)

    base = class_fields(load(BASE))
    classes: dict[str, dict] = {BASE: {"fields": base}}
    for path in class_paths():
        fields = class_fields(load(path))
        if path == LORA:
            classes[path] = {"fields": fields}
            continue
        classes[path] = {"base": BASE, "fields": {k: v for k, v in fields.items() if base.get(k) != v}}
        if set(base) - set(fields):
            classes[path]["without"] = sorted(set(base) - set(fields))
    return {"versions": {lib: version(lib) for lib in LIBRARIES}, "classes": classes}


def dump(data: Any, depth: int = 0) -> str:
    """JSON with one line per field, so a diff after an upgrade reads field by field."""
    if not isinstance(data, dict) or depth == 4 or not data:
        return json.dumps(data, sort_keys=True)
    pad = " " * (depth + 1)
    body = ",\n".join(f"{pad}{json.dumps(k)}: {dump(v, depth + 1)}" for k, v in sorted(data.items()))
    return "{\n" + body + "\n" + " " * depth + "}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m valuedrift.training.fields", description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help=f"regenerate {REGISTRY.name}")
    action.add_argument("--check", action="store_true", help=f"exit 1 when {REGISTRY.name} is out of date")
    args = parser.parse_args(argv)
    fresh = dump(build()) + "\n"
    if args.write:
        REGISTRY.write_text(fresh, encoding="utf-8")
        print(f"wrote {REGISTRY}")
    elif json.loads(fresh) != json.loads(REGISTRY.read_text(encoding="utf-8")):
        sys.exit(f"{REGISTRY} is out of date with the installed TRL/peft — run "
                 "python -m valuedrift.training.fields --write")


if __name__ == "__main__":
    main()
