"""The conda environments (`snakemake --sdm conda`) pin what pyproject.toml pins."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def requirement(spec: str) -> tuple[str, str]:
    name, constraint = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", spec.strip()).groups()
    return name.lower().replace("_", "-"), constraint.replace(" ", "")


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(requirement(spec) for spec in project["dependencies"])


@pytest.mark.parametrize("env", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_pins_match_pyproject(env):
    pins = pyproject_pins()
    spec = yaml.safe_load(env.read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-e ../" in pip, "the environment installs this package"
    for line in pip:
        if line.startswith("-e"):
            continue
        name, constraint = requirement(line)
        assert name in pins, f"{env.name}: {name} is not a dependency in pyproject.toml"
        assert constraint == pins[name], f"{env.name}: {name}{constraint} but pyproject.toml has {name}{pins[name]}"


def test_every_rule_names_an_environment_that_exists():
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            assert (smk.parent / env).resolve().is_file(), f"{smk.name}: {env}"
